"""The context experiment: how far back do RNN, LSTM and GRU language models look on real text?
(``python -m projects.context``; :mod:`projects.context.experiment` describes it.)"""

from projects.context.experiment import ContextConfig, ContextResults, run_context

__all__ = ["ContextConfig", "ContextResults", "run_context"]
