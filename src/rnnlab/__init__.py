"""rnnlab: recurrent neural networks (RNN, LSTM, GRU) written from their equations, on PyTorch.

The cells (:mod:`rnnlab.nn.cells`) are the readable reference; the layers
(:mod:`rnnlab.nn.layers`) stack them over time, batch first, and pick a backend
(:mod:`rnnlab.nn.backends`), which shares the same parameters. :mod:`rnnlab.nn.interop` converts
layers from and to torch.nn and Keras (``LSTM.from_torch``, ``.to_torch()``,
``LSTM.from_keras``); :class:`LanguageModel` is a next-token model over them with its own
``generate`` and ``score``; :func:`summary` tabulates a model as Keras's ``model.summary()`` does.
Above the network library: models (:mod:`rnnlab.models`), tasks (:mod:`rnnlab.tasks`), the
task-agnostic trainer (:mod:`rnnlab.train`), run directories (:mod:`rnnlab.runs`), the CLI.

"The tutorial", wherever rnnlab's docstrings say it, is the RNN/LSTM tutorial this project
implements: the gate equations over the concatenation [h_{t-1}, x_t] (in the notation of Olah's
"Understanding LSTM Networks", 2015) and its two experiments, MNIST read row by row by an LSTM
of 128 units and a Keras IMDB model of two stacked LSTMs of 256 units, which the ``mnist-seed``
and ``imdb-seed`` presets reproduce.
"""

from rnnlab.nn.blocks import Recurrent, final_hidden
from rnnlab.nn.cells import GRUCell, LSTMCell, LSTMState, RNNCell
from rnnlab.nn.language_model import LanguageModel
from rnnlab.nn.layers import GRU, LSTM, RNN
from rnnlab.nn.layers_2024 import MLSTM, SLSTM, MinGRU, MinLSTM
from rnnlab.nn.mincells import MinGRUCell, MinLSTMCell

# Binds the name rnnlab.nn.summary to the function; the module stays importable by its full path
# (``from rnnlab.nn.summary import ModelSummary``).
from rnnlab.nn.summary import ModelSummary, SummaryRow, print_summary, summary
from rnnlab.nn.xlstm import MLSTMCell, MLSTMState, SLSTMCell, SLSTMState

__version__ = "0.1.0"

__all__ = [
    "RNNCell",
    "LSTMCell",
    "GRUCell",
    "LSTMState",
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
    "LanguageModel",
    "final_hidden",
    "summary",
    "print_summary",
    "ModelSummary",
    "SummaryRow",
    "__version__",
]
