"""The one place where ``rnnlab serve`` loads models: :func:`load_served_run` asks the run's task
(:mod:`rnnlab.tasks`) for its kind's :class:`ServedRun` subclass (``task.floors.serve``) and
builds it. This module and :mod:`rnnlab.serve.app` never name a kind: each kind's class, in its
own module (:mod:`rnnlab.serve.classifier`, :mod:`rnnlab.serve.lm`), says which ``analyses`` it
answers, which ``page`` shows it, and mounts its own API routes (:meth:`ServedRun.add_routes`).
The web layer only sees plain dicts and lists.

Nothing of a run is shared mutably between requests, so no lock guards the model: it is in
eval mode and read-only while serving, gates are recorded per call through the dispatcher's
``return_gates`` argument (never by switching a layer's attributes), a generation carries its
own state, and the compiled kernels keep no state between calls. Requests on one run therefore
never queue behind another's gate recording; torch's intra-op thread pool, the one thing they do
share, schedules their matrix products.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from rnnlab.runs import load_run
from rnnlab.tasks import TASKS, Task, get_task, load_attribute

__all__ = [
    "InputError",
    "Lookup",
    "ServedRun",
    "UnsupportedError",
    "check_analysis",
    "load_served_run",
    "rounded",
    "served_classes",
]

PathLike = str | os.PathLike[str]
Lookup = Callable[..., "ServedRun"]  # (run key[, analysis]) -> the run, or a 404/400 error


class InputError(ValueError):
    """An input the model cannot read; ``field`` names the request field at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class UnsupportedError(ValueError):
    """An analysis the run's kind of model does not offer (e.g. generate on a classifier)."""


def rounded(values: np.ndarray, digits: int = 4) -> list:
    """numpy -> nested lists of floats, NaN as None (JSON has no NaN)."""
    out = np.round(values.astype(np.float64), digits)
    return np.where(np.isnan(out), None, out).tolist()


@dataclass
class ServedRun:
    """A run loaded once for serving: its task (which encodes inputs), the task's artifacts
    (e.g. a vocabulary) and the model in eval mode. Subclasses, one per kind, set:

    * ``title`` -- what the kind is called in messages ("text classifier");
    * ``page`` -- the page (``/<page>``, ``static/<page>.html``) that shows such runs;
    * ``analyses`` -- the API analyses it answers, each a method of the same name;
    * :meth:`add_routes` -- mounts those analyses' routes (once per class family);
    * :meth:`details` -- what its page needs beyond :meth:`describe`'s common fields;
    * :meth:`warm_up` -- one call through every path, so the first request is not slow.
    """

    title: ClassVar[str] = "run"
    page: ClassVar[str] = ""
    analyses: ClassVar[tuple[str, ...]] = ()

    name: str
    run_dir: Path
    config: Any
    model: torch.nn.Module
    meta: dict[str, Any]
    task: Task
    artifacts: dict[str, Any]

    @property
    def kind(self) -> str:
        return self.task.kind

    def describe(self) -> dict[str, Any]:
        """What a page needs to draw controls: name, kind, page, analyses, cell, layers,
        directions, hidden sizes, the checkpoint served, and the kind's :meth:`details`."""
        m = self.config.model
        return {
            "name": self.name,
            "kind": self.kind,
            "title": self.title,
            "page": self.page,
            "analyses": list(self.analyses),
            "cell": m.cell,
            "layers": len(m.hidden_sizes),
            "directions": 2 if m.bidirectional else 1,
            "hidden_sizes": list(m.hidden_sizes),
            "checkpoint": self.meta["tag"],
            "step": self.meta["state"]["step"],
            **self.details(),
        }

    def details(self) -> dict[str, Any]:
        """Kind-specific description fields (classes, image shape, vocabulary...)."""
        return {}

    def check_loadable(self) -> None:  # noqa: B027 (optional hook)
        """Raise before serving when this run cannot answer its analyses."""

    def warm_up(self) -> None:  # noqa: B027 (optional hook)
        """Run one input through every path the analyses use."""

    @classmethod
    def add_routes(cls, app: Any, lookup: Lookup, work: Callable[..., Any]) -> None:
        """Mount this kind's API routes on the FastAPI ``app``: ``lookup(run)`` returns the
        served run or answers 404, :func:`check_analysis` answers 400 for a run of another
        kind, ``work(fn, *args)`` runs model work in a worker thread under the time limit."""


def served_classes() -> list[type[ServedRun]]:
    """Every kind's :class:`ServedRun` subclass, in :data:`rnnlab.tasks.TASKS` order."""
    classes = []
    for task in TASKS.values():
        if task.floors.serve:
            cls = load_attribute(task.floors.serve)
            if cls not in classes:
                classes.append(cls)
    return classes


def offered_by(analysis: str) -> str:
    """``"a language model"`` / ``"an image classifier or text classifier"``: the kinds that
    answer ``analysis``, for messages."""
    titles = [cls.title for cls in served_classes() if analysis in cls.analyses]
    text = " or ".join(dict.fromkeys(titles)) or "no served kind"
    return ("an " if text[0] in "aeiou" else "a ") + text


def check_analysis(served: ServedRun, analysis: str) -> None:
    """Raise :class:`UnsupportedError` unless ``served`` answers ``analysis``."""
    if analysis not in served.analyses:
        raise UnsupportedError(
            f"run {served.name!r} is a {served.title}: {analysis} expects "
            f"{offered_by(analysis)} run (this one offers {', '.join(served.analyses)})"
        )


def load_served_run(run_dir: PathLike, name: str, checkpoint: str = "best") -> ServedRun:
    """Load ``run_dir``'s ``checkpoint`` once (see :func:`rnnlab.runs.load_run`) as its kind's
    :class:`ServedRun`, check it can answer (:meth:`ServedRun.check_loadable`) and warm it
    up (:meth:`ServedRun.warm_up`)."""
    run_dir = Path(run_dir)
    config, model, meta = load_run(run_dir, checkpoint)
    task = get_task(config)
    cls = task.floor("serve")
    served = cls(name, run_dir, config, model, meta, task, task.read_artifacts(run_dir))
    served.check_loadable()
    served.warm_up()
    return served
