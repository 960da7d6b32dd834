"""The compiled fast path and the choice of backend.

The C++ kernels (:mod:`rnnlab.nn.backends._ext`: ``lstm.cpp``, ``lstm_infer.cpp``, ``gru.cpp``) run the
algorithm of :mod:`rnnlab.nn.backends.fused` with each time loop in C++. This module decides where they can
run (:func:`compiled_unavailable`, :func:`choose`), whether their GEMMs take bf16 operands
(:func:`use_bf16`), and wraps them in autograd Functions (:func:`scan`). Shape legend: B batch,
T time, I input features, H hidden units.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from rnnlab.nn.backends import _ext
from rnnlab.nn.cells import GRUCell, LSTMCell, LSTMState, _Cell

__all__ = [
    "scan",
    "scan_pair",
    "choose",
    "compiled_unavailable",
    "use_bf16",
    "autocast_input",
    "autocast_bf16",
]

_COMPILED_DTYPES = (torch.float32, torch.float64)
_warned_fallback = False


def compiled_unavailable(cell: _Cell, x: Tensor) -> str | None:
    """Why the compiled kernels (:mod:`rnnlab.nn.backends._ext`) cannot run ``cell`` on ``x``, or None if
    they can: they cover LSTM and GRU cells, float32 and float64 CPU tensors, and need the
    extension to be built (AVX-512 CPU, C++ compiler, ninja)."""
    if not isinstance(cell, (LSTMCell, GRUCell)):
        return f"the compiled kernels cover LSTM and GRU cells, not {type(cell).__name__}"
    if x.device.type != "cpu":
        return f"the compiled kernels run on the CPU, got a tensor on {x.device}"
    if x.dtype not in _COMPILED_DTYPES or cell.weight_hh.dtype != x.dtype:
        return (
            f"the compiled kernels need float32 or float64 input and weights of one dtype, got "
            f"input {x.dtype} and weights {cell.weight_hh.dtype}"
        )
    if _ext.load() is None:
        return _ext.unavailable_reason()
    return None


def choose(cell: _Cell, x: Tensor, requested: str) -> str:
    """The fast path for ``requested`` in ("auto", "compiled", "fused"): "compiled" where the C++
    kernels can run (:func:`compiled_unavailable`), else "fused" (pure torch). A forced
    "compiled" that cannot run raises, naming the cause; "auto" warns once if the extension
    failed to build, and then uses "fused"."""
    global _warned_fallback
    if requested == "fused":
        return "fused"
    reason = compiled_unavailable(cell, x)
    if reason is None:
        return "compiled"
    if requested == "compiled":
        raise RuntimeError(
            f"backend='compiled' cannot run here: {reason}. Use backend='auto' (falls back to "
            "the pure-torch fused path) or backend='fused'."
        )
    if _ext.build_failed() and not _warned_fallback:
        _warned_fallback = True
        warnings.warn(
            f"rnnlab: using the slower pure-torch fused path because {reason}",
            RuntimeWarning,
            stacklevel=3,
        )
    return "fused"


def autocast_bf16() -> bool:
    """Whether ``torch.autocast("cpu", dtype=torch.bfloat16)`` is active."""
    return torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16


def autocast_input(x: Tensor, cell: _Cell) -> Tensor:
    """Under CPU autocast a layer's input may arrive in bf16 (from an autocast Linear); the
    recurrent layers keep float32 weights and state, so such input is cast up to them."""
    if x.dtype == torch.bfloat16 and cell.weight_hh.dtype == torch.float32 and autocast_bf16():
        return x.float()
    return x


def use_bf16(cell: _Cell, x: Tensor, backend: str, precision: str) -> bool:
    """Whether the LSTM kernels run their GEMMs in bf16: with ``precision="bf16"``, or under
    ``torch.autocast("cpu", dtype=torch.bfloat16)`` where the compiled kernels run.

    bf16 mode keeps float32 master weights, gates, cell state c and outputs: only the GEMM
    operands (x, h, the weights, the backward's gate gradients) are rounded to bf16, and oneDNN
    accumulates in fp32 on avx512_bf16. Asking for it (``precision="bf16"``) where the compiled
    kernels do not run raises, naming the cause; autocast there falls back to float32."""
    if precision == "fp32":
        return backend == "compiled" and isinstance(cell, LSTMCell) and autocast_bf16()
    if backend == "compiled" and isinstance(cell, LSTMCell) and x.dtype == torch.float32:
        return True
    why = compiled_unavailable(cell, x) if backend != "reference" else None
    why = why or f"this call uses backend {backend!r}"
    raise RuntimeError(
        f"precision='bf16' runs the LSTM's GEMMs in bf16 on the compiled kernels only "
        f"(float32 parameters, CPU), but {why}. Use backend='auto' or 'compiled' where the "
        "extension builds, or precision='fp32'."
    )


# -- compiled kernels ---------------------------------------------------------------------------
# The same algorithm as the classes above, with each whole time loop in C++
# (rnnlab/_ext/*.cpp): per step GEMMs and one vectorised pass over the gates; for float32 LSTM
# and its bf16 mode each thread runs its own batch rows through all steps, without
# synchronisation.
# Inputs and outputs stay batch first; the kernels index time themselves, so no flips.


def scan(
    cell: _Cell,
    x: Tensor,
    state: Tensor | LSTMState,
    mask: Tensor | None,
    reverse: bool,
    bf16: bool = False,
) -> tuple[Tensor, Tensor | LSTMState]:
    ext = _ext.load()
    x = x.contiguous()  # (B, T, I)
    mask = None if mask is None else mask.contiguous()  # (B, T) bool
    train = _needs_backward(x, [cell], [state])
    if isinstance(cell, LSTMCell):
        args = (cell.weight_ih, cell.weight_hh, cell.bias, mask, reverse)
        if not train and mask is None and x.dtype == torch.float32:
            # Each thread runs its batch rows through the whole loop, computing each step's
            # input projection into a buffer of its own (_ext/lstm_infer.cpp); the same
            # arithmetic as the training kernel.
            w = (cell.weight_ih, cell.weight_hh, cell.bias)
            h0, c0 = state.h.contiguous(), state.c.contiguous()
            out, h, c = ext.lstm_infer(x, h0, c0, *w, reverse, torch.get_num_threads(), bf16)
            return out, LSTMState(h, c)
        if not train:  # inference: nothing saved for a backward pass
            out, h, c = ext.lstm_forward(x, state.h, state.c, *args, False, bf16)
        else:
            out, h, c = _CompiledLSTM.apply(x, state.h, state.c, *args, bf16)
        return out, LSTMState(h, c)
    args = (cell.weight_ih, cell.weight_hh, cell.bias, cell.bias_hn, mask, reverse)
    if not train:
        out, h = ext.gru_forward(x, state, *args, False)
        return out, h
    return _CompiledGRU.apply(x, state, *args)


def scan_pair(
    cells: tuple[_Cell, _Cell],
    x: Tensor,
    states: tuple[Tensor | LSTMState, Tensor | LSTMState],
    mask: Tensor | None,
    bf16: bool = False,
) -> tuple[Tensor, list[LSTMState]] | None:
    """Both directions of a bidirectional LSTM layer in one call, for unpadded float32
    inference (recurrent.cpp's lstm_infer_pair: one direction per thread, written straight into
    the (B, T, 2H) output). Returns (output, [final forward, final reverse]), or None where
    that kernel does not apply (training, padding, GRU/RNN, float64): then run :func:`scan` per
    direction."""
    if not all(isinstance(cell, LSTMCell) for cell in cells):
        return None
    if mask is not None or x.dtype != torch.float32 or _needs_backward(x, cells, states):
        return None
    args = []
    for cell, state in zip(cells, states, strict=True):
        args += [state.h.contiguous(), state.c.contiguous()]
        args += [cell.weight_ih, cell.weight_hh, cell.bias]
    out, h_f, c_f, h_r, c_r = _ext.load().lstm_infer_pair(
        x.contiguous(), *args, torch.get_num_threads(), bf16
    )
    return out, [LSTMState(h_f, c_f), LSTMState(h_r, c_r)]


def _needs_backward(
    x: Tensor, cells: Sequence[_Cell], states: Sequence[Tensor | LSTMState]
) -> bool:
    """Whether autograd will want gradients of this scan: of x, the cells' weights or the
    initial states. Otherwise the kernels skip saving what a backward pass needs."""
    if not torch.is_grad_enabled():
        return False
    tensors = [x, *(p for cell in cells for p in cell.parameters())]
    for state in states:
        tensors += list(state) if isinstance(state, LSTMState) else [state]
    return any(t.requires_grad for t in tensors)


class _CompiledLSTM(torch.autograd.Function):
    """LSTM over time in C++; x (B, T, I) batch first, mask (B, T) or None."""

    @staticmethod
    def forward(ctx, x, h0, c0, w_ih, w_hh, b, mask, reverse, bf16):
        out, h, c, acts, hs, cs, xt = _ext.load().lstm_forward(
            x, h0, c0, w_ih, w_hh, b, mask, reverse, True, bf16
        )  # in bf16 mode hs and xt are the bf16 GEMM operands
        ctx.reverse = reverse
        ctx.save_for_backward(xt, w_ih, w_hh, acts, hs, cs, mask)
        return out, h, c

    @staticmethod
    @once_differentiable
    def backward(ctx, dout, dh, dc):
        xt, w_ih, w_hh, acts, hs, cs, mask = ctx.saved_tensors
        dx, dh0, dc0, dw_ih, dw_hh, db = _ext.load().lstm_backward(
            dout, dh, dc, xt, w_ih, w_hh, acts, hs, cs, mask, ctx.reverse, ctx.needs_input_grad[0]
        )
        return dx, dh0, dc0, dw_ih, dw_hh, db, None, None, None


class _CompiledGRU(torch.autograd.Function):
    """GRU over time in C++; x (B, T, I) batch first, mask (B, T) or None."""

    @staticmethod
    def forward(ctx, x, h0, w_ih, w_hh, b, b_hn, mask, reverse):
        out, h, acts, ghn, hs, xt = _ext.load().gru_forward(
            x, h0, w_ih, w_hh, b, b_hn, mask, reverse, True
        )
        ctx.reverse = reverse
        ctx.save_for_backward(xt, w_ih, w_hh, acts, ghn, hs, mask)
        return out, h

    @staticmethod
    @once_differentiable
    def backward(ctx, dout, dh):
        xt, w_ih, w_hh, acts, ghn, hs, mask = ctx.saved_tensors
        dx, dh0, dw_ih, dw_hh, db, db_hn = _ext.load().gru_backward(
            dout, dh, xt, w_ih, w_hh, acts, ghn, hs, mask, ctx.reverse, ctx.needs_input_grad[0]
        )
        return dx, dh0, dw_ih, dw_hh, db, db_hn, None, None
