"""Experiments that make the tutorial's arguments measurable.

:mod:`rnnlab.experiments.long_range`: can a vanilla RNN, an LSTM and a GRU recall a symbol seen
``gap`` steps ago? (``rnnlab experiment long-range``). :func:`main` is the ``experiment`` verb.
"""

from rnnlab.experiments.cli import main
from rnnlab.experiments.long_range import LongRangeConfig, LongRangeResults, run_long_range

__all__ = ["LongRangeConfig", "LongRangeResults", "main", "run_long_range"]
