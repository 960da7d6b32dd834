"""report.json, typed: what a finished run measured (:class:`Report`).

A run writes it last, so its presence means "finished". On disk it is one flat JSON object;
the keys that carry a metric's name are spelled from the run's selection metric ``m``
("accuracy" for the classifiers, "loss" for the language model) and its test metrics::

    preset, run_dir
    test_<name> ...          one per test metric (test_accuracy, test_loss; test_bpc ...)
    test_checkpoint          "best" or "last" (absent, like the test_ keys, without a test)
    val_<m>, best_val_<m>, best_epoch, final_train_<m>
    selection                "val_<m> (<max|min>)"
    validation, holdout_seed, epochs, stopped, steps, samples, train_examples, parameters,
    processes, train_seconds, wall_seconds, samples_per_second,
    throughput_unit          what one of ``samples`` is: "samples" (examples) or "tokens"
    machine, versions

:meth:`Report.from_json` is the one place that takes those keys apart; readers use the
fields. Reports written before a key existed still read: ``selection`` defaults to
"val_accuracy (max)" (every run then was a classifier), ``processes`` to 1,
``throughput_unit`` to "samples", ``validation``, ``holdout_seed`` and ``stopped`` to None.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rnnlab.runs.layout import PathLike, RunError, json_bytes, read_json
from rnnlab.train import Selection

__all__ = ["Report"]

# present in every report.json rnnlab ever wrote
_REQUIRED = (
    "preset",
    "run_dir",
    "epochs",
    "steps",
    "samples",
    "train_examples",
    "parameters",
    "train_seconds",
    "wall_seconds",
    "samples_per_second",
)
_OLD_SELECTION = "val_accuracy (max)"  # before reports said, only classifiers existed


@dataclass(frozen=True)
class Report:
    """A finished run's numbers; ``to_json()`` is report.json's object, key for key.

    ``selection`` is the validation metric that picked the best epoch and its direction;
    ``val``, ``best`` and ``final_train`` are that metric's last validation value, best
    validation value and last training value (None where there was none). ``test`` maps
    a test metric's name ("accuracy", "loss", "bpc") to its value; it is empty, and
    ``test_checkpoint`` None, when ``run.evaluate_test`` was off. ``samples_per_second`` counts
    ``throughput_unit`` ("samples" for the classifiers, "tokens" for the language model) per
    second of training.
    """

    preset: str
    run_dir: str
    selection: Selection
    val: float | None
    best: float | None
    best_epoch: int | None
    final_train: float | None
    epochs: int
    steps: int
    samples: int
    train_examples: int
    parameters: int
    train_seconds: float
    wall_seconds: float
    samples_per_second: float
    test: Mapping[str, float] = field(default_factory=dict)
    test_checkpoint: str | None = None
    validation: str | None = None
    holdout_seed: int | None = None
    stopped: str | None = None  # "time_limit" when train.time_limit ended the run
    processes: int = 1
    throughput_unit: str = "samples"
    machine: Mapping[str, Any] = field(default_factory=dict)
    versions: Mapping[str, Any] = field(default_factory=dict)

    @property
    def selection_key(self) -> str:
        """The selection metric as metrics.jsonl names it: ``val_<metric>``."""
        return f"val_{self.selection.metric}"

    def to_json(self) -> dict[str, Any]:
        """report.json's object, its keys in the order runs have always written them."""
        metric = self.selection.metric
        values: dict[str, Any] = {"preset": self.preset, "run_dir": self.run_dir}
        if self.test_checkpoint is not None or self.test:
            values.update({f"test_{name}": v for name, v in self.test.items()})
            values["test_checkpoint"] = self.test_checkpoint
        values.update(
            {
                f"val_{metric}": self.val,
                f"best_val_{metric}": self.best,
                "best_epoch": self.best_epoch,
                f"final_train_{metric}": self.final_train,
                "selection": f"val_{metric} ({self.selection.mode})",
                "validation": self.validation,
                "holdout_seed": self.holdout_seed,
                "epochs": self.epochs,
                "stopped": self.stopped,
                "steps": self.steps,
                "samples": self.samples,
                "train_examples": self.train_examples,
                "parameters": self.parameters,
                "processes": self.processes,
                "train_seconds": self.train_seconds,
                "wall_seconds": self.wall_seconds,
                "samples_per_second": self.samples_per_second,
                "throughput_unit": self.throughput_unit,
                "machine": dict(self.machine),
                "versions": dict(self.versions),
            }
        )
        return values

    @classmethod
    def from_json(cls, values: Mapping[str, Any], where: str = "report.json") -> Report:
        """The report of report.json's object ``values`` (of any rnnlab version; keys it
        does not know are ignored). ``where`` names the file in errors."""
        if not isinstance(values, Mapping):
            raise RunError(f"{where}: expected a JSON object, got {type(values).__name__}")
        missing = [k for k in _REQUIRED if k not in values]
        if missing:
            raise RunError(
                f"{where}: expected the keys {missing} of a report, got {sorted(values)}"
            )
        selection = _selection(values.get("selection", _OLD_SELECTION), where)
        metric = selection.metric
        test = {
            k[len("test_") :]: v
            for k, v in values.items()
            if k.startswith("test_") and k != "test_checkpoint"
        }
        return cls(
            preset=values["preset"],
            run_dir=values["run_dir"],
            selection=selection,
            val=values.get(f"val_{metric}"),
            best=values.get(f"best_val_{metric}"),
            best_epoch=values.get("best_epoch"),
            final_train=values.get(f"final_train_{metric}"),
            epochs=values["epochs"],
            steps=values["steps"],
            samples=values["samples"],
            train_examples=values["train_examples"],
            parameters=values["parameters"],
            train_seconds=values["train_seconds"],
            wall_seconds=values["wall_seconds"],
            samples_per_second=values["samples_per_second"],
            test=test,
            test_checkpoint=values.get("test_checkpoint"),
            validation=values.get("validation"),
            holdout_seed=values.get("holdout_seed"),
            stopped=values.get("stopped"),
            processes=values.get("processes", 1),
            throughput_unit=values.get("throughput_unit", "samples"),
            machine=values.get("machine", {}),
            versions=values.get("versions", {}),
        )

    @classmethod
    def read(cls, run_dir: PathLike) -> Report:
        """The report of a finished run directory (a RunError for an unfinished one)."""
        path = Path(run_dir) / "report.json"
        return cls.from_json(read_json(path, "a finished run's report.json"), str(path))

    def to_bytes(self) -> bytes:
        """report.json's content."""
        return json_bytes(self.to_json())


def _selection(text: Any, where: str) -> Selection:
    """``"val_accuracy (max)"`` -> ``Selection("accuracy", "max")``."""
    parts = text.split() if isinstance(text, str) else []
    mode = parts[1].strip("()") if len(parts) == 2 else None
    if mode not in ("max", "min") or not parts[0].startswith("val_"):
        raise RunError(f'{where}: expected a selection like "val_accuracy (max)", got {text!r}')
    return Selection(parts[0][len("val_") :], "max" if mode == "max" else "min")
