"""The compiled fast path of the LSTM variants (:class:`rnnlab.nn.variants.VariantLSTMCell`):
an autograd Function around ``lstm_variant.cpp`` (:mod:`rnnlab.nn.backends._ext`).

Shape legend: B batch, T time, I input features, H cell units, P projection size,
R = P if P > 0 else H (the width of h).

The kernel runs the cell's equations (LayerNorm, projection, peepholes, recurrent dropout,
zoneout, any combination) over the whole sequence in C++ with the fused path's algorithm: the
input projection of all steps in one GEMM (and its LayerNorm over all rows at once), per step
one recurrent GEMM, one pass over the gates and, with a projection, one more GEMM (without
LayerNorm and with a small W_ih, per-step GEMMs over [x_t, h] make the input projection too);
the backward is written by hand and makes the weight gradients single GEMMs over all T*B rows
(``lstm_variant.cpp``'s header has the details). ``tests/test_variant_kernels.py`` checks it
against the reference loop (:func:`rnnlab.nn.backends.reference.scan` over the cell).

:func:`variant_unavailable` says where it cannot run; which kernel runs a call is decided by
:func:`rnnlab.nn.backends.dispatch.scan_layer`, never here.
"""

from __future__ import annotations

from types import ModuleType

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from rnnlab.nn.backends import _ext, variant_ops  # variant_ops also registers the operators
from rnnlab.nn.backends.compiled import _extension_reason, _kernel
from rnnlab.nn.cells import LSTMState
from rnnlab.nn.variants import CellNoise, VariantLSTMCell

__all__ = ["kernel_unavailable", "lstm_variant", "variant_unavailable"]

_DTYPES = (torch.float32, torch.float64)
# The cell's parameters in the order the kernel takes them (None where the cell has none).
_PARAMS = (
    "weight_ih",
    "weight_hh",
    "bias",
    "weight_hr",
    "ln_ih_weight",
    "ln_hh_weight",
    "ln_c_weight",
    "ln_c_bias",
    "peephole",
)
# lstm_variant_forward's `mode`: 0 lets the kernel choose between row blocks and per-step GEMMs
# (see lstm_variant.cpp); the tests force 1 (row blocks), 2 (per step, oneDNN) and 3 (per step,
# ATen) to check each.
_AUTO = 0


def _kernels() -> ModuleType | None:
    """The compiled extension (built on first use), or None."""
    return _ext.load()


def _bf16_rows_work() -> bool:
    """Whether this CPU's bf16 ukernel works (fixed for the process, so a constant to
    torch.compile, like the extension check)."""
    module = _kernels()
    return module is not None and module.bf16_rows_work()


_bf16_rows_work._dynamo_marked_constant = True  # type: ignore[attr-defined]


def kernel_unavailable(what: str, cell_type: type, cell: object, x: Tensor) -> str | None:
    """Why ``what``, a variant kernel of ``cell_type`` cells, cannot run ``cell`` on ``x``: the
    cell's type, a tensor off the CPU, a dtype other than float32/float64 or weights of another
    dtype than x, or the extension (its check a constant to torch.compile, as for the other
    kernels); None if it can."""
    if not isinstance(cell, cell_type):
        return f"{what} runs {cell_type.__name__}, not {type(cell).__name__}"
    if x.device.type != "cpu":
        return f"{what} runs on the CPU, got a tensor on {x.device}"
    if x.dtype not in _DTYPES or cell.weight_ih.dtype != x.dtype:
        return (
            f"{what} needs float32 or float64 input and weights of one dtype, got input "
            f"{x.dtype} and weights {cell.weight_ih.dtype}"
        )
    return _extension_reason()


def variant_unavailable(cell: VariantLSTMCell, x: Tensor, *, bf16: bool = False) -> str | None:
    """Why the compiled variant kernel cannot run ``cell`` on ``x`` (None if it can): it needs
    a :class:`VariantLSTMCell`, float32 or float64 CPU tensors with weights of the same dtype,
    and the built extension (AVX-512 CPU, C++ compiler, ninja; :func:`rnnlab.nn.backends._ext.load`
    builds it on the first call). ``bf16`` (bf16 GEMM operands) also needs float32, an even
    hidden size H and output width R, and a CPU whose bf16 ukernel works."""
    reason = kernel_unavailable("the compiled variant kernel", VariantLSTMCell, cell, x)
    if reason is not None:
        return reason
    if bf16:
        H, R = cell.hidden_size, cell.output_size
        if x.dtype != torch.float32:
            return f"the variant kernel's bf16 mode needs float32, got {x.dtype}"
        if H % 2 or R % 2:
            return (
                "the variant kernel's bf16 mode needs an even hidden size and output width "
                f"(the bf16 ukernel's VNNI layout), got H = {H}, R = {R}"
            )
        if not _bf16_rows_work():
            return "this CPU's oneDNN has no working bf16 ukernel (cpublas::brgemm)"
    return None


def lstm_variant(
    cell: VariantLSTMCell,
    x: Tensor,
    state: LSTMState,
    mask: Tensor | None,
    noise: CellNoise | None,
    *,
    reverse: bool,
    bf16: bool = False,
    _mode: int = _AUTO,
) -> tuple[Tensor, LSTMState]:
    """Run ``cell`` over x (B, T, I) from ``state`` (h (B, R), c (B, H)), skipping steps where
    ``mask`` (B, T) is False (they carry the state and output zero), with ``noise``'s masks
    (None: none); backwards in time if ``reverse``. ``bf16`` rounds every GEMM operand to bf16
    (float32 accumulation; parameters, gates and states stay float32). Gradients flow to x,
    both states and every parameter of the cell. Returns (output (B, T, R), final state).

    The caller checks :func:`variant_unavailable` first."""
    noise = noise or CellNoise()
    params = [getattr(cell, name, None) for name in _PARAMS]
    masks = [None if m is None else m.to(x.dtype).contiguous() for m in noise]
    x, mask = x.contiguous(), None if mask is None else mask.contiguous()
    h0, c0 = state.h.contiguous(), state.c.contiguous()
    options = (reverse, cell.ln_eps, bf16, _mode)
    tracked = [x, h0, c0, *(p for p in params if p is not None)]
    if torch.is_grad_enabled() and any(t.requires_grad for t in tracked):
        out, h, c = _VariantLSTM.apply(x, h0, c0, mask, masks, options, *params)
    else:  # nothing is kept for a backward pass
        forward = _kernel("lstm_variant_forward", x)
        out, h, c = forward(
            x, h0, c0, params, masks, mask, reverse, cell.ln_eps, False, bf16, _mode
        )
    return out, LSTMState(h, c)


class _VariantLSTM(torch.autograd.Function):
    """A variant LSTM direction over time in C++: x (B, T, I) batch first, mask (B, T) or None,
    masks [recurrent, zone_c, zone_h] (constants), then the nine parameters of ``_PARAMS``.
    Each pass is one operator of :mod:`~rnnlab.nn.backends.variant_ops` (called directly in
    eager mode, recorded when traced): the tensors the forward did not make come back empty."""

    @staticmethod
    def forward(ctx, x, h0, c0, mask, masks, options, *params):
        reverse, eps, bf16, mode = options
        forward = _kernel("lstm_variant_forward", x)
        out, h, c, *saved = forward(
            x, h0, c0, list(params), masks, mask, reverse, eps, True, bf16, mode
        )
        ctx.options, ctx.masks, ctx.n_saved = options, masks, len(saved)
        ctx.save_for_backward(*saved, *params, mask)
        return out, h, c

    @staticmethod
    @once_differentiable
    def backward(ctx, dout, dh, dc):
        reverse, eps, bf16, mode = ctx.options
        tensors = ctx.saved_tensors
        saved, params, mask = tensors[: ctx.n_saved], tensors[ctx.n_saved : -1], tensors[-1]
        backward = _kernel("lstm_variant_backward", dout)
        dx, dh0, dc0, *dparams = backward(
            dout.contiguous(), dh.contiguous(), dc.contiguous(), list(saved), list(params),
            ctx.masks, mask, reverse, eps, ctx.needs_input_grad[0], bf16, mode,
        )  # fmt: skip
        grads = variant_ops.present([dx, *dparams])
        return grads[0], dh0, dc0, None, None, None, *grads[1:]
