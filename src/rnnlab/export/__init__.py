"""``rnnlab export``: a trained run as a file other runtimes load (ONNX).

:func:`export_run` writes ``<run>/model.onnx`` (or ``--out``) and a sidecar ``model.onnx.json``
with the versions and opset; :func:`load_onnx` runs such a file with onnxruntime, checking its
inputs. The graph itself is :mod:`rnnlab.export.classifier`; other models plug in their own
with :func:`register_hook`. onnx (and onnxruntime, to run the files) are the ``export`` extra.
"""

from rnnlab.export.api import (
    DEFAULT_OPSET,
    ExportError,
    ExportResult,
    export_model,
    export_run,
    register_hook,
)
from rnnlab.export.cli import main
from rnnlab.export.runner import OnnxInputError, OnnxModel, load_onnx

__all__ = [
    "DEFAULT_OPSET",
    "ExportError",
    "ExportResult",
    "OnnxInputError",
    "OnnxModel",
    "export_model",
    "export_run",
    "load_onnx",
    "main",
    "register_hook",
]
