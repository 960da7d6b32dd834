"""A run's int8 model on disk: ``RUN_DIR/int8.safetensors``, written by ``rnnlab quantize``.

One file holds the whole int8 model and says where it came from, so it is written in one
atomic step (:func:`rnnlab.files.atomic_write`) and a reader sees all of it or none:

* its tensors are the int8 model's ``state_dict()`` (:mod:`rnnlab.nn.quantized`): int8
  weights (``*_int8``) with their float32 scales (``*_scale``) for every recurrent and Linear
  layer, and the float32 tensors of the rest (biases, embeddings);
* its safetensors header metadata ``rnnlab_int8`` is JSON: the format, the quantization scheme
  (per-channel or per-tensor weights, the engine that packed them when it was written), the
  checkpoint it was made from (tag, step, and the sha256 of that checkpoint's tensor file and
  metadata) and the sha256 of its own tensors.

:func:`load_quantized_run` checks both digests: a changed tensor is refused, and so is an int8
model whose checkpoint is no longer the run's (the run trained on, or was resumed, after
``rnnlab quantize``), since the configuration, vocabulary and "best" it stands for would not
be the run's any more. It never writes inside ``checkpoints/``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
from torch import Tensor, nn

from rnnlab.checkpoint import CheckpointError, meta_digest, versions
from rnnlab.config import Config, ConfigError
from rnnlab.files import atomic_write
from rnnlab.nn.quantized import (
    QuantizationError,
    int8_layers,
    load_int8_state,
    quantize_model,
)
from rnnlab.runs.layout import RunError, read_config
from rnnlab.tasks import get_task

__all__ = ["INT8_FILE", "INT8_FORMAT", "load_quantized_run", "read_int8_meta", "write_int8"]

INT8_FILE = "int8.safetensors"
INT8_FORMAT = "rnnlab-int8/1"
_KEY = "rnnlab_int8"  # the safetensors metadata entry
PathLike = str | os.PathLike[str]


def _digest(tensors: dict[str, Tensor]) -> str:
    """sha256 of the tensors as safetensors serialises them (names sorted, no metadata)."""
    return hashlib.sha256(safetensors.torch.save(tensors)).hexdigest()


def write_int8(
    run_dir: PathLike, model: nn.Module, source: dict[str, Any], scheme: dict[str, Any]
) -> tuple[Path, dict[str, Any]]:
    """Write the int8 ``model`` into ``run_dir/int8.safetensors`` atomically; ``source`` is
    the checkpoint it was made from (``tag``, ``step``, ``sha256``, ``meta_sha256``),
    ``scheme`` how it was quantized. Returns the path and the metadata written. The caller
    decides whether an existing file may be replaced."""
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    meta = {
        "format": INT8_FORMAT,
        "source": source,
        "scheme": scheme,
        "tensors_sha256": _digest(tensors),
        "versions": versions(),
    }
    path = Path(run_dir) / INT8_FILE
    data = safetensors.torch.save(tensors, metadata={_KEY: json.dumps(meta, sort_keys=True)})
    atomic_write(path, data)
    return path, meta


def read_int8_meta(run_dir: PathLike) -> dict[str, Any]:
    """The metadata of ``run_dir``'s int8 model (no tensors read)."""
    path = (Path(run_dir) / INT8_FILE).absolute()
    if not path.is_file():
        read_config(run_dir)  # not a run at all: say so first
        raise RunError(
            f"{run_dir}: expected an int8 model ({path}), got none: make it with "
            f"`rnnlab quantize {run_dir}`"
        )
    try:
        with safetensors.safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {})[_KEY])
        if meta.get("format") != INT8_FORMAT:
            raise ValueError(f"format {INT8_FORMAT}, got {meta.get('format')!r}")
    except (OSError, ValueError, KeyError, TypeError, safetensors.SafetensorError) as exc:
        raise CheckpointError(
            f"{path}: expected an rnnlab int8 model, got {type(exc).__name__}: {exc} (make it "
            f"again with `rnnlab quantize {run_dir} --force`)"
        ) from exc
    return meta


def _source_meta(run_dir: Path, source: dict[str, Any]) -> dict[str, Any]:
    """The metadata of the checkpoint the int8 model was made from, checked to be the one it
    recorded."""
    tag = source["tag"]
    where = (run_dir / "checkpoints" / f"{tag}.json").absolute()
    again = f"make it again with `rnnlab quantize {run_dir} --checkpoint {tag} --force`"
    try:
        meta = json.loads(where.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise RunError(
            f"{run_dir / INT8_FILE}: expected the checkpoint it was made from, {where}, got "
            f"{type(exc).__name__}: {exc}; {again}"
        ) from exc
    digest = meta.get("meta_sha256")
    if digest is not None and digest != meta_digest(meta):
        raise CheckpointError(
            f"{where}: expected metadata with sha256 {digest}, got {meta_digest(meta)} (the file "
            "was edited; restore it from a copy of the run)"
        )
    if (meta.get("sha256"), digest) != (source["sha256"], source["meta_sha256"]):
        raise RunError(
            f"{run_dir / INT8_FILE}: expected checkpoint {tag} at step {source['step']} (tensors "
            f"sha256 {source['sha256']}), got checkpoint {tag} at step "
            f"{meta.get('state', {}).get('step')} (sha256 {meta.get('sha256')}): the run "
            f"changed since it was quantized; {again}"
        )
    return meta


def load_quantized_run(run_dir: PathLike) -> tuple[Config, nn.Module, dict[str, Any]]:
    """``(config, int8 model in eval mode, meta)`` of a run quantized by ``rnnlab quantize``,
    as :func:`rnnlab.runs.load_run` returns a float one: ``meta`` is the source checkpoint's
    metadata with ``tag`` ``"int8"`` and ``int8`` (this file's metadata, with ``engine``, the
    engine that packed the weights in this process)."""
    run_dir = Path(run_dir)
    int8 = read_int8_meta(run_dir)
    meta = _source_meta(run_dir, int8["source"])
    path = (run_dir / INT8_FILE).absolute()
    tensors = safetensors.torch.load_file(str(path))
    digest = _digest(tensors)
    if digest != int8["tensors_sha256"]:
        raise CheckpointError(
            f"{path}: expected tensors with sha256 {int8['tensors_sha256']}, got {digest} (the "
            f"file was changed; make it again with `rnnlab quantize {run_dir} --force`)"
        )
    try:
        config = Config.from_dict(meta["config"])
    except (ConfigError, KeyError) as exc:
        raise CheckpointError(
            f"{path}: expected an rnnlab configuration in its checkpoint, got an incompatible "
            f"one ({exc})"
        ) from exc
    task = get_task(config)
    task.bind_run(run_dir)
    scheme = int8["scheme"]
    model = quantize_model(task.build_model(), per_channel=scheme["per_channel"])
    try:
        load_int8_state(model, tensors)
    except (RuntimeError, QuantizationError) as exc:
        raise CheckpointError(
            f"{path}: expected the int8 model of this run's architecture, got {exc}"
        ) from exc
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not bool(v.isfinite().all())]
    if bad:
        raise CheckpointError(f"{path}: expected finite tensors, got non-finite values in {bad[0]}")
    engine = int8_layers(model)[0][1].engine
    meta.update(tag="int8", int8={**int8, "engine": engine})
    return config, model.eval(), meta
