"""Loading a trained run back: its configuration, task and model from a checkpoint, and its
data splits.

The checkpoint is the source of truth: the configuration used is the one saved with the weights
(and covered by the checkpoint's sha256), never ``config.json``; a ``config.json`` that differs
is reported as a :class:`~rnnlab.runs.layout.RunWarning` naming the file and the differing keys.
Artifacts a task keeps beside the weights (a text run's ``vocab.json``) are checked against the
sha256 the checkpoint recorded for them. Non-finite weights are refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rnnlab.checkpoint import CheckpointError, load_checkpoint, load_model_weights
from rnnlab.config import Config, ConfigError
from rnnlab.runs.layout import (
    PathLike,
    RunError,
    RunWarning,
    check_data_dir,
    read_config,
    run_data_dir,
)
from rnnlab.tasks import PretrainedRun, Task, TaskData, get_task

__all__ = [
    "artifact_digests",
    "checkpoint_config",
    "config_differences",
    "load_pretrained",
    "load_run",
    "load_run_data",
    "read_run_artifacts",
]


def config_differences(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """The dotted keys whose values differ between two configuration dicts, sorted."""
    keys = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            keys += config_differences(x, y, f"{prefix}{key}.")
        elif x != y:
            keys.append(prefix + key)
    return keys


def checkpoint_config(run_dir: PathLike, meta: dict[str, Any], where: Path) -> Config:
    """The configuration saved in a checkpoint's ``meta`` (read from ``where``); warns with a
    RunWarning when the run's ``config.json`` says otherwise."""
    try:
        config = Config.from_dict(meta["config"])
    except (ConfigError, KeyError) as exc:
        raise CheckpointError(
            f"{where}: expected an rnnlab configuration in the checkpoint, got an incompatible "
            f"one ({exc}); this rnnlab cannot use it"
        ) from exc
    path = (Path(run_dir) / "config.json").absolute()
    if path.is_file():
        try:
            written = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError) as exc:
            written = {"unreadable": f"{type(exc).__name__}: {exc}"}
        stored = json.loads(json.dumps(config.to_dict()))  # tuples as the file has them
        # both read the same way, so keys added to Config since the run was written (their
        # defaults) differ in neither; a file this rnnlab cannot read is compared as written
        with contextlib.suppress(ConfigError, TypeError, AttributeError):
            written = json.loads(json.dumps(Config.from_dict(written).to_dict()))
        differing = config_differences(written, stored)
        if differing:
            warnings.warn(
                RunWarning(
                    f"{path} differs from the configuration saved with the weights in {where} "
                    f"({', '.join(differing)}); using the checkpoint's (config.json is only a "
                    "copy: restore it or leave it)"
                ),
                stacklevel=3,
            )
    return config


def artifact_digests(values: dict[str, Any]) -> dict[str, str]:
    """sha256 of each artifact as the run directory holds it (``json_bytes`` of its value)."""
    from rnnlab.runs.layout import json_bytes

    return {name: hashlib.sha256(json_bytes(v)).hexdigest() for name, v in values.items()}


def read_run_artifacts(run_dir: PathLike, task: Task, meta: dict[str, Any]) -> dict[str, Any]:
    """The task's artifacts from ``run_dir``, each checked against the sha256 its checkpoint
    recorded (checkpoints written before the digests are not checked)."""
    values = task.read_artifacts(run_dir)
    recorded = meta.get("artifacts") or {}
    for name in values:
        path = (Path(run_dir) / name).absolute()
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if name in recorded and recorded[name] != digest:
            raise RunError(
                f"{path}: expected the file this run was trained with (sha256 {recorded[name]}), "
                f"got a different one (sha256 {digest}); restore it from a copy of the run"
            )
    return values


def load_run(
    run_dir: PathLike, checkpoint: str = "best"
) -> tuple[Config, nn.Module, dict[str, Any]]:
    """``(config, model in eval mode, checkpoint meta)`` of a run; ``checkpoint`` ``"best"``
    falls back to ``"last"`` when the run has no best (no validation). ``meta["tag"]`` is the
    checkpoint used; the configuration is the checkpoint's (see the module docstring).
    ``checkpoint="int8"`` loads the int8 model ``rnnlab quantize`` wrote beside the checkpoints
    (:func:`rnnlab.runs.quantized.load_quantized_run`)."""
    if checkpoint == "int8":
        from rnnlab.runs.quantized import load_quantized_run

        return load_quantized_run(run_dir)
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        read_config(run_dir)  # the foreign-folder error
    ckpt_dir = run_dir / "checkpoints"
    tag = checkpoint
    if tag == "best" and not (ckpt_dir / "best.json").is_file():
        tag = "last"
    where = (ckpt_dir / f"{tag}.json").absolute()
    if not where.is_file():
        read_config(run_dir)  # not a run at all: say so first
        raise RunError(
            f"{run_dir}: expected a trained run with checkpoints/{tag}.json, got none "
            f"({where} does not exist; train the run or resume it with --resume)"
        )
    tensors, meta = load_checkpoint(ckpt_dir, tag)
    config = checkpoint_config(run_dir, meta, where)
    task = get_task(config)
    task.bind_run(run_dir)
    model = task.build_model()
    task.check_weights(tensors, str(where))
    load_model_weights(model, tensors, str(where))
    bad = [k for k, v in model.state_dict().items() if v.is_floating_point() and not _finite(v)]
    if bad:
        raise CheckpointError(
            f"{where}: expected finite weights, got non-finite values in {bad[0]} (the run "
            "diverged before this checkpoint; train again with a lower train.lr)"
        )
    model.eval()
    meta["tag"] = tag
    return config, model, meta


def load_pretrained(run_dir: PathLike) -> PretrainedRun:
    """The run that ``model.init_from`` names, as the new run's task takes it: its best
    checkpoint (its last when it had no validation), verified like any run :func:`load_run`
    loads; an unfinished or foreign folder is a :class:`RunError` naming it."""
    run_dir = Path(run_dir)
    try:
        config, model, meta = load_run(run_dir, "best")
    except (RunError, CheckpointError, ConfigError) as exc:
        raise RunError(f"model.init_from: expected a trained run, got {exc}") from exc
    step = int(meta.get("state", {}).get("step", 0))
    return PretrainedRun(run_dir, config, model, meta["tag"], step, str(meta["sha256"]))


def _finite(tensor: torch.Tensor) -> bool:
    return bool(torch.isfinite(tensor).all())


def load_run_data(
    run_dir: PathLike, data_dir: PathLike | None = None, config: Config | None = None
) -> tuple[Task, TaskData]:
    """A run's task and its splits, from ``data_dir`` or by default the data the run was
    trained on; ``config`` (default: the run's config.json) is best the checkpoint's, from
    :func:`load_run`."""
    config = config if config is not None else read_config(run_dir)
    check_data_dir(config, data_dir)
    task = get_task(config)
    task.bind_run(run_dir)
    return task, task.load(run_data_dir(run_dir, data_dir))
