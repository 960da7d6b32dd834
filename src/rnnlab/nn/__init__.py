"""The recurrent network library: cells, layers, blocks, summary, interop, input validation.

:mod:`rnnlab.nn.backends` decides what runs a layer (reference loop, pure-torch fused path,
compiled C++ kernels). Nothing here knows about datasets, training, runs or the command line.
Importing :mod:`rnnlab.nn.interop` attaches the conversion methods (``LSTM.from_torch``,
``.to_torch()``, ``LSTM.from_keras``, ``.to_keras()``) to the layers.
"""

from rnnlab.nn import interop  # noqa: F401  (attaches the conversion methods to the layers)
from rnnlab.nn.blocks import Recurrent, final_hidden
from rnnlab.nn.cells import Cell, GRUCell, LSTMCell, LSTMState, RNNCell
from rnnlab.nn.layers import GRU, LSTM, RNN, RecurrentLayer
from rnnlab.nn.layers_2024 import MLSTM, SLSTM, MinGRU, MinLSTM
from rnnlab.nn.mincells import MinGRUCell, MinLSTMCell
from rnnlab.nn.summary import ModelSummary, SummaryRow, print_summary, summary
from rnnlab.nn.variant_gru import VariantGRUCell
from rnnlab.nn.variants import CellNoise, VariantLSTMCell
from rnnlab.nn.xlstm import MLSTMCell, MLSTMState, SLSTMCell, SLSTMState

__all__ = [
    "Cell",
    "RecurrentLayer",
    "RNNCell",
    "LSTMCell",
    "GRUCell",
    "LSTMState",
    "VariantLSTMCell",
    "VariantGRUCell",
    "CellNoise",
    "RNN",
    "LSTM",
    "GRU",
    "MinGRUCell",
    "MinLSTMCell",
    "MinGRU",
    "MinLSTM",
    "SLSTMCell",
    "SLSTMState",
    "SLSTM",
    "MLSTMCell",
    "MLSTMState",
    "MLSTM",
    "Recurrent",
    "final_hidden",
    "summary",
    "print_summary",
    "ModelSummary",
    "SummaryRow",
]
