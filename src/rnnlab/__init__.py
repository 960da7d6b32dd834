"""rnnlab: recurrent neural networks (RNN, LSTM, GRU) written from their equations, on PyTorch.

The cells (:mod:`rnnlab.cells`) are the readable reference; the layers (:mod:`rnnlab.layers`)
stack them over time, batch first, and pick a backend: the reference loop or the fused fast path
(:mod:`rnnlab.fused`), which share the same parameters.
"""

from rnnlab.blocks import Recurrent, final_hidden
from rnnlab.cells import GRUCell, LSTMCell, LSTMState, RNNCell
from rnnlab.layers import GRU, LSTM, RNN

__version__ = "0.1.0"

__all__ = [
    "RNNCell",
    "LSTMCell",
    "GRUCell",
    "LSTMState",
    "RNN",
    "LSTM",
    "GRU",
    "Recurrent",
    "final_hidden",
    "__version__",
]
