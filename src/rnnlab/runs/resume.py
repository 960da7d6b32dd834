"""Resuming an interrupted run from ``checkpoints/last``: :func:`resume`.

The checkpoint is the source of truth: its configuration (checked against config.json by
:func:`rnnlab.runs.load.checkpoint_config`), weights, optimizer state, trainer state, carry and
RNG state. Lines that ``metrics.jsonl`` gained after that checkpoint are dropped and logged
again, so a resumed run writes what an uninterrupted one would have written.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from rnnlab.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_model_weights,
    restore_carry,
    restore_optimizer,
    restore_rng,
)
from rnnlab.config import Config
from rnnlab.distributed import Context
from rnnlab.faults import fault_point
from rnnlab.files import atomic_write
from rnnlab.runs.layout import (
    PathLike,
    RunError,
    check_data_dir,
    read_config,
    read_json,
    run_data_dir,
)
from rnnlab.runs.load import checkpoint_config
from rnnlab.runs.lock import RunLock
from rnnlab.runs.report import Report
from rnnlab.runs.session import RunSession
from rnnlab.train import Trainer, TrainState

__all__ = ["resume"]


def _read_for_resume(
    run_dir: Path, data_dir: PathLike | None, locks: list[RunLock]
) -> tuple[Config, PathLike | None, dict[str, torch.Tensor], dict[str, Any]]:
    read_config(run_dir)  # a clear error for a foreign folder
    locks.append(RunLock.acquire(run_dir))  # one writer: held until the run ends
    if (run_dir / "report.json").is_file():
        raise RunError(
            f"{run_dir}: expected an unfinished run, got a finished one "
            "(report.json exists); start a new run instead"
        )
    read_json(run_dir / "run.json", "an rnnlab run's run.json")
    ckpt_dir = run_dir / "checkpoints"
    if not (ckpt_dir / "last.json").is_file():
        raise RunError(
            f"{run_dir}: expected a checkpoint in {(ckpt_dir / 'last.json').absolute()} to "
            "resume from, got none (the run stopped before its first checkpoint); start it "
            f"again with `rnnlab train PRESET --out {run_dir}` (the directory is reused)"
        )
    tensors, meta = load_checkpoint(ckpt_dir, "last")
    config = checkpoint_config(run_dir, meta, (ckpt_dir / "last.json").absolute())
    check_data_dir(config, data_dir)
    return config, run_data_dir(run_dir, data_dir), tensors, meta


def resume(
    run_dir: PathLike,
    data_dir: PathLike | None = None,
    callbacks: Sequence[Any] = (),
    context: Context | None = None,
) -> Report:
    """Continue an interrupted run from ``checkpoints/last``; returns its report. The
    checkpoint holds the global position, so ``context`` may have another world size than the
    run had; rank 0 reads the directory and sends the others what they need."""
    started, context = time.perf_counter(), context or Context()
    run_dir = Path(run_dir)
    locks: list[RunLock] = []  # rank 0's lock on the run directory
    try:
        read = context.on_main(lambda: _read_for_resume(run_dir, data_dir, locks))
        return _resume(run_dir, *read, callbacks, started, context)
    finally:
        for lock in locks:
            lock.release()


def _resume(
    run_dir: Path,
    config: Config,
    data_dir: PathLike | None,
    tensors: dict[str, torch.Tensor],
    meta: dict[str, Any],
    callbacks: Sequence[Any],
    started: float,
    context: Context,
) -> Report:
    context.check_batch_size(config.train.batch_size)
    ckpt_dir = run_dir / "checkpoints"
    session = RunSession(run_dir, config, data_dir, callbacks, started, context)
    session.task.bind_run(run_dir)  # what sizes the model beyond the config (an LM's vocabulary)
    torch.manual_seed(config.train.seed)
    model = session.task.build_model()
    session.task.check_weights(tensors, str(ckpt_dir / "last.json"))
    load_model_weights(model, tensors, str(ckpt_dir / "last.json"))
    trainer = Trainer(context.wrap(model), session.task, config.train, reduce=context.reduce_hook)
    try:
        restore_optimizer(trainer.optimizer, tensors, meta)
        trainer.state = TrainState.from_dict(meta["state"], carry=restore_carry(tensors))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(
            f"{ckpt_dir / 'last.json'}: expected optimizer and trainer state "
            f"of this configuration, got {type(exc).__name__}: {exc}"
        ) from exc
    fault_point("data-load")
    data = session.task.load(data_dir)

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
