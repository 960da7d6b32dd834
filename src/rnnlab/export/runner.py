"""Run an exported ONNX file with onnxruntime, checking what it is fed first.

onnxruntime's own errors for a wrong input name the graph's internals (``[ONNXRuntimeError] :
2 : INVALID_ARGUMENT : Invalid rank for input``); :class:`OnnxModel` says instead which input
expected what and what came, in rnnlab's words, before the session runs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["OnnxInputError", "OnnxModel", "load_onnx"]

_DTYPES = {"tensor(float)": np.float32, "tensor(int64)": np.int64, "tensor(int32)": np.int32}


class OnnxInputError(ValueError):
    """An input of the wrong name, rank, dtype or size for the exported graph."""


class OnnxModel:
    """An exported rnnlab model: ``model(x)`` or ``model(ids, lengths)`` -> logits (B, C), as
    numpy arrays; :attr:`metadata` holds the versions and opset recorded at export."""

    def __init__(self, path: Path, session: Any) -> None:
        self.path, self.session = path, session
        self.inputs = session.get_inputs()
        self.metadata: dict[str, str] = dict(session.get_modelmeta().custom_metadata_map)

    def _check(self, spec: Any, value: Any) -> np.ndarray:
        array = np.asarray(value)
        want = _DTYPES[spec.type]
        if array.dtype != want:
            raise OnnxInputError(
                f"{self.path.name}: input {spec.name!r} expected dtype {np.dtype(want).name}, "
                f"got {array.dtype.name}"
            )
        shape = ["B" if d is None else d for d in spec.shape]
        if array.ndim != len(shape):
            raise OnnxInputError(
                f"{self.path.name}: input {spec.name!r} expected shape {tuple(shape)} "
                f"(rank {len(shape)}), got {array.shape}"
            )
        for axis, size in enumerate(shape):
            if isinstance(size, int) and array.shape[axis] != size:
                raise OnnxInputError(
                    f"{self.path.name}: input {spec.name!r} expected shape {tuple(shape)}, "
                    f"got {array.shape}"
                )
        return array

    def __call__(self, *args: Any) -> np.ndarray:
        names = [i.name for i in self.inputs]
        if len(args) != len(names):
            raise OnnxInputError(
                f"{self.path.name}: expected {len(names)} inputs ({', '.join(names)}), "
                f"got {len(args)}"
            )
        feeds = {spec.name: self._check(spec, a) for spec, a in zip(self.inputs, args, strict=True)}
        first = feeds[names[0]]
        if first.shape[0] == 0 or (first.ndim > 1 and first.shape[1] == 0):
            raise OnnxInputError(
                f"{self.path.name}: input {names[0]!r} expected at least one row and one step, "
                f"got shape {first.shape}"
            )
        if "lengths" in feeds:
            lengths, T = feeds["lengths"], first.shape[1]
            if lengths.shape[0] != first.shape[0]:
                raise OnnxInputError(
                    f"{self.path.name}: expected one length per row ({first.shape[0]}), "
                    f"got {lengths.shape[0]}"
                )
            if lengths.min() < 1 or lengths.max() > T:
                raise OnnxInputError(
                    f"{self.path.name}: expected lengths in 1..{T}, got {lengths.min()} to "
                    f"{lengths.max()}"
                )
        return self.session.run([self.session.get_outputs()[0].name], feeds)[0]  # logits, ...


def load_onnx(path: str | os.PathLike, threads: int | None = None) -> OnnxModel:
    """An :class:`OnnxModel` running the exported file at ``path`` on the CPU."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise OnnxInputError(f"expected an exported .onnx file, got none at {path}")
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own unexported exception types
        raise OnnxInputError(
            f"{path}: expected an ONNX model, got a file onnxruntime refuses: {err}"
        ) from err
    return OnnxModel(path, session)
