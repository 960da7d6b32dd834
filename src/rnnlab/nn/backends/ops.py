"""The compiled kernels as torch operators, ``torch.ops.rnnlab.*``, so ``torch.compile`` can
keep a model of rnnlab layers in one graph.

Shape legend: B batch, T time, I input features, H hidden units, G gate blocks (LSTM 4, GRU 3,
minGRU 2, minLSTM 3), S = T + 1 saved states.

Dynamo cannot look inside a pybind11 function: a direct call of the extension
(:mod:`rnnlab.nn.backends._ext`) ends the graph there (a graph break; an error under
``fullgraph=True``). Registered with ``torch.library`` each kernel is one opaque node instead:
the real kernel runs on CPU tensors, and the fake kernel beside it (``register_fake``) gives
the shapes, dtypes and strides of what it returns, which is all the compiler needs to trace
around it. Eager and compiled runs take one path: a traced call
(:func:`rnnlab.nn.backends.compiled._kernel`) records the operator, whose CPU kernel is the
function a plain eager call runs directly (:data:`KERNELS`, name -> function), sparing it the
dispatcher's boxing of the arguments.

Every kernel is functional: it neither mutates nor returns its inputs. Where the C++ returns
``xt`` (the time-major input the backward reads) as a view of ``x`` (``x.transpose(0, 1)``
is already contiguous when B or T is 1) the operator returns a copy, and where the backward
kernel returns no dx (``need_dx`` false) it returns an empty (0,) tensor, since an operator
cannot return None in a tensor's place. Gradients are not the operators' business: the
autograd Functions of :mod:`~rnnlab.nn.backends.compiled` call a forward operator and, in
their backward, the matching backward operator; ``torch.compile`` traces those Functions.

The fakes mirror the C++ (``_ext/lstm.cpp``, ``lstm_infer.cpp``, ``gru.cpp``, ``minscan.cpp``)
line for line, strides included: the backward's dx is (T, B, I) memory seen as (B, T, I).
``tests/test_torch_compile.py`` checks each fake against the real kernel.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from rnnlab.nn.backends import _ext

__all__ = ["KERNELS", "LIBRARY"]

# A fragment of the namespace, so that other modules may add operators of their own to it.
LIBRARY = torch.library.Library("rnnlab", "FRAGMENT")


def _kernels():
    module = _ext.load()
    if module is None:  # the routing table sends nothing here then; a direct call gets this
        raise RuntimeError(f"rnnlab's compiled kernels cannot run: {_ext.unavailable_reason()}")
    return module


def _own(t: Tensor, x: Tensor) -> Tensor:
    """``t``, copied if it shares ``x``'s memory: an operator may not return a view of an
    input."""
    if t.untyped_storage().data_ptr() == x.untyped_storage().data_ptr():
        return t.clone(memory_format=torch.contiguous_format)
    return t


def _dx(dx: Tensor | None, like: Tensor) -> Tensor:
    return like.new_empty(0) if dx is None else dx


KERNELS: dict[str, Callable[..., Tensor | tuple[Tensor, ...]]] = {}  # name -> its CPU kernel


def _define(schema: str, kernel, fake) -> None:
    name = schema.split("(", 1)[0]
    LIBRARY.define(schema)
    LIBRARY.impl(name, kernel, "CPU")
    torch.library.register_fake(f"rnnlab::{name}", fake, lib=LIBRARY)
    KERNELS[name] = kernel


def _empty_dx(need_dx: bool, dpre: Tensor, xt: Tensor, dtype: torch.dtype) -> Tensor:
    """The fake dx: (B, T, I) over (T, B, I) memory, as ``product(...).view().transpose()``."""
    T, B, _ = dpre.shape
    if not need_dx:
        return dpre.new_empty(0)
    return dpre.new_empty(T, B, xt.shape[-1], dtype=dtype).transpose(0, 1)


# -- LSTM ---------------------------------------------------------------------------------------
_LSTM_ARGS = "Tensor x, Tensor h0, Tensor c0, Tensor w_ih, Tensor w_hh, Tensor bias"


def _lstm_forward(x, h0, c0, w_ih, w_hh, bias, mask, reverse, bf16):
    out, h, c = _kernels().lstm_forward(x, h0, c0, w_ih, w_hh, bias, mask, reverse, False, bf16)
    return out, h, c


def _lstm_forward_fake(x, h0, c0, w_ih, w_hh, bias, mask, reverse, bf16):
    B, T, _ = x.shape
    H = h0.shape[-1]
    return x.new_empty(B, T, H), x.new_empty(B, H), x.new_empty(B, H)


_define(
    f"lstm_forward({_LSTM_ARGS}, Tensor? mask, bool reverse, bool bf16) "
    "-> (Tensor, Tensor, Tensor)",
    _lstm_forward,
    _lstm_forward_fake,
)


def _lstm_train(x, h0, c0, w_ih, w_hh, bias, mask, reverse, bf16):
    kernels = _kernels()
    out, h, c, acts, hs, cs, xt = kernels.lstm_forward(
        x, h0, c0, w_ih, w_hh, bias, mask, reverse, True, bf16
    )
    return out, h, c, acts, hs, cs, _own(xt, x)


# kSmallInputs of _ext/recurrent.h: x of at most this width is added to the gate rows in float32
# by the row-block kernels, so even in bf16 mode they keep (and return) x in float32.
SMALL_INPUTS = 4


def _x_operand_dtype(x: Tensor, H: int, bf16: bool) -> torch.dtype:
    """The dtype of the xt that lstm_train returns: bf16 in bf16 mode (the GEMM operand), except
    a narrow x in the row blocks (H even, the bf16 ukernel working), which no GEMM reads."""
    if not bf16:
        return x.dtype
    narrow_rows = x.shape[-1] <= SMALL_INPUTS and H % 2 == 0 and _kernels().bf16_rows_work()
    return x.dtype if narrow_rows else torch.bfloat16


def _lstm_train_fake(x, h0, c0, w_ih, w_hh, bias, mask, reverse, bf16):
    B, T, I = x.shape
    H = h0.shape[-1]
    operand = torch.bfloat16 if bf16 else x.dtype  # bf16 mode keeps the GEMM operands
    return (
        x.new_empty(B, T, H),  # out
        x.new_empty(B, H),  # h_n
        x.new_empty(B, H),  # c_n
        x.new_empty(T, B, 4 * H),  # acts: activated i, f, g, o
        x.new_empty(T + 1, B, H, dtype=operand),  # hs
        x.new_empty(T + 1, B, H),  # cs
        x.new_empty(T, B, I, dtype=_x_operand_dtype(x, H, bf16)),  # xt
    )


_define(
    f"lstm_train({_LSTM_ARGS}, Tensor? mask, bool reverse, bool bf16) "
    "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)",
    _lstm_train,
    _lstm_train_fake,
)


def _lstm_backward(dout, dh, dc, xt, w_ih, w_hh, acts, hs, cs, mask, reverse, need_dx):
    dx, dh0, dc0, dw_ih, dw_hh, db = _kernels().lstm_backward(
        dout, dh, dc, xt, w_ih, w_hh, acts, hs, cs, mask, reverse, need_dx
    )
    return _dx(dx, acts), dh0, dc0, dw_ih, dw_hh, db


def _lstm_backward_fake(dout, dh, dc, xt, w_ih, w_hh, acts, hs, cs, mask, reverse, need_dx):
    B = acts.shape[1]
    H = w_hh.shape[1]
    return (
        _empty_dx(need_dx, acts, xt, acts.dtype),
        acts.new_empty(B, H),  # dh0
        acts.new_empty(B, H),  # dc0
        acts.new_empty(w_ih.shape),  # dW_ih (4H, I)
        acts.new_empty(w_hh.shape),  # dW_hh (4H, H)
        acts.new_empty(4 * H),  # db
    )


_define(
    "lstm_backward(Tensor dout, Tensor dh, Tensor dc, Tensor xt, Tensor w_ih, Tensor w_hh, "
    "Tensor acts, Tensor hs, Tensor cs, Tensor? mask, bool reverse, bool need_dx) "
    "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)",
    _lstm_backward,
    _lstm_backward_fake,
)


def _lstm_infer(x, h0, c0, w_ih, w_hh, bias, reverse, bf16):
    threads = torch.get_num_threads()
    out, h, c = _kernels().lstm_infer(x, h0, c0, w_ih, w_hh, bias, reverse, threads, bf16)
    return out, h, c


def _lstm_infer_fake(x, h0, c0, w_ih, w_hh, bias, reverse, bf16):
    return _lstm_forward_fake(x, h0, c0, w_ih, w_hh, bias, None, reverse, bf16)


_define(
    f"lstm_infer({_LSTM_ARGS}, bool reverse, bool bf16) -> (Tensor, Tensor, Tensor)",
    _lstm_infer,
    _lstm_infer_fake,
)


def _lstm_infer_pair(x, h0f, c0f, w_ih_f, w_hh_f, b_f, h0r, c0r, w_ih_r, w_hh_r, b_r, bf16):
    args = (h0f, c0f, w_ih_f, w_hh_f, b_f, h0r, c0r, w_ih_r, w_hh_r, b_r)
    out, h_f, c_f, h_r, c_r = _kernels().lstm_infer_pair(x, *args, torch.get_num_threads(), bf16)
    return out, h_f, c_f, h_r, c_r


def _lstm_infer_pair_fake(x, h0f, c0f, w_ih_f, w_hh_f, b_f, h0r, c0r, w_ih_r, w_hh_r, b_r, bf16):
    B, T, _ = x.shape
    H = h0f.shape[-1]
    states = [x.new_empty(B, H) for _ in range(4)]  # h_f, c_f, h_r, c_r
    return (x.new_empty(B, T, 2 * H), *states)


_define(
    "lstm_infer_pair(Tensor x, Tensor h0f, Tensor c0f, Tensor w_ih_f, Tensor w_hh_f, "
    "Tensor bias_f, Tensor h0r, Tensor c0r, Tensor w_ih_r, Tensor w_hh_r, Tensor bias_r, "
    "bool bf16) -> (Tensor, Tensor, Tensor, Tensor, Tensor)",
    _lstm_infer_pair,
    _lstm_infer_pair_fake,
)


# -- GRU ----------------------------------------------------------------------------------------
_GRU_ARGS = "Tensor x, Tensor h0, Tensor w_ih, Tensor w_hh, Tensor bias, Tensor b_hn, Tensor? mask"


def _gru_forward(x, h0, w_ih, w_hh, bias, b_hn, mask, reverse):
    out, h = _kernels().gru_forward(x, h0, w_ih, w_hh, bias, b_hn, mask, reverse, False)
    return out, h


def _gru_forward_fake(x, h0, w_ih, w_hh, bias, b_hn, mask, reverse):
    B, T, _ = x.shape
    H = h0.shape[-1]
    return x.new_empty(B, T, H), x.new_empty(B, H)


_define(
    f"gru_forward({_GRU_ARGS}, bool reverse) -> (Tensor, Tensor)", _gru_forward, _gru_forward_fake
)


def _gru_infer(x, h0, w_ih, w_hh, bias, b_hn, reverse):
    threads = torch.get_num_threads()
    out, h = _kernels().gru_infer(x, h0, w_ih, w_hh, bias, b_hn, reverse, threads)
    return out, h


def _gru_infer_fake(x, h0, w_ih, w_hh, bias, b_hn, reverse):
    return _gru_forward_fake(x, h0, w_ih, w_hh, bias, b_hn, None, reverse)


_define(
    "gru_infer(Tensor x, Tensor h0, Tensor w_ih, Tensor w_hh, Tensor bias, Tensor b_hn, "
    "bool reverse) -> (Tensor, Tensor)",
    _gru_infer,
    _gru_infer_fake,
)


def _gru_train(x, h0, w_ih, w_hh, bias, b_hn, mask, reverse):
    out, h, acts, ghn, hs, xt = _kernels().gru_forward(
        x, h0, w_ih, w_hh, bias, b_hn, mask, reverse, True
    )
    return out, h, acts, ghn, hs, _own(xt, x)


def _gru_train_fake(x, h0, w_ih, w_hh, bias, b_hn, mask, reverse):
    B, T, I = x.shape
    H = h0.shape[-1]
    return (
        x.new_empty(B, T, H),  # out
        x.new_empty(B, H),  # h_n
        x.new_empty(T, B, 3 * H),  # acts: activated r, z, n
        x.new_empty(T, B, H),  # ghn: W_hn h + b_hn
        x.new_empty(T + 1, B, H),  # hs
        x.new_empty(T, B, I),  # xt
    )


_define(
    f"gru_train({_GRU_ARGS}, bool reverse) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)",
    _gru_train,
    _gru_train_fake,
)


def _gru_backward(dout, dh, xt, w_ih, w_hh, acts, ghn, hs, mask, reverse, need_dx):
    dx, dh0, dw_ih, dw_hh, db, db_hn = _kernels().gru_backward(
        dout, dh, xt, w_ih, w_hh, acts, ghn, hs, mask, reverse, need_dx
    )
    return _dx(dx, acts), dh0, dw_ih, dw_hh, db, db_hn


def _gru_backward_fake(dout, dh, xt, w_ih, w_hh, acts, ghn, hs, mask, reverse, need_dx):
    B = acts.shape[1]
    H = w_hh.shape[1]
    return (
        _empty_dx(need_dx, acts, xt, acts.dtype),
        acts.new_empty(B, H),  # dh0
        acts.new_empty(w_ih.shape),  # dW_ih (3H, I)
        acts.new_empty(w_hh.shape),  # dW_hh (3H, H)
        acts.new_empty(3 * H),  # db
        acts.new_empty(H),  # db_hn
    )


_define(
    "gru_backward(Tensor dout, Tensor dh, Tensor xt, Tensor w_ih, Tensor w_hh, Tensor acts, "
    "Tensor ghn, Tensor hs, Tensor? mask, bool reverse, bool need_dx) "
    "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)",
    _gru_backward,
    _gru_backward_fake,
)


# -- minGRU / minLSTM ---------------------------------------------------------------------------
def _min_scan_forward(k, bias, h0, mask, reverse, kind):
    return _kernels().min_scan_forward(k, bias, h0, mask, reverse, kind)


def _min_scan_forward_fake(k, bias, h0, mask, reverse, kind):
    B, T, _ = k.shape
    return k.new_empty(B, T, h0.shape[-1])  # h


_define(
    "min_scan_forward(Tensor k, Tensor bias, Tensor h0, Tensor? mask, bool reverse, int kind) "
    "-> Tensor",
    _min_scan_forward,
    _min_scan_forward_fake,
)


def _min_scan_backward(k, bias, h0, h, dh, mask, reverse, kind):
    dk, dh0, db = _kernels().min_scan_backward(k, bias, h0, h, dh, mask, reverse, kind)
    return dk, dh0, db


def _min_scan_backward_fake(k, bias, h0, h, dh, mask, reverse, kind):
    return torch.empty_like(k), torch.empty_like(h0), k.new_empty(bias.shape)  # dk, dh0, db


_define(
    "min_scan_backward(Tensor k, Tensor bias, Tensor h0, Tensor h, Tensor dh, Tensor? mask, "
    "bool reverse, int kind) -> (Tensor, Tensor, Tensor)",
    _min_scan_backward,
    _min_scan_backward_fake,
)
