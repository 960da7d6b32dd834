"""Checkpoints: tensors in safetensors, everything else in JSON, written atomically.

A checkpoint ``TAG`` (``last`` or ``best``) in a folder is two files:

* ``TAG-<step>.safetensors``: the model's weights (``model.<name>``), the optimizer's tensors
  (``optimizer.<param index>.<key>``, e.g. Adam's ``exp_avg``), the torch RNG state
  (``rng.torch``), which dropout draws from, and a stateful task's recurrent carry
  (``carry.<k>``, see :class:`rnnlab.train.TrainState`);
* ``TAG.json``: the name and sha256 of that tensor file, the optimizer's other state (param
  groups), the trainer state (step, epoch, batch, running sums, history), the resolved
  configuration, library versions and the time, and ``meta_sha256``: the sha256 of all of that
  in canonical JSON (:func:`meta_digest`), so that an edited ``state.step`` is refused like an
  edited tensor. Checkpoints of format ``rnnlab-checkpoint/1`` (before the digest) still load.

The tensor file is written first under a new name, then ``TAG.json`` is replaced atomically
(temporary file, fsync, ``os.replace``), then older tensor files of the tag are removed. A
crash at any point leaves the previous checkpoint whole: a reader goes through ``TAG.json``.
Nothing is unpickled on load.
"""

from __future__ import annotations

import hashlib
import json
import platform
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import safetensors
import safetensors.torch
import torch
from torch import Tensor, nn

from rnnlab.faults import fault_point
from rnnlab.files import atomic_write

__all__ = [
    "CheckpointError",
    "load_checkpoint",
    "load_model_weights",
    "meta_digest",
    "restore_carry",
    "restore_optimizer",
    "restore_rng",
    "save_checkpoint",
    "versions",
]


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, or belongs to a different architecture."""


def versions() -> dict[str, str]:
    from rnnlab import __version__

    return {
        "rnnlab": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "safetensors": safetensors.__version__,
        "python": platform.python_version(),
    }


FORMAT = "rnnlab-checkpoint/2"
_FORMATS = ("rnnlab-checkpoint/1", FORMAT)  # /1: no meta_sha256


def _json_bytes(values: Any) -> bytes:
    return (json.dumps(values, indent=1, sort_keys=True) + "\n").encode("utf-8")


def meta_digest(meta: dict[str, Any]) -> str:
    """sha256 of a checkpoint's metadata without its ``meta_sha256``, as canonical JSON (sorted
    keys, no spaces; JSON floats read back to the same value, so the digest survives a round
    trip through the file)."""
    body = {k: v for k, v in meta.items() if k != "meta_sha256"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _damaged(path: Path) -> str:
    return (
        f"; {path.absolute()} was changed or damaged after rnnlab wrote it: restore the run "
        "directory from a copy, use the other checkpoint (--checkpoint best or last), or train "
        "a new run"
    )


def save_checkpoint(
    folder: Path,
    tag: str,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    state: dict[str, Any],
    config: dict[str, Any],
    carry: tuple[Tensor, ...] | None = None,
    artifacts: dict[str, str] | None = None,
) -> Path:
    """Save checkpoint ``tag`` into ``folder``; returns the path of ``TAG.json``.
    ``artifacts``: the sha256 of each file the run keeps beside the weights (``vocab.json``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = _unshared({f"model.{k}": v for k, v in model.state_dict().items()})
    opt = optimizer.state_dict()
    optimizer_scalars: dict[str, dict[str, Any]] = {}
    for index, values in opt["state"].items():
        for key, value in values.items():
            if isinstance(value, Tensor):
                tensors[f"optimizer.{index}.{key}"] = value.detach().contiguous()
            else:
                optimizer_scalars.setdefault(str(index), {})[key] = value
    tensors["rng.torch"] = torch.get_rng_state()
    for k, t in enumerate(carry or ()):
        tensors[f"carry.{k}"] = t.detach().contiguous()
    data = safetensors.torch.save(tensors)
    name = f"{tag}-{state['step']:08d}.safetensors"
    atomic_write(folder / name, data)
    fault_point("checkpoint-tensors")
    meta: dict[str, Any] = {
        "format": FORMAT,
        "tensors": name,
        "sha256": hashlib.sha256(data).hexdigest(),
        "state": state,
        "optimizer": {"param_groups": opt["param_groups"], "scalars": optimizer_scalars},
        "config": config,
        "artifacts": artifacts or {},
        "versions": versions(),
        "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "argv": sys.argv,
    }
    meta["meta_sha256"] = meta_digest(meta)
    meta_path = folder / f"{tag}.json"
    atomic_write(meta_path, _json_bytes(meta))
    fault_point("checkpoint-meta")
    for old in folder.glob(f"{tag}-*.safetensors"):
        if old.name != name:
            old.unlink(missing_ok=True)
    return meta_path


def _unshared(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    """Contiguous detached tensors, a copy for each one sharing memory with an earlier one
    (tied weights, e.g. a language model's decoder and embedding: safetensors stores each
    name once; loading both names back into a tied module gives the same values)."""
    seen: set[int] = set()
    out = {}
    for name, value in tensors.items():
        value = value.detach().contiguous()
        ptr = value.untyped_storage().data_ptr()
        out[name] = value.clone() if ptr in seen else value
        seen.add(ptr)
    return out


def load_checkpoint(folder: Path, tag: str) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """``(tensors, meta)`` of checkpoint ``tag`` in ``folder``; the metadata and the tensors
    are verified by their sha256 (errors name the file by its full path and what to do)."""
    meta_path = (Path(folder) / f"{tag}.json").absolute()
    if not meta_path.is_file():
        raise CheckpointError(
            f"{meta_path}: expected a checkpoint, got no such file (train the run, or use "
            "--checkpoint last)"
        )
    try:
        meta = json.loads(meta_path.read_text("utf-8"))
        if not isinstance(meta, dict) or meta.get("format") not in _FORMATS:
            raise ValueError(f"format {_FORMATS}, got {str(meta)[:80]}")
        tensor_path = meta_path.parent / meta["tensors"]
        data = tensor_path.read_bytes()
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(
            f"{meta_path}: expected a readable rnnlab checkpoint, got {type(exc).__name__}: "
            f"{exc}{_damaged(meta_path)}"
        ) from exc
    if meta["format"] != _FORMATS[0] and meta.get("meta_sha256") != meta_digest(meta):
        raise CheckpointError(
            f"{meta_path}: expected metadata with sha256 {meta.get('meta_sha256')}, got "
            f"{meta_digest(meta)}{_damaged(meta_path)}"
        )
    digest = hashlib.sha256(data).hexdigest()
    if digest != meta.get("sha256"):
        raise CheckpointError(
            f"{tensor_path}: expected sha256 {meta.get('sha256')}, got {digest}"
            f"{_damaged(tensor_path)}"
        )
    return safetensors.torch.load(data), meta


def load_model_weights(model: nn.Module, tensors: dict[str, Tensor], where: str) -> None:
    """Copy the ``model.*`` tensors into ``model``; a different architecture is an error that
    names the first missing, unexpected or differently shaped parameter."""
    weights = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    own = model.state_dict()
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    shapes = [k for k in own if k in weights and own[k].shape != weights[k].shape]
    if missing or unexpected or shapes:
        if shapes:
            k = shapes[0]
            found = f"{k} of shape {tuple(weights[k].shape)}, model has {tuple(own[k].shape)}"
        else:
            found = (f"missing {missing[:3]}" if missing else "") + (
                f" unexpected {unexpected[:3]}" if unexpected else ""
            )
        if any(re.search(r"\.(weight|bias)_(ih|hh)_l\d", k) for k in unexpected):
            # model.backend='torch' used to swap in torch.nn layers; it now routes rnnlab's own
            # parameters through torch's op, so such runs have names no model has any more
            found += (
                " (torch.nn layer names: a run trained with model.backend='torch' before "
                "that backend ran rnnlab's own layers; train it again)"
            )
        raise CheckpointError(
            f"{where}: expected the parameters of this architecture "
            f"({type(model).__name__}), got a different one: {found.strip()}"
        )
    model.load_state_dict(weights)


def restore_optimizer(
    optimizer: torch.optim.Optimizer, tensors: dict[str, Tensor], meta: dict[str, Any]
) -> None:
    """Rebuild the optimizer state saved by :func:`save_checkpoint`."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    for index, values in meta["optimizer"]["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    optimizer.load_state_dict({"state": state, "param_groups": meta["optimizer"]["param_groups"]})


def restore_rng(tensors: dict[str, Tensor]) -> None:
    torch.set_rng_state(tensors["rng.torch"])


def restore_carry(tensors: dict[str, Tensor]) -> tuple[Tensor, ...] | None:
    """The recurrent carry saved with the checkpoint, in its order; None if there was none."""
    count = sum(1 for key in tensors if key.startswith("carry."))
    return tuple(tensors[f"carry.{k}"] for k in range(count)) if count else None
