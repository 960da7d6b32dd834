"""Training a configuration into a run directory (:func:`train`; resuming it:
:mod:`rnnlab.runs.resume`).

A new run refuses an existing non-empty directory (one a killed run left before its first
checkpoint excepted: it is reused) and holds the run's lock (:mod:`rnnlab.runs.lock`) until it
ends, as :func:`resume` does. If it fails before its first checkpoint, the directory is
removed; after that it stays, resumable with :func:`resume`, which continues from
``checkpoints/last`` (also mid-epoch, carry included) and, on CPU, ends with the same metrics as
an uninterrupted run. The test split is evaluated once, at the end: on the best checkpoint when
validation was a holdout, else on the final model (whose last validation already was test).

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
    load_checkpoint,
    load_model_weights,
    versions,
)
from rnnlab.config import PRESET_SOURCE, Config, ConfigError, load_preset
from rnnlab.distributed import Context
from rnnlab.faults import fault_point
from rnnlab.files import atomic_write
from rnnlab.plots import plot_learning_curve
from rnnlab.runs.layout import (
    PathLike,
    RunError,
    check_data_dir,
    check_new_out,
    default_run_dir,
    json_bytes,
)
from rnnlab.runs.load import artifact_digests, load_pretrained
from rnnlab.runs.lock import RunLock, claim_new_run_dir
from rnnlab.runs.report import Report
from rnnlab.tasks import Task, TaskData, get_task
from rnnlab.train import (
    BatchSource,
    Checkpointer,
    DivergenceError,
    MetricsWriter,
    RankDropoutSeed,
    Trainer,
    evaluate,
)

__all__ = ["train"]


def _machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }


class RunSession:
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
        self.task: Task = get_task(config)
        self.lock: RunLock | None = None  # held by rank 0 from claim or resume to the end

    def run_info(self, status: str, **extra: Any) -> None:
        info = {
            "preset": self.config.name,
            "status": status,
            "data_dir": None if self.data_dir is None else str(self.data_dir),
            "argv": sys.argv,
            "versions": versions(),
            **extra,
        }
        atomic_write(self.run_dir / "run.json", json_bytes(info))

    def claim(self) -> None:
        """Claim the new run directory (:mod:`rnnlab.runs.lock`): made, locked, empty."""
        self.lock = claim_new_run_dir(self.run_dir, self.task.artifact_names)
        fault_point("claimed")

    def lock_existing(self) -> None:
        """Lock an existing run directory for this process (resume)."""
        self.lock = RunLock.acquire(self.run_dir)

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()

    def abandon(self) -> None:
        """A fresh run that failed before its first checkpoint: remove its directory."""
        if self.context.is_main and not (self.ckpt_dir / "last.json").is_file():
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def create(self, data: TaskData) -> None:
        """Write the configuration, artifacts and run.json into the claimed run directory."""
        out = self.run_dir
        try:
            atomic_write(out / "config.json", json_bytes(self.config.to_dict()))
            for name, value in data.artifacts.items():
                atomic_write(out / name, json_bytes(value))
            self.run_info("running")
        except OSError as exc:
            raise RunError(f"cannot write into {out}: {type(exc).__name__}: {exc}") from exc

    def _batches(self, data: TaskData) -> tuple[BatchSource, BatchSource | None, BatchSource]:
        shard = {"rank": self.context.rank, "world_size": self.context.world_size}
        train = self.task.batches(data.train, training=True, **shard)
        val = None if data.val is None else self.task.batches(data.val, training=False, **shard)
        return train, val, self.task.batches(data.test, training=False, **shard)

    def execute(self, trainer: Trainer, data: TaskData) -> Report:
        config = self.config
        train, val, test = self._batches(data)
        self.fit_base = trainer.state.wall_seconds
        trainer.callbacks = list(self.callbacks)
        if self.context.enabled:  # each rank its own dropout masks
            trainer.callbacks.append(RankDropoutSeed(config.train.seed, self.context.rank))
        if self.context.is_main:
            trainer.callbacks += [
                MetricsWriter(self.run_dir / "metrics.jsonl", config.run.log_every),
                Checkpointer(
                    self.ckpt_dir,
                    config.to_dict(),
                    config.run.checkpoint_every,
                    artifact_digests(data.artifacts),
                ),
            ]
        try:
            trainer.fit(train, val)
        except DivergenceError as exc:
            self._fail("diverged", exc)
            raise RunError(f"{exc}. {self._resume_hint(diverged=True)}") from exc
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

    def _resume_hint(self, diverged: bool = False) -> str:
        last = (self.ckpt_dir / "last.json").absolute()
        if not last.is_file():
            return "No checkpoint had been written; the run directory was removed."
        try:
            step = json.loads(last.read_text("utf-8"))["state"]["step"]
        except (OSError, ValueError, KeyError, TypeError):
            step = "?"
        hint = f"The last checkpoint (finite weights) is kept: {last} (step {step}); "
        if diverged:
            return hint + (
                f"`rnnlab train --resume {self.run_dir.absolute()}` would continue with the "
                "same settings; start a new run with a lower train.lr or a train.clip_grad_norm."
            )
        return hint + f"continue with `rnnlab train --resume {self.run_dir.absolute()}`."

    def _fail(self, status: str, exc: BaseException) -> None:
        if not self.context.is_main:
            return
        if not (self.ckpt_dir / "last.json").is_file():
            shutil.rmtree(self.run_dir, ignore_errors=True)  # nothing worth resuming
            return
        with contextlib.suppress(OSError):  # unwritable: the checkpoint itself is intact
            self.run_info(status, error=f"{type(exc).__name__}: {exc}")

    def _test_metrics(self, trainer: Trainer, test: BatchSource) -> tuple[dict[str, float], str]:
        """``(metrics by name, checkpoint)``: the test split's loss and metrics, evaluated
        once: of the best checkpoint ("best") when validation was a holdout (the epoch was
        picked without seeing test), otherwise of the final model ("last")."""
        config, history = self.config, trainer.state.history
        tag = "best" if config.data.validation == "holdout" else "last"
        if tag == "best" and self.context.on_main((self.ckpt_dir / "best.json").is_file):
            tensors, _ = self.context.on_main(lambda: load_checkpoint(self.ckpt_dir, "best"))
            load_model_weights(trainer.module, tensors, str(self.ckpt_dir / "best.json"))
        if config.data.validation == "test" and history and "val_loss" in history[-1]:
            # the last epoch's validation was this very model on this very split
            last = history[-1]
            metrics = {
                k[4:]: v for k, v in last.items() if k.startswith("val_") and k != "val_seconds"
            }
        else:
            metrics = evaluate(trainer.module, test.epoch(0), self.task, self.context.reduce_hook)
        # the task picks which metrics a report keeps, named as report.json's keys (test_<name>)
        kept = self.task.test_report(metrics)
        return {name.removeprefix("test_"): value for name, value in kept.items()}, tag

    def _finish(self, trainer: Trainer, test: BatchSource, n_train: int) -> Report:
        config, state = self.config, trainer.state
        tested, tag = self._test_metrics(trainer, test) if config.run.evaluate_test else ({}, None)
        last = state.history[-1] if state.history else {}
        metric = self.task.selection.metric
        report = Report(
            preset=config.name,
            run_dir=str(self.run_dir),
            selection=self.task.selection,
            val=last.get(f"val_{metric}"),
            best=None if state.best is None else state.best["value"],
            best_epoch=None if state.best is None else state.best["epoch"],
            final_train=last.get(metric),
            test=tested,
            test_checkpoint=tag,
            validation=config.data.validation,
            holdout_seed=config.data.holdout_seed if config.data.validation == "holdout" else None,
            epochs=state.epoch,
            stopped=state.stopped,
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
            throughput_unit=self.task.throughput_unit,
            machine=_machine(),
            versions=versions(),
        )
        self.context.on_main(lambda: self._write_results(report))
        return report

    def _write_results(self, report: Report) -> None:
        records = [
            json.loads(line)
            for line in (self.run_dir / "metrics.jsonl").read_text("utf-8").splitlines()
            if line
        ]
        plot_learning_curve(records, self.run_dir / "learning_curve.png", title=self.config.name)
        self.run_info("finished")
        fault_point("report")
        atomic_write(self.run_dir / "report.json", report.to_bytes())


def _new_run_dir(out: PathLike | None, name: str) -> Path:
    out = Path(out) if out is not None else default_run_dir(name)
    check_new_out(out)  # the explanation before any slow work
    return out


def _pretrain(
    config: Config, out: Path, data_dir: PathLike | None, callbacks: Sequence[Any], context: Context
) -> Config:
    """``config`` ready to start from its source run: a ``model.init_from`` of the form
    ``preset:NAME`` trains preset NAME first, into its own run directory ``<out>-pretrain``
    (kept, and resumable on its own), and names that directory instead."""
    source = config.model.init_from
    if not source.startswith(PRESET_SOURCE):
        return config
    pretrain_out = out.with_name(f"{out.name}-pretrain")
    name = source.removeprefix(PRESET_SOURCE)  # train() loads it before touching the disk
    train(name, pretrain_out, data_dir, callbacks=callbacks, context=context)
    return config.override([f"model.init_from={pretrain_out}"])


def train(
    config: Config | str,
    out: PathLike | None = None,
    data_dir: PathLike | None = None,
    overrides: Sequence[str] = (),
    callbacks: Sequence[Any] = (),
    context: Context | None = None,
) -> Report:
    """Train a preset name or configuration into a new run directory; returns its report
    (what it wrote to report.json). A ``model.init_from`` naming a run starts the model from
    its weights (the task says what it takes); ``preset:NAME`` trains that preset first
    (:func:`_pretrain`).

    ``callbacks`` (e.g. :class:`rnnlab.train.ProgressBar`) are added to the run's own metrics
    writer and checkpointer. The directory is claimed first (made and locked, see
    :mod:`rnnlab.runs.lock`); a run that fails before its first checkpoint removes it.
    ``context``: this process's place in a data-parallel run (default: a single process).
    """
    started, context = time.perf_counter(), context or Context()
    config = (
        load_preset(config, overrides) if isinstance(config, str) else config.override(overrides)
    )
    context.check_batch_size(config.train.batch_size)
    if config.model.autosize and context.enabled:  # each rank would measure, and may choose, apart
        raise ConfigError(
            f"model.autosize: expected a single process (the width is chosen from this "
            f"process's measured speed), got {context.world_size} ranks; set model.hidden_sizes "
            f"and model.dropout instead"
        )
    check_data_dir(config, data_dir)
    out = context.on_main(lambda: _new_run_dir(out, config.name))  # one name for all ranks
    config = _pretrain(config, out, data_dir, callbacks, context)
    session = RunSession(out, config, data_dir, callbacks, started, context)
    if config.model.init_from:  # refused or bound before anything is written
        session.task.bind_pretrained(load_pretrained(config.model.init_from))
    context.on_main(session.claim)
    try:
        try:
            fault_point("data-load")
            data = session.task.load(data_dir)  # first: a language model's size is its vocabulary's
            settled = session.task.settle(data)  # e.g. a width fitted to the corpus (autosize)
            if settled is not None:
                config = session.config = settled
            torch.manual_seed(config.train.seed)
            model = session.task.build_model()
            trainer = Trainer(
                context.wrap(model), session.task, config.train, reduce=context.reduce_hook
            )
            context.on_main(lambda: session.create(data))
        except BaseException:
            session.abandon()  # nothing to resume: the directory goes, claim and all
            raise
        return session.execute(trainer, data)
    finally:
        session.release()
