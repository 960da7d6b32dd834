"""Task-agnostic training: :func:`fit` / :class:`Trainer`, :func:`evaluate`, batches and
callbacks. The task comes in as an :class:`Objective` (its loss, metrics and selection); see
:mod:`rnnlab.runs` for runs on disk (checkpoints, reports, resume)."""

from rnnlab.train.callbacks import (
    Checkpointer,
    ConsoleLogger,
    MetricsWriter,
    ProgressBar,
    RankDropoutSeed,
)
from rnnlab.train.loader import Batches, Split
from rnnlab.train.loop import DivergenceError, Trainer, TrainState, evaluate, fit
from rnnlab.train.objective import Batch, BatchLoss, BatchSource, Carry, Objective, Selection
from rnnlab.train.schedule import learning_rate, make_optimizer

__all__ = [
    "Batch",
    "BatchLoss",
    "BatchSource",
    "Carry",
    "Objective",
    "Selection",
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
