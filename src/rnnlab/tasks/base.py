"""The Task protocol: everything the trainer, the run directory, ``evaluate``, ``predict`` and
``inspect`` need to know about one kind of problem.

A task is built from a configuration (``Task(config)``) and provides:

* its data: :meth:`Task.load` -> :class:`TaskData` (train, validation, test, and the
  artifacts a run directory keeps, e.g. a text task's ``vocab.json``); a validation split
  carved from training data uses ``data.holdout_seed`` (:func:`carve_holdout`);
* its model: :meth:`Task.build_model` (after :meth:`Task.bind_run` for a run on disk);
* its batches: :meth:`Task.batches` (shuffled examples, or contiguous streams for a stateful
  task; sharded per rank for data parallelism);
* its loss and metric sums per batch, and what "best" means: :meth:`Task.batch_loss`,
  :meth:`Task.metrics`, :attr:`Task.selection` (the :class:`rnnlab.train.Objective` protocol);
* its predict and inspect hooks: :meth:`Task.prepare` (raw inputs -> model inputs, with notes
  such as truncation), :meth:`Task.predict`, :meth:`Task.example` and :meth:`Task.real_steps`;
* what it offers the upper floors (:class:`Floors`): the command-line ``verbs`` its runs answer,
  what a user's input is (``reads``), and where its serve page, its ``inspect`` drawing and its
  ONNX graph live. cli, serve, inspect and export ask the task (:meth:`Task.floor`); none of
  them names a kind or a kind's classes (docs/architecture.md).

:mod:`rnnlab.tasks` maps ``model.kind`` to a task class; adding a task is a new file and one
line there.
"""

from __future__ import annotations

import importlib
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from rnnlab.config import Config, ConfigError
from rnnlab.train import Batches, BatchLoss, BatchSource, Carry, Selection, Split

__all__ = [
    "Example",
    "Floors",
    "MetricSpec",
    "Prepared",
    "PredictError",
    "PretrainedRun",
    "Task",
    "TaskData",
    "carve_holdout",
]

PathLike = str | os.PathLike[str]


class PredictError(ValueError):
    """Input that a model cannot take: empty, not text, unknown words only, wrong size."""


@dataclass(frozen=True)
class MetricSpec:
    """A metric a task reports (besides the loss), and which way is better."""

    name: str
    higher_is_better: bool


@dataclass(frozen=True)
class TaskData:
    """A task's splits (``val`` None when validation is off) and the ``artifacts`` a run
    directory keeps beside them (file name -> JSON-ready value, e.g. ``vocab.json``)."""

    train: Split
    val: Split | None
    test: Split
    artifacts: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Prepared:
    """Raw inputs made into what the model reads: ``inputs`` (its positional arguments, N rows)
    and one ``notes`` dict per input (e.g. ``{"truncated": True}``), merged into its result."""

    inputs: tuple[Tensor, ...]
    notes: list[dict[str, Any]]


@dataclass(frozen=True)
class Example:
    """One input as the model reads it, for inspection: ``inputs`` (batch of 1), ``real`` (T,)
    bool, ``labels`` one per step, ``ids`` the real steps' word ids (text) or ``image`` (T, I)
    (images), the true ``target`` when known, ``oov`` per step (text)."""

    inputs: tuple[Tensor, ...]
    real: np.ndarray
    labels: list[str]
    ids: list[int] | None = None
    image: np.ndarray | None = None
    target: int | None = None
    oov: list[bool] | None = None


@dataclass(frozen=True)
class Floors:
    """What a kind offers the upper floors, each a ``"module:attribute"`` imported only when
    that floor asks (:meth:`Task.floor`), so the floors never import a kind's classes:

    * ``serve``: a :class:`rnnlab.serve.models.ServedRun` subclass (its analyses, routes and
      page);
    * ``inspect``: ``command(args) -> int``, what ``rnnlab inspect`` runs for this kind;
    * ``export``: ``graph(model, opset) -> onnx.ModelProto``, the ONNX graph ``rnnlab export``
      writes.

    ``verbs`` are the run commands this kind answers beyond train/evaluate/inspect/export/serve
    (``predict``; ``generate``, ``score``); ``reads`` is what a user gives it (``"text"``,
    ``"image"``). Empty strings mean "not offered"."""

    verbs: tuple[str, ...]
    reads: str
    serve: str = ""
    inspect: str = ""
    export: str = ""


def load_attribute(spec: str) -> Any:
    """The object named by ``"package.module:attribute"``."""
    module, _, attribute = spec.partition(":")
    return getattr(importlib.import_module(module), attribute)


def carve_holdout(train: Split, config: Config) -> tuple[Split, Split]:
    """``(train, val)``: ``data.holdout`` training examples drawn with ``data.holdout_seed``
    become the validation split (the same ones in every run with that seed)."""
    d = config.data
    if d.holdout >= len(train):
        raise ConfigError(
            f"data.holdout: expected fewer than the {len(train)} training examples, got {d.holdout}"
        )
    g = torch.Generator().manual_seed(d.holdout_seed)
    perm = torch.randperm(len(train), generator=g)
    return train.subset(perm[d.holdout :]), train.subset(perm[: d.holdout])


@dataclass(frozen=True)
class PretrainedRun:
    """A trained run whose weights start a new run's model (``model.init_from``), loaded by the
    runs floor and handed to :meth:`Task.bind_pretrained` before the data is read.

    ``model`` is the run's model in eval mode, from its ``checkpoint`` (``"best"``, or
    ``"last"`` for a run without validation) saved at ``step``; ``sha256`` is that
    checkpoint's tensors file, so a run started from it can say exactly which weights it took.
    """

    run_dir: Path
    config: Config
    model: nn.Module
    checkpoint: str
    step: int
    sha256: str

    def record(self) -> dict[str, Any]:
        """What the new run keeps of where its weights came from (``pretrained.json``)."""
        return {
            "run": str(self.run_dir.absolute()),
            "preset": self.config.name,
            "kind": self.config.model.kind,
            "checkpoint": self.checkpoint,
            "step": self.step,
            "tensors_sha256": self.sha256,
        }


class Task(ABC):
    """One kind of problem, configured by ``config``; see the module docstring."""

    kind: ClassVar[str]  # the model.kind it serves: the one name of this kind everywhere
    input_kind: ClassVar[str]  # how its splits arrive: "image", "text" or "stream"
    floors: ClassVar[Floors]  # what it offers cli, serve, inspect and export
    metric_specs: ClassVar[tuple[MetricSpec, ...]]
    selection: ClassVar[Selection]
    artifact_names: ClassVar[tuple[str, ...]] = ()  # files of the run directory it needs
    # what BatchLoss.count counts, hence the report's samples_per_second: "samples" (examples)
    throughput_unit: ClassVar[str] = "samples"

    def __init__(self, config: Config) -> None:
        self.config = config
        self.check_config()

    @property
    def reads(self) -> str:
        """What a user gives this run (``floors.reads``; a kind reading several says which)."""
        return self.floors.reads

    def floor(self, name: str) -> Any:
        """The object this kind gives the upper floor ``name`` ("serve", "inspect" or
        "export"; see :class:`Floors`); a floor it does not offer is a clear error."""
        spec = getattr(self.floors, name)
        if not spec:
            raise PredictError(
                f"{name}: expected a run whose kind offers it, got a {self.kind!r} run "
                f"(it offers {', '.join(self.offers()) or 'nothing more'})"
            )
        return load_attribute(spec)

    def offers(self) -> tuple[str, ...]:
        """The commands a run of this kind answers beyond train and evaluate."""
        f = self.floors
        upper = tuple(n for n in ("inspect", "export", "serve") if getattr(f, n))
        return (*f.verbs, *upper)

    def check_verb(self, verb: str, where: str) -> None:
        """Raise :class:`PredictError` when ``verb`` is not one of this kind's
        ``floors.verbs``, naming what the run offers instead."""
        if verb not in self.floors.verbs:
            raise PredictError(
                f"{where}: {verb} expected a run whose kind offers it, got a {self.kind!r} run "
                f"(use {' or '.join(f'`rnnlab {v}`' for v in self.floors.verbs or ('evaluate',))})"
            )

    def check_config(self) -> None:  # noqa: B027 (optional hook)
        """Raise ConfigError for settings this task cannot run with."""

    # data and model
    @abstractmethod
    def load(self, data_dir: PathLike | None = None) -> TaskData:
        """The splits (``data_dir`` as in :func:`rnnlab.data.load_mnist`)."""

    def settle(self, data: TaskData) -> Config | None:
        """Once the data is loaded and before the model is built: a configuration to train with
        instead of this task's own (e.g. a width fitted to the corpus), or None to keep it. A
        task that returns one has put what it decided into ``data.artifacts``."""
        return None

    @abstractmethod
    def build_model(self) -> nn.Module:
        """The model, freshly initialised from the current torch RNG."""

    @abstractmethod
    def example_inputs(self, batch_size: int) -> tuple[Tensor, ...]:
        """Zeros of the model's input shape (for ``rnnlab summary``)."""

    def batches(
        self, split: Split, training: bool, rank: int = 0, world_size: int = 1
    ) -> BatchSource:
        """Training (shuffled with ``train.seed``) or evaluation batches of ``split``, this
        rank's shard of each global batch."""
        t, shard = self.config.train, {"rank": rank, "world_size": world_size}
        if training:
            return Batches(split, t.batch_size, shuffle=True, seed=t.seed, **shard)
        return Batches(split, self.eval_batch_size(world_size), **shard)

    def eval_batch_size(self, world_size: int) -> int:
        """``train.eval_batch_size`` rounded up to split evenly across ``world_size`` ranks
        (evaluation does not depend on batching)."""
        return -(-self.config.train.eval_batch_size // world_size) * world_size

    # loss and metrics (rnnlab.train.Objective)
    @abstractmethod
    def batch_loss(
        self,
        model: nn.Module,
        inputs: tuple[Tensor, ...],
        targets: Tensor,
        carry: Carry | None,
        training: bool,
    ) -> BatchLoss: ...

    @abstractmethod
    def metrics(self, sums: dict[str, float]) -> dict[str, float]: ...

    def test_report(self, metrics: dict[str, float]) -> dict[str, float]:
        """report.json's test fields: ``test_<name>`` for the loss and every metric."""
        return {f"test_{k}": v for k, v in metrics.items()}

    # run-directory artifacts
    def export_fields(self) -> dict[str, Any]:
        """What an exported file's sidecar says of the model's outputs, as JSON values (a
        classifier: ``num_classes``; a language model overrides it)."""
        return {"num_classes": self.config.model.num_classes}

    def bind_run(self, run_dir: PathLike) -> None:  # noqa: B027 (optional hook)
        """Take from a run directory what building its model needs beyond the configuration
        (a language model: its vocabulary, hence its size). Called before :meth:`build_model`
        when a run is loaded or resumed."""

    def bind_pretrained(self, source: PretrainedRun) -> None:
        """Start this run's model from ``source``'s weights (``model.init_from``); called before
        :meth:`load` (the source may bring the vocabulary). A kind that cannot start from
        another run refuses here, before anything is written."""
        raise ConfigError(
            f"model.init_from: expected a run of a kind that starts from another run's weights "
            f"(a text classifier from a language model), got model.kind={self.kind!r} "
            f"(init_from={self.config.model.init_from!r})"
        )

    def check_weights(self, tensors: dict[str, Tensor], where: str) -> None:  # noqa: B027
        """Raise a clear error when a checkpoint's tensors cannot be this run's model (before
        the generic shape check, which names only the first parameter that differs)."""

    def read_artifacts(self, run_dir: PathLike) -> dict[str, Any]:
        """The artifacts :meth:`load` produced, read back from a run directory."""
        values = {}
        for name in self.artifact_names:
            path = Path(run_dir) / name
            if not path.is_file():
                raise PredictError(f"{path}: expected this run's {name}, got no such file")
            values[name] = json.loads(path.read_text("utf-8"))
        return values

    # predict and inspect hooks
    @abstractmethod
    def prepare(self, raw: Sequence[Any], artifacts: dict[str, Any], **options: Any) -> Prepared:
        """Raw inputs (review strings, image paths, ...) -> what the model reads."""

    @abstractmethod
    def predict(self, model: nn.Module, prepared: Prepared) -> list[dict[str, Any]]:
        """One result dict per input."""

    @abstractmethod
    def example(self, raw: Any, artifacts: dict[str, Any]) -> Example:
        """One raw input as the model reads it, step by step (for ``inspect``)."""

    @abstractmethod
    def real_steps(self, inputs: tuple[Tensor, ...]) -> Tensor:
        """(N, T) bool: which steps of a batch of split inputs are real (not padding)."""
