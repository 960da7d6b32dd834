"""The long-range experiment: can a vanilla RNN, an LSTM and a GRU recall a symbol seen ``gap``
steps ago? (``python -m projects.long_range``; :mod:`projects.long_range.experiment` describes
the task and the choices behind it.)"""

from projects.long_range.experiment import LongRangeConfig, LongRangeResults, run_long_range

__all__ = ["LongRangeConfig", "LongRangeResults", "run_long_range"]
