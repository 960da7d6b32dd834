"""Loading a trained run back: its configuration, task and model from a checkpoint, and its
data splits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from rnnlab.checkpoint import load_checkpoint, load_model_weights
from rnnlab.config import Config
from rnnlab.runs.layout import PathLike, RunError, read_config, run_data_dir
from rnnlab.tasks import Task, TaskData, get_task

__all__ = ["load_run", "load_run_data"]


def load_run(
    run_dir: PathLike, checkpoint: str = "best"
) -> tuple[Config, nn.Module, dict[str, Any]]:
    """``(config, model in eval mode, checkpoint meta)`` of a run; ``checkpoint`` ``"best"``
    falls back to ``"last"`` when the run has no best (no validation). ``meta["tag"]`` is the
    checkpoint used."""
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    ckpt_dir = run_dir / "checkpoints"
    tag = checkpoint
    if tag == "best" and not (ckpt_dir / "best.json").is_file():
        tag = "last"
    if not (ckpt_dir / f"{tag}.json").is_file():
        raise RunError(f"{run_dir}: expected a trained run with checkpoints/{tag}.json, got none")
    task = get_task(config)
    task.bind_run(run_dir)
    model = task.build_model()
    tensors, meta = load_checkpoint(ckpt_dir, tag)
    task.check_weights(tensors, str(ckpt_dir / f"{tag}.json"))
    load_model_weights(model, tensors, str(ckpt_dir / f"{tag}.json"))
    model.eval()
    meta["tag"] = tag
    return config, model, meta


def load_run_data(run_dir: PathLike, data_dir: PathLike | None = None) -> tuple[Task, TaskData]:
    """A run's task and its splits, from ``data_dir`` or by default the data the run was
    trained on."""
    task = get_task(read_config(run_dir))
    task.bind_run(run_dir)
    return task, task.load(run_data_dir(run_dir, data_dir))
