"""Dropout (Srivastava et al. 2014) with its mask drawn from uniforms, as Keras draws it.

Each element is kept with probability 1 - p and scaled by 1 / (1 - p): out = x * m / (1 - p),
m_j = [u_j >= p], u_j uniform on [0, 1). That is the distribution of ``torch.nn.Dropout``'s
masks; only the way they are drawn differs. On the CPU, ``torch.nn.functional.dropout`` of
IMDB's (512, 20, 256) activations took 26 ms on one thread (25 of them in its ``bernoulli_``),
against 6 ms for this uniform draw, compare and scale (``benchmarks/dropout_bench.py``, freed
memory retained as ``rnnlab train`` does): about a tenth of imdb-seed's training step
(benchmarks/RESULTS.md, "Dropout from uniforms").

On other devices (CUDA's dropout is one fused kernel) and for integer or complex tensors this
is ``torch.nn.functional.dropout`` itself. The masks come from torch's generator, so a seeded
run draws the same masks every time.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["Dropout", "dropout"]


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """x with each element zeroed with probability ``p`` and the rest scaled by 1 / (1 - p) in
    training; x itself otherwise. Gradients flow through the kept elements, scaled alike."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout expected a probability p in [0, 1], got {p}")
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64, torch.bfloat16):
        return nn.functional.dropout(x, p, training=True)
    if p == 1.0:
        return x * 0.0
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32  # bf16 uniforms are coarse
    u = torch.rand(x.shape, dtype=dtype, device=x.device)  # uniform on [0, 1)
    mask = u.ge_(p).mul_(1.0 / (1.0 - p)).to(x.dtype)  # 0 or 1 / (1 - p), same shape as x
    return x * mask


class Dropout(nn.Dropout):
    """``torch.nn.Dropout`` (same arguments, no parameters, the same state dict) whose masks
    come from :func:`dropout`. ``inplace`` is accepted and ignored: the output is new."""

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)
