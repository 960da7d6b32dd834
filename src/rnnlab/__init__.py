"""rnnlab: recurrent neural networks (RNN, LSTM, GRU) written from their equations, on PyTorch."""

__version__ = "0.1.0"
