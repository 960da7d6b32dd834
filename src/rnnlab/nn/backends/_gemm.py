"""Matrix products for the fast path, through oneDNN on the CPU where torch ships it.

On this project's reference machine (AMD EPYC with AVX-512), torch's default CPU GEMM (MKL)
reaches about 200 GFLOP/s in fp32 while oneDNN, the library torch.nn.LSTM itself runs on,
reaches 300-480 GFLOP/s at the same shapes (measured in ``benchmarks/``). torch exposes oneDNN's
matmul as ``torch.ops.mkldnn._linear_pointwise``, the op its own compiler (inductor) emits for
CPU linear layers. The fast path uses it for float32 and bfloat16 tensors on the CPU, and falls
back to ``torch.addmm`` everywhere else (float64, GPUs, builds without oneDNN).
"""

from __future__ import annotations

import torch
from torch import Tensor

_ONEDNN_DTYPES = (torch.float32, torch.bfloat16)


def _onednn_available() -> bool:
    ops = getattr(torch.ops, "mkldnn", None)
    try:
        return bool(torch.backends.mkldnn.is_available()) and hasattr(ops, "_linear_pointwise")
    except (AttributeError, RuntimeError):
        return False


ONEDNN = _onednn_available()


def uses_onednn(x: Tensor) -> bool:
    """Whether :func:`linear` runs through oneDNN for tensors like ``x``."""
    return ONEDNN and x.device.type == "cpu" and x.dtype in _ONEDNN_DTYPES


def linear(
    x: Tensor, weight: Tensor, bias: Tensor | None = None, add: Tensor | None = None
) -> Tensor:
    """``x @ weight.T (+ bias) (+ add)``: x (M, K), weight (N, K), bias (N,), add (M, N)."""
    if uses_onednn(x):
        if add is not None:
            return torch.ops.mkldnn._linear_pointwise.binary(x, add, weight, bias, "add")
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    out = x @ weight.t() if bias is None else torch.addmm(bias, x, weight.t())
    return out if add is None else out.add_(add)
