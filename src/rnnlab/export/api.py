"""Export a trained run: pick the model's hook, build the file, record versions, write atomically.

A hook maps a model to a file's bytes for one format. Each kind's exporter module, named by its
task (``task.floors.export``, e.g. :mod:`rnnlab.export.classifier`,
:mod:`rnnlab.export.language_model`), registers its model classes with :func:`register_hook`
when imported; this module imports them on first use and never names a kind. The graph helpers
they share are public in :mod:`rnnlab.export.graph`.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rnnlab.files import check_output

__all__ = [
    "DEFAULT_OPSET",
    "ExportError",
    "ExportResult",
    "export_model",
    "export_run",
    "register_hook",
]

DEFAULT_OPSET = 18  # ReduceMax with axes as an input; onnxruntime >= 1.14 runs it
# format -> model class -> hook(model, opset) returning an onnx.ModelProto
_HOOKS: dict[str, dict[type, Callable[[nn.Module, int], Any]]] = {"onnx": {}}


class ExportError(ValueError):
    """The run, the format or the output path cannot give an exported file."""


@dataclass(frozen=True)
class ExportResult:
    """Where the export went and what it holds (also written beside it as ``<file>.json``):
    ``metadata`` holds JSON values (``inputs`` a list, ``opset`` an int); the file's
    ``metadata_props`` hold the same, strings as they are and the others JSON-encoded."""

    path: Path
    sidecar: Path
    metadata: dict[str, Any]


def register_hook(fmt: str, model_type: type, hook: Callable[[nn.Module, int], Any]) -> None:
    """Export models of ``model_type`` (and subclasses) to ``fmt`` with ``hook(model, opset)``,
    which returns an ``onnx.ModelProto`` whose first graph input is the data."""
    if fmt not in _HOOKS:
        raise ExportError(f"expected a format in {sorted(_HOOKS)}, got {fmt!r}")
    _HOOKS[fmt][model_type] = hook


def _hook(fmt: str, model: nn.Module) -> Callable[[nn.Module, int], Any]:
    _load_kind_exporters()
    if fmt not in _HOOKS:
        raise ExportError(f"expected a format in {sorted(_HOOKS)}, got {fmt!r}")
    for model_type, hook in _HOOKS[fmt].items():
        if isinstance(model, model_type):
            return hook
    known = ", ".join(t.__name__ for t in _HOOKS[fmt])
    raise ExportError(f"{fmt} export expected a model of type {known}, got {type(model).__name__}")


def _load_kind_exporters() -> None:
    """Import every kind's exporter (``task.floors.export``, :mod:`rnnlab.tasks`); each
    registers its model classes with :func:`register_hook` as it is imported. Done on first
    use, so onnx is imported only then."""
    from rnnlab.tasks import TASKS, load_attribute

    for task in TASKS.values():
        if task.floors.export:
            load_attribute(task.floors.export)


def _atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary file beside ``path``, then rename: never a half-written file."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise ExportError(f"cannot write into {path.parent}: {err.strerror}") from err
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    """The process's umask (reading it means setting it: set back at once)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def export_model(
    model: nn.Module,
    out: str | os.PathLike,
    fmt: str = "onnx",
    opset: int = DEFAULT_OPSET,
    extra: dict[str, Any] | None = None,
    force: bool = False,
) -> ExportResult:
    """Export ``model`` (put in eval mode) to ``out`` in ``fmt``, with versions, the opset and
    ``extra`` recorded in the sidecar ``<out>.json`` (JSON values) and in the file's
    ``metadata_props`` (strings: JSON-encoded unless already a string). An existing ``out``
    or sidecar is replaced only with ``force``; a place inside a run's ``checkpoints/`` is
    always refused (:func:`rnnlab.files.check_output`)."""
    import onnx

    newest = onnx.defs.onnx_opset_version()
    if not DEFAULT_OPSET <= opset <= newest:
        raise ExportError(
            f"expected an opset in {DEFAULT_OPSET}..{newest} (the graph's ReduceMax takes its "
            f"axes as an input from opset 18; onnx {onnx.__version__} knows up to {newest}), "
            f"got {opset}"
        )
    out = Path(out)
    if out.is_dir():
        raise ExportError(f"expected an output file, got the directory {out}")
    if not out.parent.is_dir():
        raise ExportError(f"expected an existing directory for {out}, got none at {out.parent}")
    sidecar = out.with_name(out.name + ".json")
    check_output(out, force)
    check_output(sidecar, force, flag="--out (its sidecar)")
    model.eval()
    with torch.no_grad():
        proto = _hook(fmt, model)(model, opset)
    metadata = {
        "producer": "rnnlab",
        "rnnlab": _rnnlab_version(),
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "python": platform.python_version(),
        "opset": opset,
        "inputs": [
            {
                "name": i.name,
                "dtype": onnx.TensorProto.DataType.Name(i.type.tensor_type.elem_type),
                "shape": [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim],
            }
            for i in proto.graph.input
        ],
        **(extra or {}),
    }
    props = {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    onnx.helper.set_model_props(proto, props)
    proto.producer_name, proto.producer_version = "rnnlab", metadata["rnnlab"]
    onnx.checker.check_model(proto)
    _atomic_write(out, proto.SerializeToString())
    _atomic_write(sidecar, (json.dumps(metadata, indent=2) + "\n").encode())
    return ExportResult(out, sidecar, metadata)


def _rnnlab_version() -> str:
    from rnnlab import __version__

    return __version__


def _read_run(run_dir: Path, checkpoint: str) -> tuple[Any, nn.Module, dict[str, Any]]:
    """``(config, model, meta)`` of a run: the one place that knows where runs are read."""
    from rnnlab.runs import load_run

    return load_run(run_dir, checkpoint)


def export_run(
    run_dir: str | os.PathLike,
    fmt: str = "onnx",
    out: str | os.PathLike | None = None,
    checkpoint: str = "best",
    opset: int = DEFAULT_OPSET,
    force: bool = False,
) -> ExportResult:
    """Export the ``checkpoint`` of the run in ``run_dir`` to ``out`` (default
    ``<run_dir>/model.<fmt>``; replaced only with ``force``); the preset, checkpoint tag and
    step are recorded too, and what the run's kind says of its outputs
    (:meth:`rnnlab.tasks.Task.export_fields`: a classifier's ``num_classes``, a language
    model's ``vocab_size`` and ``level``)."""
    run_dir = Path(run_dir)
    config, model, meta = _read_run(run_dir, checkpoint)
    out = Path(out) if out is not None else run_dir / f"model.{fmt}"
    from rnnlab.tasks import get_task

    task = get_task(config)
    task.bind_run(run_dir)
    step = meta.get("step", meta.get("state", {}).get("step"))
    extra = {
        "preset": str(config.name),
        "checkpoint": str(meta.get("tag", checkpoint)),
        "step": step,
        **task.export_fields(),
    }
    return export_model(model, out, fmt, opset, extra, force)
