"""Tasks: what a kind of problem brings to training, runs, ``predict`` and ``inspect`` (the
protocol is :class:`Task`, in :mod:`rnnlab.tasks.base`).

:data:`TASKS` maps a configuration's ``model.kind`` to its task class. Adding a task is a new
module with a :class:`Task` subclass (its ``kind`` and :class:`Floors`) and its name in the
tuple below; docs/architecture.md lists the steps.
"""

from __future__ import annotations

from torch import nn

from rnnlab.config import Config, ConfigError
from rnnlab.tasks.base import (
    Example,
    Floors,
    MetricSpec,
    PredictError,
    Prepared,
    PretrainedRun,
    Task,
    TaskData,
    load_attribute,
)
from rnnlab.tasks.ctc import CTCTranscription
from rnnlab.tasks.image import ImageClassification
from rnnlab.tasks.language_model import LanguageModelTask
from rnnlab.tasks.seq2seq import Seq2SeqTask
from rnnlab.tasks.speech import SpeechClassification
from rnnlab.tasks.text import TextClassification

__all__ = [
    "TASKS",
    "Example",
    "Floors",
    "CTCTranscription",
    "ImageClassification",
    "LanguageModelTask",
    "MetricSpec",
    "Prepared",
    "PredictError",
    "PretrainedRun",
    "Seq2SeqTask",
    "SpeechClassification",
    "Task",
    "TaskData",
    "TextClassification",
    "build_model",
    "get_task",
    "load_attribute",
    "task_class",
]

TASKS: dict[str, type[Task]] = {
    task.kind: task
    for task in (
        ImageClassification,
        TextClassification,
        LanguageModelTask,
        SpeechClassification,
        CTCTranscription,
        Seq2SeqTask,
    )
}


def task_class(kind: str) -> type[Task]:
    """The task class serving ``model.kind = kind``."""
    if kind not in TASKS:
        raise ConfigError(f"model.kind: expected one of {sorted(TASKS)}, got {kind!r}")
    return TASKS[kind]


def get_task(config: Config) -> Task:
    """The task of ``config`` (chosen by ``model.kind``), checked against its settings."""
    return task_class(config.model.kind)(config)


def build_model(config: Config) -> nn.Module:
    """The model of ``config``'s task, freshly initialised from the current torch RNG."""
    return get_task(config).build_model()
