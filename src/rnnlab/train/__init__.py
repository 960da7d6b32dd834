"""Model-agnostic training: :func:`fit` / :class:`Trainer`, :func:`evaluate`, batches and
callbacks. See :mod:`rnnlab.run` for runs on disk (checkpoints, reports, resume)."""

from rnnlab.train.callbacks import (
    Checkpointer,
    ConsoleLogger,
    MetricsWriter,
    ProgressBar,
    RankDropoutSeed,
)
from rnnlab.train.loader import Batches, Split
from rnnlab.train.loop import DivergenceError, Trainer, TrainState, evaluate, fit
from rnnlab.train.schedule import learning_rate, make_optimizer

__all__ = [
    "Batches",
    "Checkpointer",
    "ConsoleLogger",
    "MetricsWriter",
    "ProgressBar",
    "RankDropoutSeed",
    "Split",
    "TrainState",
    "Trainer",
    "DivergenceError",
    "evaluate",
    "fit",
    "learning_rate",
    "make_optimizer",
]
