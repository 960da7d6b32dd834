"""The compiled kernels: autograd Functions and inference calls around the C++ extension.

The kernels (:mod:`rnnlab.nn.backends._ext`: ``lstm.cpp``, ``lstm_infer.cpp``, ``gru.cpp``,
bound in ``module.cpp``, with the shared helpers and layout notes in ``recurrent.h``) run the
algorithm of :mod:`rnnlab.nn.backends.fused` with each whole time loop in C++: per step GEMMs
and one vectorised pass over the gates; for float32 LSTM and its bf16 mode each thread runs its
own batch rows through all steps, without synchronisation. Inputs and outputs stay batch first;
the kernels index time themselves, so nothing is flipped. minGRU and minLSTM (``minscan.cpp``)
keep the parallel path's input GEMM in torch and run only their elementwise time loop in C++,
forwards and backwards, reading the gates' pre-activations once per direction.

Every kernel is a torch operator, ``torch.ops.rnnlab.*`` (:mod:`rnnlab.nn.backends.ops`), so
``torch.compile`` sees each one as a single opaque node and a model of rnnlab layers compiles
without a graph break. The autograd Functions below pair a forward operator with its backward
operator, and Dynamo traces them. :func:`_kernel` picks, per call, the operator (whenever
something traces) or the operator's own kernel function (a plain eager call).

:func:`compiled_unavailable` says where they cannot run. Which of the functions below runs a
call is decided by :func:`rnnlab.nn.backends.dispatch.scan_layer`, never here.

Shape legend: B batch, T time, I input features, H hidden units.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from rnnlab.nn.backends import _ext, ops
from rnnlab.nn.backends.parallel import direction_output
from rnnlab.nn.cells import Cell, GRUCell, LSTMCell, LSTMState
from rnnlab.nn.mincells import MinCell, MinGRUCell, MinLSTMCell

__all__ = [
    "compiled_unavailable",
    "lstm_train",
    "lstm_forward",
    "lstm_infer",
    "lstm_infer_pair",
    "gru_train",
    "gru_forward",
    "gru_infer",
    "mingru",
    "minlstm",
]

_COMPILED_DTYPES = (torch.float32, torch.float64)


def compiled_unavailable(cell: Cell | MinCell, x: Tensor) -> str | None:
    """Why the compiled kernels cannot run ``cell`` on ``x``, or None if they can: they cover
    LSTM, GRU, minGRU and minLSTM cells, float32 and float64 CPU tensors, and need the extension
    to be built (AVX-512 CPU, C++ compiler, ninja; :func:`rnnlab.nn.backends._ext.load` builds
    it on the first call). Public as :func:`rnnlab.nn.backends.compiled_unavailable`."""
    if not isinstance(cell, (LSTMCell, GRUCell, MinCell)):
        return (
            "the compiled kernels cover LSTM, GRU, minGRU and minLSTM cells, not "
            f"{type(cell).__name__}"
        )
    if x.device.type != "cpu":
        return f"the compiled kernels run on the CPU, got a tensor on {x.device}"
    if x.dtype not in _COMPILED_DTYPES or cell.weight_ih.dtype != x.dtype:
        return (
            f"the compiled kernels need float32 or float64 input and weights of one dtype, got "
            f"input {x.dtype} and weights {cell.weight_ih.dtype}"
        )
    return _extension_reason()


def _extension_reason() -> str | None:
    """Why the extension cannot be used here (None: it is loaded), building it on the first
    call. The answer is fixed for the process (:func:`rnnlab.nn.backends._ext.build` remembers
    it), so ``torch.compile`` may call this while tracing and keep the answer as a constant,
    which is what the mark below tells Dynamo: the file-system work, the lock and the build of
    the first call then happen outside the graph, and a model compiles with
    ``fullgraph=True`` even when no eager call has loaded the extension first."""
    return None if _ext.load() is not None else _ext.unavailable_reason()


# The mark that torch.compiler.assume_constant_result(_extension_reason) sets, set here without
# that call, which imports torch._dynamo (about a second) when rnnlab is imported;
# tests/test_torch_compile.py checks that torch still marks constant functions this way.
_extension_reason._dynamo_marked_constant = True  # type: ignore[attr-defined]


def _kernel(name: str, x: Tensor) -> Callable[..., Any]:
    """The kernel ``name`` of :mod:`~rnnlab.nn.backends.ops` for a call on ``x``: the operator
    ``torch.ops.rnnlab.<name>`` when something traces the call (torch.compile or torch.export,
    a dispatch mode such as FakeTensorMode, a tensor subclass), so that the tracer records the
    operator and its fake kernel gives the shapes; in a plain eager call, the operator's own
    kernel, the same function the dispatcher would run, called directly. The dispatcher's
    boxing of the arguments costs 10-40 us a call here, nothing next to a layer over a sequence
    but 4-6% of a one-token generation step of minGRU or minLSTM at H = 512
    (benchmarks/results_compile.txt)."""
    if torch.compiler.is_compiling() or type(x) is not Tensor or _dispatch_modes():
        return getattr(torch.ops.rnnlab, name)
    return ops.KERNELS[name]


def _dispatch_modes() -> int:
    """How many torch dispatch modes (FakeTensorMode, make_fx's proxy mode...) are active."""
    return torch._C._len_torch_dispatch_stack()


# -- LSTM ---------------------------------------------------------------------------------------
def lstm_train(
    cell: LSTMCell, x: Tensor, state: LSTMState, mask: Tensor | None, *, reverse: bool, bf16: bool
) -> tuple[Tensor, LSTMState]:
    """One direction over x (B, T, I), keeping what the backward needs (``lstm_forward`` with
    ``train=True``, then ``lstm_backward``). ``mask`` (B, T) bool or None; ``bf16`` rounds the
    GEMM operands to bf16 (float32 only). Returns (output (B, T, H), final state)."""
    x, mask = x.contiguous(), None if mask is None else mask.contiguous()
    w = (cell.weight_ih, cell.weight_hh, cell.bias)
    out, h, c = _CompiledLSTM.apply(x, state.h, state.c, *w, mask, reverse, bf16)
    return out, LSTMState(h, c)


def lstm_forward(
    cell: LSTMCell, x: Tensor, state: LSTMState, mask: Tensor | None, *, reverse: bool, bf16: bool
) -> tuple[Tensor, LSTMState]:
    """As :func:`lstm_train` for inference: the training kernel with nothing saved for a
    backward pass (any mask, float32 or float64)."""
    x, mask = x.contiguous(), None if mask is None else mask.contiguous()
    w = (cell.weight_ih, cell.weight_hh, cell.bias)
    out, h, c = _kernel("lstm_forward", x)(x, state.h, state.c, *w, mask, reverse, bf16)
    return out, LSTMState(h, c)


def lstm_infer(
    cell: LSTMCell, x: Tensor, state: LSTMState, *, reverse: bool, bf16: bool
) -> tuple[Tensor, LSTMState]:
    """Unpadded float32 inference (``lstm_infer.cpp``): each thread runs its batch rows through
    the whole loop, computing each step's input projection into a buffer of its own; the same
    arithmetic as the training kernel."""
    w = (cell.weight_ih, cell.weight_hh, cell.bias)
    h0, c0 = state.h.contiguous(), state.c.contiguous()
    out, h, c = _kernel("lstm_infer", x)(x.contiguous(), h0, c0, *w, reverse, bf16)
    return out, LSTMState(h, c)


def lstm_infer_pair(
    cells: tuple[LSTMCell, LSTMCell],
    x: Tensor,
    states: tuple[LSTMState, LSTMState],
    *,
    bf16: bool,
) -> tuple[Tensor, list[LSTMState]]:
    """Both directions of a bidirectional layer in one call, for unpadded float32 inference
    (``lstm_infer.cpp``'s ``lstm_infer_pair``: the thread team split between the directions,
    each written straight into its half of the output). Returns (output (B, T, 2H),
    [final forward state, final backward state])."""
    args = []
    for cell, state in zip(cells, states, strict=True):
        args += [state.h.contiguous(), state.c.contiguous()]
        args += [cell.weight_ih, cell.weight_hh, cell.bias]
    out, h_f, c_f, h_r, c_r = _kernel("lstm_infer_pair", x)(x.contiguous(), *args, bf16)
    return out, [LSTMState(h_f, c_f), LSTMState(h_r, c_r)]


# -- GRU ----------------------------------------------------------------------------------------
def gru_train(
    cell: GRUCell, x: Tensor, state: Tensor, mask: Tensor | None, *, reverse: bool
) -> tuple[Tensor, Tensor]:
    """One GRU direction over x (B, T, I) from state (B, H), keeping what the backward needs
    (``gru_forward`` with ``train=True``, then ``gru_backward``)."""
    x, mask = x.contiguous(), None if mask is None else mask.contiguous()
    args = (cell.weight_ih, cell.weight_hh, cell.bias, cell.bias_hn, mask, reverse)
    return _CompiledGRU.apply(x, state, *args)


def gru_forward(
    cell: GRUCell, x: Tensor, state: Tensor, mask: Tensor | None, *, reverse: bool
) -> tuple[Tensor, Tensor]:
    """As :func:`gru_train` for inference: nothing saved for a backward pass."""
    x, mask = x.contiguous(), None if mask is None else mask.contiguous()
    args = (cell.weight_ih, cell.weight_hh, cell.bias, cell.bias_hn, mask, reverse)
    return _kernel("gru_forward", x)(x, state, *args)


def gru_infer(cell: GRUCell, x: Tensor, state: Tensor, *, reverse: bool) -> tuple[Tensor, Tensor]:
    """Unpadded float32 inference (``gru.cpp``'s ``gru_infer``): as :func:`lstm_infer`, each
    thread runs its batch rows through the whole loop with per-step GEMMs into buffers of its
    own; the same arithmetic as :func:`gru_forward`."""
    args = (cell.weight_ih, cell.weight_hh, cell.bias, cell.bias_hn, reverse)
    return _kernel("gru_infer", x)(x.contiguous(), state.contiguous(), *args)


# -- minGRU / minLSTM ---------------------------------------------------------------------------
def mingru(
    cell: MinGRUCell, x: Tensor, state: Tensor, mask: Tensor | None, *, reverse: bool, bf16: bool
) -> tuple[Tensor, Tensor]:
    """One minGRU direction over x (B, T, I) from state (B, H): the input GEMM of the parallel
    path without its bias (:func:`_project`, bf16 operands if ``bf16``), then ``minscan.cpp``'s
    time loop, which adds the bias, forwards and (under autograd) backwards. Training and inference
    alike: without grad nothing is kept. Returns (output (B, T, H), zero at steps where ``mask``
    (B, T) is False, final state (B, H))."""
    return _min_scan(cell, x, state, mask, reverse=reverse, bf16=bf16, kind=0)


def minlstm(
    cell: MinLSTMCell, x: Tensor, state: Tensor, mask: Tensor | None, *, reverse: bool, bf16: bool
) -> tuple[Tensor, Tensor]:
    """One minLSTM direction, as :func:`mingru`."""
    return _min_scan(cell, x, state, mask, reverse=reverse, bf16=bf16, kind=1)


def _min_scan(
    cell: MinCell,
    x: Tensor,
    state: Tensor,
    mask: Tensor | None,
    *,
    reverse: bool,
    bf16: bool,
    kind: int,
) -> tuple[Tensor, Tensor]:
    mask = None if mask is None else mask.contiguous()
    args = (cell.weight_ih, cell.bias, state.contiguous(), mask, reverse, kind, bf16)
    h = _CompiledMinLayer.apply(x, *args)  # (B, T, H)
    return direction_output(h, mask, reverse=reverse)


def _project(x: Tensor, weight: Tensor, bf16: bool) -> Tensor:
    """x (B, T, I) W^T -> (B, T, G*H) float32, without the bias (the time loop adds it); bf16
    operands when ``bf16``, as :func:`rnnlab.nn.backends.parallel.input_projection`."""
    if bf16:
        return (x.bfloat16() @ weight.bfloat16().T).float()
    return x @ weight.T


class _CompiledMinLayer(torch.autograd.Function):
    """A minGRU / minLSTM direction: the input GEMM k = x W^T (B, T, G*H), then the recurrence
    in C++, which adds the bias as it reads k and returns dL/db with dk, so the bias costs
    neither a broadcast copy into the GEMM's output nor a reduction of dk (minscan.cpp)."""

    @staticmethod
    def forward(ctx, x, weight, bias, h0, mask, reverse, kind, bf16):
        k = _project(x, weight, bf16).contiguous()  # (B, T, G*H)
        h = _kernel("min_scan_forward", k)(k, bias, h0, mask, reverse, kind)
        ctx.reverse, ctx.kind, ctx.bf16 = reverse, kind, bf16
        ctx.save_for_backward(x, weight, bias, k, h0, h, mask)
        return h

    @staticmethod
    @once_differentiable
    def backward(ctx, dh):
        x, weight, bias, k, h0, h, mask = ctx.saved_tensors
        dk, dh0, db = _kernel("min_scan_backward", k)(
            k, bias, h0, h, dh.contiguous(), mask, ctx.reverse, ctx.kind
        )
        dk2, w, x2 = dk.flatten(0, 1), weight, x.reshape(-1, x.shape[-1])  # (B*T, G*H), (B*T, I)
        if ctx.bf16:  # the GEMMs' gradients in bf16 too, as autograd gives them
            dk2, w, x2 = dk2.bfloat16(), w.bfloat16(), x2.bfloat16()
        dx = (dk2 @ w).float().view_as(x) if ctx.needs_input_grad[0] else None  # (B, T, I)
        dw = (dk2.T @ x2).float() if ctx.needs_input_grad[1] else None  # (G*H, I)
        return dx, dw, db, dh0, None, None, None, None


class _CompiledLSTM(torch.autograd.Function):
    """LSTM over time in C++; x (B, T, I) batch first, mask (B, T) or None."""

    @staticmethod
    def forward(ctx, x, h0, c0, w_ih, w_hh, b, mask, reverse, bf16):
        out, h, c, acts, hs, cs, xt = _kernel("lstm_train", x)(
            x, h0, c0, w_ih, w_hh, b, mask, reverse, bf16
        )  # in bf16 mode hs and xt are the bf16 GEMM operands
        ctx.reverse = reverse
        ctx.save_for_backward(xt, w_ih, w_hh, acts, hs, cs, mask)
        return out, h, c

    @staticmethod
    @once_differentiable
    def backward(ctx, dout, dh, dc):
        xt, w_ih, w_hh, acts, hs, cs, mask = ctx.saved_tensors
        need_dx = ctx.needs_input_grad[0]
        dx, dh0, dc0, dw_ih, dw_hh, db = _kernel("lstm_backward", acts)(
            dout, dh, dc, xt, w_ih, w_hh, acts, hs, cs, mask, ctx.reverse, need_dx
        )
        dx = dx if need_dx else None  # the operator returns an empty tensor in its place
        return dx, dh0, dc0, dw_ih, dw_hh, db, None, None, None


class _CompiledGRU(torch.autograd.Function):
    """GRU over time in C++; x (B, T, I) batch first, mask (B, T) or None."""

    @staticmethod
    def forward(ctx, x, h0, w_ih, w_hh, b, b_hn, mask, reverse):
        out, h, acts, ghn, hs, xt = _kernel("gru_train", x)(
            x, h0, w_ih, w_hh, b, b_hn, mask, reverse
        )
        ctx.reverse = reverse
        ctx.save_for_backward(xt, w_ih, w_hh, acts, ghn, hs, mask)
        return out, h

    @staticmethod
    @once_differentiable
    def backward(ctx, dout, dh):
        xt, w_ih, w_hh, acts, ghn, hs, mask = ctx.saved_tensors
        need_dx = ctx.needs_input_grad[0]
        dx, dh0, dw_ih, dw_hh, db, db_hn = _kernel("gru_backward", acts)(
            dout, dh, xt, w_ih, w_hh, acts, ghn, hs, mask, ctx.reverse, need_dx
        )
        dx = dx if need_dx else None
        return dx, dh0, dw_ih, dw_hh, db, db_hn, None, None
