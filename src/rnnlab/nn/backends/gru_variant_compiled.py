"""The compiled fast path of the GRU variants (:class:`rnnlab.nn.variant_gru.VariantGRUCell`):
an autograd Function around ``gru_variant.cpp`` (:mod:`rnnlab.nn.backends._ext`).

Shape legend: B batch, T time, I input features, H hidden units, G = 3H (gate rows r, z, n).

The kernel runs the cell's equations (LayerNorm, recurrent dropout, zoneout, any combination)
over the whole sequence in C++ with the fused path's algorithm
(:func:`rnnlab.nn.backends.variant_fused.gru_variant`): the input projection of all steps in
one GEMM and its LayerNorm over all T*B rows at once, then per step one recurrent GEMM and one
pass over the gates; the backward is written by hand and makes dx and the weight gradients
single GEMMs over all T*B rows (``gru_variant.h`` has the details). float32 and
float64 only: rnnlab's GRU has no bf16 mode. ``tests/test_gru_variant_kernel.py`` checks it
against the reference loop (:func:`rnnlab.nn.backends.reference.scan` over the cell).

:func:`gru_variant_unavailable` says where it cannot run; which kernel runs a call is decided
by :func:`rnnlab.nn.backends.dispatch.scan_layer`, never here.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from rnnlab.nn.backends import variant_ops  # variant_ops also registers the operators
from rnnlab.nn.backends.compiled import _kernel
from rnnlab.nn.backends.variant_compiled import kernel_unavailable
from rnnlab.nn.variant_gru import VariantGRUCell
from rnnlab.nn.variants import CellNoise

__all__ = ["gru_variant", "gru_variant_unavailable"]

# The cell's parameters in the order the kernel takes them (None where the cell has none).
_PARAMS = ("weight_ih", "weight_hh", "bias", "bias_hn", "ln_ih_weight", "ln_hh_weight")
# gru_variant_forward's `mode`: 0 lets the kernel choose between row blocks and per-step GEMMs
# (see gru_variant.h); the tests force 1 (row blocks) and 2 (per step, ATen) to check each.
_AUTO = 0


def gru_variant_unavailable(cell: VariantGRUCell, x: Tensor) -> str | None:
    """Why the compiled GRU-variant kernel cannot run ``cell`` on ``x`` (None if it can): it
    needs a :class:`VariantGRUCell`, float32 or float64 CPU tensors with weights of the same
    dtype, and the built extension (AVX-512 CPU, C++ compiler, ninja; built on the first call)."""
    return kernel_unavailable("the compiled GRU-variant kernel", VariantGRUCell, cell, x)


def gru_variant(
    cell: VariantGRUCell,
    x: Tensor,
    h: Tensor,
    mask: Tensor | None,
    noise: CellNoise | None,
    *,
    reverse: bool,
    _mode: int = _AUTO,
) -> tuple[Tensor, Tensor]:
    """Run ``cell`` over x (B, T, I) from h (B, H), skipping steps where ``mask`` (B, T) is
    False (they carry h and output zero), with ``noise``'s masks (``recurrent`` (B, H), already
    scaled, and ``zone_h`` (B, T, H) in real time order; None: none); backwards in time if
    ``reverse``. Gradients flow to x, h and every parameter of the cell. Returns (output
    (B, T, H), final h (B, H)).

    The caller checks :func:`gru_variant_unavailable` first."""
    B, T, _ = x.shape
    H = cell.hidden_size
    if h.shape != (B, H):
        raise ValueError(f"gru_variant expected h of shape {(B, H)}, got {tuple(h.shape)}")
    if mask is not None and mask.shape != (B, T):
        raise ValueError(f"gru_variant expected mask of shape {(B, T)}, got {tuple(mask.shape)}")
    noise = noise or CellNoise()
    if noise.zone_c is not None:
        raise ValueError("gru_variant expected no zone_c mask (the GRU has no cell state)")
    masks = [
        None if m is None else m.to(x.dtype).contiguous() for m in (noise.recurrent, noise.zone_h)
    ]
    params = [getattr(cell, name, None) for name in _PARAMS]
    x, h = x.contiguous(), h.contiguous()
    mask = None if mask is None else mask.to(torch.bool).contiguous()
    options = (reverse, cell.ln_eps, _mode)
    tracked = [x, h, *(p for p in params if p is not None)]
    if torch.is_grad_enabled() and any(t.requires_grad for t in tracked):
        out, h_n = _VariantGRU.apply(x, h, mask, masks, options, *params)
    else:  # nothing is kept for a backward pass
        forward = _kernel("gru_variant_forward", x)
        out, h_n = forward(x, h, params, masks, mask, reverse, cell.ln_eps, False, _mode)
    return out, h_n


class _VariantGRU(torch.autograd.Function):
    """A variant GRU direction over time in C++: x (B, T, I) batch first, h0 (B, H), mask
    (B, T) or None, masks [recurrent, zone_h] (constants), then the six parameters of
    ``_PARAMS``. Each pass is one operator of :mod:`~rnnlab.nn.backends.variant_ops` (called
    directly in eager mode, recorded when traced)."""

    @staticmethod
    def forward(ctx, x, h0, mask, masks, options, *params):
        reverse, eps, mode = options
        forward = _kernel("gru_variant_forward", x)
        out, h_n, *saved = forward(x, h0, list(params), masks, mask, reverse, eps, True, mode)
        ctx.options, ctx.masks, ctx.n_saved = options, masks, len(saved)
        ctx.save_for_backward(*saved, *params, mask)
        return out, h_n

    @staticmethod
    @once_differentiable
    def backward(ctx, dout, dh):
        reverse, eps, mode = ctx.options
        tensors = ctx.saved_tensors
        saved, params, mask = tensors[: ctx.n_saved], tensors[ctx.n_saved : -1], tensors[-1]
        backward = _kernel("gru_variant_backward", dout)
        dx, dh0, *dparams = backward(
            dout.contiguous(), dh.contiguous(), list(saved), list(params), ctx.masks, mask,
            reverse, eps, ctx.needs_input_grad[0], mode,
        )  # fmt: skip
        grads = variant_ops.present([dx, *dparams])
        return grads[0], dh0, None, None, None, *grads[1:]
