"""The one registry of recurrent layers by cell name: ``"rnn"``, ``"lstm"``, ``"gru"``,
``"mingru"``, ``"minlstm"``, ``"slstm"``, ``"mlstm"``.

Models (:mod:`rnnlab.models`), the language model (:class:`rnnlab.nn.LanguageModel`) and the
configuration (:class:`rnnlab.config.ModelConfig`'s ``cell``) all look a cell name up here, so a
new cell plugs in by adding one row to :data:`LAYERS`: a layer
class that takes ``(input_size, hidden_size, num_layers=..., bidirectional=..., dropout=...,
backend=...)`` as :class:`rnnlab.nn.LSTM` does.
"""

from __future__ import annotations

from rnnlab.nn.layers import GRU, LSTM, RNN, RecurrentLayer
from rnnlab.nn.layers_2024 import MLSTM, SLSTM, MinGRU, MinLSTM

__all__ = ["LAYERS", "CELL_NAMES", "layer_class"]

LAYERS: dict[str, type[RecurrentLayer]] = {
    "rnn": RNN,
    "lstm": LSTM,
    "gru": GRU,
    "mingru": MinGRU,
    "minlstm": MinLSTM,
    "slstm": SLSTM,
    "mlstm": MLSTM,
}
CELL_NAMES: tuple[str, ...] = tuple(LAYERS)


def layer_class(name: str) -> type[RecurrentLayer]:
    """The layer class of cell ``name``; ValueError naming the known cells otherwise."""
    if name not in LAYERS:
        raise ValueError(f"unknown recurrent cell: expected one of {CELL_NAMES}, got {name!r}")
    return LAYERS[name]
