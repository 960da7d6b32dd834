"""Tasks: what a kind of problem brings to training, runs, ``predict`` and ``inspect`` (the
protocol is :class:`Task`, in :mod:`rnnlab.tasks.base`).

:data:`TASKS` maps a configuration's ``model.kind`` to its task class. Adding a task is a new
module with a :class:`Task` subclass and one line here (plus its ``model.kind`` value in
:class:`rnnlab.config.ModelConfig`).
"""

from __future__ import annotations

from torch import nn

from rnnlab.config import Config, ConfigError
from rnnlab.tasks.base import Example, MetricSpec, PredictError, Prepared, Task, TaskData
from rnnlab.tasks.image import ImageClassification
from rnnlab.tasks.language_model import LanguageModelTask
from rnnlab.tasks.text import TextClassification

__all__ = [
    "TASKS",
    "Example",
    "ImageClassification",
    "LanguageModelTask",
    "MetricSpec",
    "Prepared",
    "PredictError",
    "Task",
    "TaskData",
    "TextClassification",
    "build_model",
    "get_task",
]

TASKS: dict[str, type[Task]] = {
    "sequence": ImageClassification,
    "text": TextClassification,
    "lm": LanguageModelTask,
}


def get_task(config: Config) -> Task:
    """The task of ``config`` (chosen by ``model.kind``), checked against its settings."""
    kind = config.model.kind
    if kind not in TASKS:
        raise ConfigError(f"model.kind: expected one of {sorted(TASKS)}, got {kind!r}")
    return TASKS[kind](config)


def build_model(config: Config) -> nn.Module:
    """The model of ``config``'s task, freshly initialised from the current torch RNG."""
    return get_task(config).build_model()
