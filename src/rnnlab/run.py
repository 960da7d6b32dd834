"""Runs on disk: train a configuration into a run directory, resume it, load it back.

A run directory holds::

    config.json          the resolved configuration
    run.json             preset, data directory, status ("running", "finished", "interrupted",
                         "diverged"), argv, versions
    vocab.json           text models: the word index new reviews are encoded with
    metrics.jsonl        one line per logged step and per epoch
    checkpoints/         last.json + last-<step>.safetensors, best.json + best-<step>...
    learning_curve.png   loss and accuracy against steps
    report.json          the final numbers (written last: its presence means "finished")

A new run refuses an existing non-empty directory. If it fails before its first checkpoint, the
directory is removed; after that it stays, resumable with :func:`resume`, which continues from
``checkpoints/last`` (also mid-epoch) and, on CPU, ends with the same metrics as an
uninterrupted run.

Under data parallelism (``context``, see :mod:`rnnlab.distributed`) every rank trains and
evaluates its shard and returns the same report; only rank 0 reads and writes the directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from rnnlab.checkpoint import (
    CheckpointError,
    atomic_write,
    load_checkpoint,
    load_model_weights,
    restore_optimizer,
    restore_rng,
    versions,
)
from rnnlab.config import Config, ConfigError, load_preset
from rnnlab.distributed import Context
from rnnlab.models import build_model
from rnnlab.plots import plot_learning_curve
from rnnlab.tasks import TaskData, load_task_data
from rnnlab.train import (
    Batches,
    Checkpointer,
    DivergenceError,
    MetricsWriter,
    RankDropoutSeed,
    Trainer,
    TrainState,
    evaluate,
)

__all__ = ["RunError", "default_run_dir", "load_run", "resume", "train"]
PathLike = str | os.PathLike[str]


class RunError(ValueError):
    """A run directory is missing, foreign, finished, not writable, or its run failed."""


def _json(values: Any) -> bytes:
    return (json.dumps(values, indent=2) + "\n").encode("utf-8")


def default_run_dir(name: str) -> Path:
    return Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text("utf-8"))
    except FileNotFoundError as exc:
        raise RunError(f"{path}: expected {what}, got no such file") from exc
    except (OSError, ValueError) as exc:
        raise RunError(f"{path}: expected {what}, got {type(exc).__name__}: {exc}") from exc


def read_config(run_dir: PathLike) -> Config:
    """The configuration of an existing run directory (a clear error for a foreign folder)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(
            f"{run_dir}: expected an rnnlab run directory, got "
            f"{'a file' if run_dir.exists() else 'nothing there'}"
        )
    values = read_json(run_dir / "config.json", "an rnnlab run's config.json")
    try:
        return Config.from_dict(values)
    except ConfigError as exc:
        raise RunError(
            f"{run_dir / 'config.json'}: expected an rnnlab configuration, got "
            f"an incompatible one ({exc})"
        ) from exc


def _loaders(
    config: Config, data: TaskData, context: Context
) -> tuple[Batches, Batches | None, Batches]:
    t, masked = config.train, config.model.kind == "text" and config.model.mask
    trim = config.data.padding if masked and t.bucket else None
    shard = {"rank": context.rank, "world_size": context.world_size}
    train = Batches(
        data.train,
        t.batch_size,
        shuffle=True,
        seed=t.seed,
        bucket=t.bucket and masked,
        trim=trim,
        **shard,
    )
    # evaluation does not depend on batching: round its batch up to split evenly
    eval_size = -(-t.eval_batch_size // context.world_size) * context.world_size

    def plain(split):  # evaluation; masked models: sorted by length, padding trimmed
        if masked:
            return Batches(split, eval_size, bucket=True, trim=config.data.padding, **shard)
        return Batches(split, eval_size, **shard)

    return train, (plain(data.val) if data.val is not None else None), plain(data.test)


def _machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }


class _Session:
    """One invocation of :func:`train` or :func:`resume` on a run directory."""

    def __init__(
        self,
        run_dir: Path,
        config: Config,
        data_dir: PathLike | None,
        callbacks: Sequence[Any],
        started: float,
        context: Context,
    ) -> None:
        self.run_dir, self.config, self.data_dir = run_dir, config, data_dir
        self.callbacks, self.started, self.context = list(callbacks), started, context
        self.ckpt_dir = run_dir / "checkpoints"

    def run_info(self, status: str, **extra: Any) -> None:
        info = {
            "preset": self.config.name,
            "status": status,
            "data_dir": None if self.data_dir is None else str(self.data_dir),
            "argv": sys.argv,
            "versions": versions(),
            **extra,
        }
        atomic_write(self.run_dir / "run.json", _json(info))

    def execute(self, trainer: Trainer, data: TaskData) -> dict[str, Any]:
        config = self.config
        train, val, test = _loaders(config, data, self.context)
        self.fit_base = trainer.state.wall_seconds
        trainer.callbacks = list(self.callbacks)
        if self.context.enabled:  # each rank its own dropout masks
            trainer.callbacks.append(RankDropoutSeed(config.train.seed, self.context.rank))
        if self.context.is_main:
            trainer.callbacks += [
                MetricsWriter(self.run_dir / "metrics.jsonl", config.run.log_every),
                Checkpointer(self.ckpt_dir, config.to_dict(), config.run.checkpoint_every),
            ]
        try:
            trainer.fit(train, val)
        except DivergenceError as exc:
            self._fail("diverged", exc)
            raise RunError(f"{exc}. {self._resume_hint()}") from exc
        except OSError as exc:
            self._fail("interrupted", exc)
            raise RunError(
                f"cannot write into {self.run_dir}: expected a writable directory "
                f"with free space, got {type(exc).__name__}: {exc}. "
                f"{self._resume_hint()}"
            ) from exc
        except BaseException as exc:
            self._fail("interrupted", exc)
            raise
        return self._finish(trainer, test, len(data.train))

    def _resume_hint(self) -> str:
        if (self.ckpt_dir / "last.json").is_file():
            return (
                f"The last good checkpoint is kept: continue with "
                f"`rnnlab train --resume {self.run_dir}`."
            )
        return "No checkpoint had been written; the run directory was removed."

    def _fail(self, status: str, exc: BaseException) -> None:
        if not self.context.is_main:
            return
        if not (self.ckpt_dir / "last.json").is_file():
            shutil.rmtree(self.run_dir, ignore_errors=True)  # nothing worth resuming
            return
        with contextlib.suppress(OSError):  # unwritable: the checkpoint itself is intact
            self.run_info(status, error=f"{type(exc).__name__}: {exc}")

    def _test_metrics(self, trainer: Trainer, test: Batches) -> dict[str, Any]:
        """Test loss and accuracy: of the best checkpoint when validation was a holdout (the
        epoch was picked without seeing test), otherwise of the final model."""
        config, history = self.config, trainer.state.history
        tag = "best" if config.data.validation == "holdout" else "last"
        if tag == "best" and self.context.on_main((self.ckpt_dir / "best.json").is_file):
            tensors, _ = self.context.on_main(lambda: load_checkpoint(self.ckpt_dir, "best"))
            load_model_weights(trainer.module, tensors, str(self.ckpt_dir / "best.json"))
        if config.data.validation == "test" and history and "val_accuracy" in history[-1]:
            # the last epoch's validation was this very model on this very split
            metrics = {"loss": history[-1]["val_loss"], "accuracy": history[-1]["val_accuracy"]}
        else:
            metrics = evaluate(trainer.module, test, self.context.reduce_hook)
        return {
            "test_accuracy": metrics["accuracy"],
            "test_loss": metrics["loss"],
            "test_checkpoint": tag,
        }

    def _finish(self, trainer: Trainer, test: Batches, n_train: int) -> dict[str, Any]:
        config, state = self.config, trainer.state
        report: dict[str, Any] = {"preset": config.name, "run_dir": str(self.run_dir)}
        if config.run.evaluate_test:
            report.update(self._test_metrics(trainer, test))
        last = state.history[-1] if state.history else {}
        report.update(
            val_accuracy=last.get("val_accuracy"),
            best_val_accuracy=state.best_val_accuracy,
            best_epoch=state.best_epoch,
            final_train_accuracy=last.get("accuracy"),
            epochs=state.epoch,
            steps=state.step,
            samples=state.samples,
            train_examples=n_train,
            parameters=sum(p.numel() for p in trainer.module.parameters()),
            processes=self.context.world_size,
            train_seconds=state.train_seconds,
            # fit time of every invocation, plus this invocation's setup and test evaluation
            wall_seconds=state.wall_seconds
            + (time.perf_counter() - self.started)
            - (state.wall_seconds - self.fit_base),
            samples_per_second=state.samples / max(state.train_seconds, 1e-9),
            machine=_machine(),
            versions=versions(),
        )
        self.context.on_main(lambda: self._write_results(report))
        return report

    def _write_results(self, report: dict[str, Any]) -> None:
        records = [
            json.loads(line)
            for line in (self.run_dir / "metrics.jsonl").read_text("utf-8").splitlines()
            if line
        ]
        plot_learning_curve(records, self.run_dir / "learning_curve.png", title=self.config.name)
        self.run_info("finished")
        atomic_write(self.run_dir / "report.json", _json(report))


def _prepare_new(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RunError(
            f"--out {out}: expected a new or empty directory, got an existing "
            f"{'file' if not out.is_dir() else 'non-empty directory'} (resume a run "
            "with --resume, or choose another --out)"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / ".write-test", b"")
        (out / ".write-test").unlink()
    except OSError as exc:
        raise RunError(
            f"--out {out}: expected a writable directory, got {type(exc).__name__}: {exc}"
        ) from exc


def _new_run_dir(out: PathLike | None, name: str) -> Path:
    out = Path(out) if out is not None else default_run_dir(name)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        _prepare_new(out)  # raises the explanation before any slow work
    return out


def _create_run_dir(session: _Session, data: TaskData) -> None:
    out, config = session.run_dir, session.config
    created = not out.exists()
    _prepare_new(out)
    try:
        atomic_write(out / "config.json", _json(config.to_dict()))
        if data.word_index is not None:
            atomic_write(out / "vocab.json", _json(data.word_index))
        session.run_info("running")
    except OSError as exc:
        shutil.rmtree(out, ignore_errors=True) if created else None
        raise RunError(f"cannot write into {out}: {type(exc).__name__}: {exc}") from exc


def train(
    config: Config | str,
    out: PathLike | None = None,
    data_dir: PathLike | None = None,
    overrides: Sequence[str] = (),
    callbacks: Sequence[Any] = (),
    context: Context | None = None,
) -> dict[str, Any]:
    """Train a preset name or configuration into a new run directory; returns report.json.

    ``callbacks`` (e.g. :class:`rnnlab.train.ProgressBar`) are added to the run's own metrics
    writer and checkpointer. Data and model are prepared before the directory is created.
    ``context``: this process's place in a data-parallel run (default: a single process).
    """
    started, context = time.perf_counter(), context or Context()
    config = (
        load_preset(config, overrides) if isinstance(config, str) else config.override(overrides)
    )
    context.check_batch_size(config.train.batch_size)
    out = context.on_main(lambda: _new_run_dir(out, config.name))  # one name for all ranks
    torch.manual_seed(config.train.seed)
    model = build_model(config)
    data = load_task_data(config, data_dir)
    trainer = Trainer(context.wrap(model), config.train, reduce=context.reduce_hook)
    session = _Session(out, config, data_dir, callbacks, started, context)
    context.on_main(lambda: _create_run_dir(session, data))
    return session.execute(trainer, data)


def _read_for_resume(
    run_dir: Path, data_dir: PathLike | None
) -> tuple[Config, PathLike | None, dict[str, torch.Tensor], dict[str, Any]]:
    config = read_config(run_dir)
    if (run_dir / "report.json").is_file():
        raise RunError(
            f"{run_dir}: expected an unfinished run, got a finished one "
            "(report.json exists); start a new run instead"
        )
    info = read_json(run_dir / "run.json", "an rnnlab run's run.json")
    data_dir = data_dir if data_dir is not None else info.get("data_dir")
    ckpt_dir = run_dir / "checkpoints"
    if not (ckpt_dir / "last.json").is_file():
        raise RunError(
            f"{run_dir}: expected a checkpoint in checkpoints/last.json to resume "
            "from, got none; start a new run instead"
        )
    tensors, meta = load_checkpoint(ckpt_dir, "last")
    return config, data_dir, tensors, meta


def resume(
    run_dir: PathLike,
    data_dir: PathLike | None = None,
    callbacks: Sequence[Any] = (),
    context: Context | None = None,
) -> dict[str, Any]:
    """Continue an interrupted run from ``checkpoints/last``; returns report.json. The
    checkpoint holds the global position, so ``context`` may have another world size than the
    run had; rank 0 reads the directory and sends the others what they need."""
    started, context = time.perf_counter(), context or Context()
    run_dir = Path(run_dir)
    config, data_dir, tensors, meta = context.on_main(lambda: _read_for_resume(run_dir, data_dir))
    context.check_batch_size(config.train.batch_size)
    ckpt_dir = run_dir / "checkpoints"
    torch.manual_seed(config.train.seed)
    model = build_model(config)
    load_model_weights(model, tensors, str(ckpt_dir / "last.json"))
    trainer = Trainer(context.wrap(model), config.train, reduce=context.reduce_hook)
    try:
        restore_optimizer(trainer.optimizer, tensors, meta)
        trainer.state = TrainState.from_dict(meta["state"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(
            f"{ckpt_dir / 'last.json'}: expected optimizer and trainer state "
            f"of this configuration, got {type(exc).__name__}: {exc}"
        ) from exc
    data = load_task_data(config, data_dir)
    session = _Session(run_dir, config, data_dir, callbacks, started, context)

    def reopen() -> None:
        _truncate_metrics(run_dir / "metrics.jsonl", trainer.state.step)
        session.run_info("running")

    context.on_main(reopen)
    restore_rng(tensors)  # last: nothing above may draw from the RNG the run continues with
    return session.execute(trainer, data)


def _truncate_metrics(path: Path, step: int) -> None:
    """Keep the lines logged up to the checkpoint's ``step`` (later ones will be logged again);
    a line cut short by a kill is dropped too."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text("utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("step", 0) <= step:
            kept.append(line + "\n")
    atomic_write(path, "".join(kept).encode("utf-8"))


def load_run(
    run_dir: PathLike, checkpoint: str = "best"
) -> tuple[Config, torch.nn.Module, dict[str, Any]]:
    """``(config, model in eval mode, checkpoint meta)`` of a run; ``checkpoint`` ``"best"``
    falls back to ``"last"`` when the run has no best (no validation)."""
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    ckpt_dir = run_dir / "checkpoints"
    tag = checkpoint
    if tag == "best" and not (ckpt_dir / "best.json").is_file():
        tag = "last"
    if not (ckpt_dir / f"{tag}.json").is_file():
        raise RunError(f"{run_dir}: expected a trained run with checkpoints/{tag}.json, got none")
    model = build_model(config)
    tensors, meta = load_checkpoint(ckpt_dir, tag)
    load_model_weights(model, tensors, str(ckpt_dir / f"{tag}.json"))
    model.eval()
    meta["tag"] = tag
    return config, model, meta
