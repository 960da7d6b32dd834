"""The LSTM and GRU variants' compiled kernels (``_ext/lstm_variant.h``,
``_ext/gru_variant.h``) as torch operators, ``torch.ops.rnnlab.lstm_variant_forward``,
``lstm_variant_backward``, ``gru_variant_forward`` and ``gru_variant_backward``, so that
``torch.compile`` keeps a model of variant layers in one graph (see
:mod:`rnnlab.nn.backends.ops`, which does the same for the other kernels and holds the
``rnnlab`` namespace this module adds to).

Shape legend: B batch, T time, I input features, H cell units, G = 4H, P projection size,
R = P if P > 0 else H.

An operator returns tensors only, none of them a view of an input or of another output. The
C++ returns None where an option is off and, in places, views: the forward's ``xt`` is ``x``
transposed (the very memory when B or T is 1) or, on the fused-input path, a slice of the
saved ``[x_t, h_in]`` buffer; the backward's bias, LayerNorm and peephole gradients are
slices of one sum. The operators therefore give an empty (0,) tensor for None and a copy for
a view, and :mod:`~rnnlab.nn.backends.variant_compiled` turns the empties back into None.

The fake kernels mirror the C++: which tensors the forward saves depends on the options and,
for the fused input, on how the kernel runs its GEMMs (``gemm_kind`` and ``fuse_input`` in
``lstm_variant.h``, mirrored by :func:`_fuses_input`). ``tests/test_torch_compile_variants.py``
compares every fake with the real kernel, shapes, dtypes and strides.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rnnlab.nn.backends.ops import _define, _kernels

__all__ = ["present"]

# lstm_variant.h's constants: kRowBlockWeightBytes (recurrent.h) and kFuseInputBytes.
_ROW_BLOCK_WEIGHT_BYTES = 2 << 20
_FUSE_INPUT_BYTES = 1 << 20


def present(ts) -> list[Tensor | None]:
    """An operator's tensors with its empty (0,) ones back to None (what the C++ takes and
    gives where an option is off)."""
    return [None if t is None or t.numel() == 0 else t for t in ts]


def _empty(like: Tensor, *shape: int, on: bool = True) -> Tensor:
    """A fake output of ``shape``, or the empty (0,) that stands for None where not ``on``."""
    return like.new_empty(*shape) if on else like.new_empty(0)


def _owned(result: list, like: Tensor, inputs: list) -> list[Tensor]:
    """The C++ ``result`` as an operator returns it: an empty (0,) tensor for None, and a copy
    of any tensor whose memory is an input's or an earlier output's."""
    seen = {t.untyped_storage().data_ptr() for t in inputs if t is not None and t.numel()}
    out = []
    for t in result:
        t = like.new_empty(0) if t is None else t
        ptr = t.untyped_storage().data_ptr() if t.numel() else None
        if ptr is not None and ptr in seen:
            t = t.clone(memory_format=torch.contiguous_format)
            ptr = t.untyped_storage().data_ptr()
        if ptr is not None:
            seen.add(ptr)
        out.append(t)
    return out


def _gradients_fake(dout: Tensor, states: list[Tensor], saved, params, need_dx: bool) -> list:
    """A backward's fake outputs: dx (B, T, I) over (T, B, I) memory, as the C++ makes it, or
    an empty one; the initial states' gradients; each parameter's (empty where it is None)."""
    B, T, _ = dout.shape
    I = saved[0].shape[-1]  # xt (T, B, I)
    dx = dout.new_empty(T, B, I).transpose(0, 1) if need_dx else dout.new_empty(0)
    grads = [dout.new_empty(0) if p is None else torch.empty_like(p) for p in params]
    return [dx, *(torch.empty_like(s) for s in states), *grads]


def _forward(x, h0, c0, params, noise, mask, reverse, eps, train, bf16, mode):
    result = _kernels().lstm_variant_forward(
        x, h0, c0, params, noise, mask, reverse, eps, train, bf16, mode
    )
    if train and not result[3].is_contiguous():  # xt: a slice of the fused-input buffer
        result[3] = result[3].contiguous()
    return _owned(result, x, [x, h0, c0, *params, *noise, mask])


def _fuses_input(x: Tensor, H: int, R: int, P: int, ln: bool, bf16: bool, mode: int) -> bool:
    """lstm_variant.h's ``fuse_input(gemm_kind(...))``: whether each step's GEMM also makes
    the input projection (float32, per-step GEMMs, no LayerNorm, no bf16, a small W_ih)."""
    if x.dtype != torch.float32 or bf16 or mode == 1:
        return False  # row blocks
    per_step = mode in (2, 3) or (4 * H * R + H * P) * 4 > _ROW_BLOCK_WEIGHT_BYTES
    return per_step and not ln and 4 * H * x.shape[-1] * 4 <= _FUSE_INPUT_BYTES


def _forward_fake(x, h0, c0, params, noise, mask, reverse, eps, train, bf16, mode):
    B, T, I = x.shape
    H, R = c0.shape[-1], h0.shape[-1]
    G, P = 4 * H, 0 if params[3] is None else params[3].shape[0]
    ln, rec, zone_c = params[4] is not None, noise[0] is not None, noise[1] is not None
    first = [x.new_empty(B, T, R), x.new_empty(B, R), x.new_empty(B, H)]
    if not train:
        return first
    fused = _fuses_input(x, H, R, P, ln, bf16, mode)

    def empty(*shape: int, on: bool = True) -> Tensor:
        return _empty(x, *shape, on=on)

    return [
        *first,
        empty(T, B, I),  # xt (a copy of the fused buffer's slice)
        empty(T, B, G),  # acts
        empty(T, B, G, on=ln),  # ax (normalised)
        empty(T, B, on=ln),  # rstd_x
        empty(T, B, G, on=ln),  # hhat
        empty(T, B, on=ln),  # rstd_h
        empty(T, B, H, on=ln),  # chat
        empty(T, B, on=ln),  # rstd_c
        empty(T, B, H, on=bool(P)),  # ms
        empty(T + 1, B, R),  # hs
        empty(T + 1, B, H),  # cs
        empty(T, B, R, on=rec),  # hin
        empty(T, B, H, on=zone_c),  # cn
        empty(T, B, I + R, on=fused),  # xh
    ]


_define(
    "lstm_variant_forward(Tensor x, Tensor h0, Tensor c0, Tensor?[] params, Tensor?[] noise, "
    "Tensor? mask, bool reverse, float eps, bool train, bool bf16, int mode) -> Tensor[]",
    _forward,
    _forward_fake,
)


def _backward(dout, dh, dc, saved, params, noise, mask, reverse, eps, need_dx, bf16, mode):
    saved = present(saved)
    result = _kernels().lstm_variant_backward(
        dout, dh, dc, saved, params, noise, mask, reverse, eps, need_dx, bf16, mode
    )
    return _owned(result, dout, [dout, dh, dc, *saved, *params, *noise, mask])


def _backward_fake(dout, dh, dc, saved, params, noise, mask, reverse, eps, need_dx, bf16, mode):
    return _gradients_fake(dout, [dh, dc], saved, params, need_dx)


_define(
    "lstm_variant_backward(Tensor dout, Tensor dh, Tensor dc, Tensor?[] saved, "
    "Tensor?[] params, Tensor?[] noise, Tensor? mask, bool reverse, float eps, bool need_dx, "
    "bool bf16, int mode) -> Tensor[]",
    _backward,
    _backward_fake,
)


# -- the GRU variants: saved xt, acts, rec, hs, hin, ax, rstd_x, gh, rstd_h -----------------------
def _gru_forward(x, h0, params, noise, mask, reverse, eps, train, mode):
    result = _kernels().gru_variant_forward(x, h0, params, noise, mask, reverse, eps, train, mode)
    return _owned(result, x, [x, h0, *params, *noise, mask])


def _gru_forward_fake(x, h0, params, noise, mask, reverse, eps, train, mode):
    B, T, I = x.shape
    H = h0.shape[-1]
    G, ln, rec = 3 * H, params[4] is not None, noise[0] is not None
    first = [x.new_empty(B, T, H), x.new_empty(B, H)]
    if not train:
        return first

    def empty(*shape: int, on: bool = True) -> Tensor:
        return _empty(x, *shape, on=on)

    return [
        *first,
        empty(T, B, I),  # xt
        empty(T, B, G),  # acts
        empty(T, B, H),  # rec: the candidate's recurrent term
        empty(T + 1, B, H),  # hs
        empty(T, B, H, on=rec),  # hin
        empty(T, B, G, on=ln),  # ax (normalised)
        empty(T, B, on=ln),  # rstd_x
        empty(T, B, G, on=ln),  # gh
        empty(T, B, on=ln),  # rstd_h
    ]


_define(
    "gru_variant_forward(Tensor x, Tensor h0, Tensor?[] params, Tensor?[] noise, Tensor? mask, "
    "bool reverse, float eps, bool train, int mode) -> Tensor[]",
    _gru_forward,
    _gru_forward_fake,
)


def _gru_backward(dout, dh, saved, params, noise, mask, reverse, eps, need_dx, mode):
    saved = present(saved)
    result = _kernels().gru_variant_backward(
        dout, dh, saved, params, noise, mask, reverse, eps, need_dx, mode
    )
    return _owned(result, dout, [dout, dh, *saved, *params, *noise, mask])


def _gru_backward_fake(dout, dh, saved, params, noise, mask, reverse, eps, need_dx, mode):
    return _gradients_fake(dout, [dh], saved, params, need_dx)


_define(
    "gru_variant_backward(Tensor dout, Tensor dh, Tensor?[] saved, Tensor?[] params, "
    "Tensor?[] noise, Tensor? mask, bool reverse, float eps, bool need_dx, int mode) -> Tensor[]",
    _gru_backward,
    _gru_backward_fake,
)
