"""The fast path: one direction of one layer, with hand-written backpropagation through time.

Shape legend: B batch, T time, I input features, H hidden units.

Each scan is a ``torch.autograd.Function`` that works on time-major tensors in processing order
(a backward direction is flipped in time before it comes in), so every step's slice is
contiguous. What makes it faster than looping over the cell under autograd:

* the input projection of all T steps is one GEMM, ``(T*B, I) @ (I, G*H)``;
* the forward saves the activated gates, so the backward needs no recomputation, and every
  element-wise factor that does not depend on the incoming gradient (sigmoid and tanh
  derivatives, ``o * (1 - tanh(c)^2)``, ...) is computed for all steps at once before the loop;
* inside the backward loop only the recurrence remains: a few element-wise ops and one
  ``(B, G*H) @ (G*H, H)`` product per step;
* the weight gradients are single GEMMs over all steps after the loop:
  ``dW_hh = dGates^T @ H_prev`` and ``dW_ih = dGates^T @ X``, ``(G*H, T*B) @ (T*B, .)``.

Padded steps (``mask`` False) keep the carried state and output zero, as in the reference loop:
``h_t = where(m, h_new, h_{t-1})``. In the backward, the gradient reaching a padded step's state
passes straight to the previous step and its gates get no gradient.

The parameters are the cells' own (:mod:`rnnlab.cells`), so the reference loop and this path are
the same model; ``tests/test_fused.py`` checks outputs, final states and every gradient.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from rnnlab import _ext
from rnnlab._gemm import linear
from rnnlab.cells import GRUCell, LSTMCell, LSTMState, RNNCell, _Cell

__all__ = ["scan", "choose", "compiled_unavailable", "use_bf16", "autocast_input"]

_COMPILED_DTYPES = (torch.float32, torch.float64)
_warned_fallback = False


def compiled_unavailable(cell: _Cell, x: Tensor) -> str | None:
    """Why the compiled kernels (:mod:`rnnlab._ext`) cannot run ``cell`` on ``x``, or None if
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


def scan(
    cell: _Cell,
    x: Tensor,
    state: Tensor | LSTMState,
    mask: Tensor | None,
    reverse: bool,
    compiled: bool = False,
    bf16: bool = False,
) -> tuple[Tensor, Tensor | LSTMState]:
    """Run ``cell`` over x (B, T, I) from ``state`` (B, H) (a pair for LSTM), skipping steps where
    ``mask`` (B, T) is False; backwards in time if ``reverse``. Returns (output (B, T, H), final
    state). ``compiled`` runs the C++ kernels (check :func:`choose` first); ``bf16`` runs their
    GEMMs on bf16 operands (LSTM only, see :func:`use_bf16`)."""
    if compiled:
        return _scan_compiled(cell, x, state, mask, reverse, bf16)
    xs = x.transpose(0, 1)  # (T, B, I)
    ms = None if mask is None else mask.t()[:, :, None]  # (T, B, 1)
    if reverse:
        xs = xs.flip(0)
        ms = None if ms is None else ms.flip(0)
    xs = xs.contiguous()
    if isinstance(cell, LSTMCell):
        out, h, c = _LSTMScan.apply(
            xs, state.h, state.c, cell.weight_ih, cell.weight_hh, cell.bias, ms
        )
        final: Tensor | LSTMState = LSTMState(h, c)
    elif isinstance(cell, GRUCell):
        out, final = _GRUScan.apply(
            xs, state, cell.weight_ih, cell.weight_hh, cell.bias, cell.bias_hn, ms
        )
    elif isinstance(cell, RNNCell):
        out, final = _RNNScan.apply(xs, state, cell.weight_ih, cell.weight_hh, cell.bias, ms)
    else:
        raise TypeError(f"fused.scan expected an RNNCell, LSTMCell or GRUCell, got {type(cell)}")
    if reverse:
        out = out.flip(0)
    return out.transpose(0, 1).contiguous(), final  # (B, T, H)


def _mask_factors(mask: Tensor | None, dtype: torch.dtype) -> tuple[Tensor, Tensor] | None:
    """(m, 1 - m) as floats (T, B, 1); multiplying by exact 0/1 keeps the gradients exact."""
    if mask is None:
        return None
    m = mask.to(dtype)
    return m, 1.0 - m


def _input_grads(ctx, dpre: Tensor, x: Tensor, w_ih: Tensor) -> tuple[Tensor | None, ...]:
    """dX, dW_ih and db from the gate pre-activation gradients of all steps, one GEMM each."""
    T, B, GH = dpre.shape
    flat = dpre.view(T * B, GH)  # (T*B, G*H)
    dx = linear(flat, w_ih.t()).view(T, B, -1) if ctx.needs_input_grad[0] else None  # (T, B, I)
    dw_ih = linear(flat.t(), x.view(T * B, -1).t())  # (G*H, I)
    return dx, dw_ih, flat.sum(0)


def _prev_states(h0: Tensor, hs: Tensor) -> Tensor:
    """The carried hidden state before each step: (T, B, H) = [h0, h_0, ..., h_{T-2}]."""
    return torch.cat([h0[None], hs[:-1]])


class _LSTMScan(torch.autograd.Function):
    """LSTM over time (equations in :class:`rnnlab.cells.LSTMCell`; gate rows i, f, g, o)."""

    @staticmethod
    def forward(ctx, x, h0, c0, w_ih, w_hh, b, mask):
        T, B, _ = x.shape
        H = h0.shape[-1]
        xw = linear(x.view(T * B, -1), w_ih, b).view(T, B, 4 * H)  # (T, B, 4H)
        acts = torch.empty_like(xw)  # (T, B, 4H) activated i, f, g, o
        cs = x.new_empty(T, B, H)  # carried cell state after each step
        hs = x.new_empty(T, B, H)  # carried hidden state after each step
        out = hs if mask is None else x.new_empty(T, B, H)
        h, c = h0, c0
        for t in range(T):
            pre = linear(h, w_hh, add=xw[t])  # (B, 4H) gate pre-activations
            a = acts[t]
            torch.sigmoid(pre[:, : 2 * H], out=a[:, : 2 * H])  # i, f
            torch.tanh(pre[:, 2 * H : 3 * H], out=a[:, 2 * H : 3 * H])  # g
            torch.sigmoid(pre[:, 3 * H :], out=a[:, 3 * H :])  # o
            i, f, g, o = a.chunk(4, dim=1)
            if mask is None:  # write the new state straight into the saved buffers
                c = torch.addcmul(f * c, i, g, out=cs[t])  # (B, H)
                h = torch.mul(o, torch.tanh(c), out=hs[t])  # (B, H)
            else:
                c_new = torch.addcmul(f * c, i, g)  # (B, H)
                h_new = o * torch.tanh(c_new)  # (B, H)
                m = mask[t]  # (B, 1)
                torch.mul(h_new, m, out=out[t])
                c = torch.where(m, c_new, c, out=cs[t])
                h = torch.where(m, h_new, h, out=hs[t])
        ctx.save_for_backward(x, h0, c0, w_ih, w_hh, acts, cs, hs, mask)
        return out, h.clone(), c.clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, dout, dh_last, dc_last):
        x, h0, c0, w_ih, w_hh, acts, cs, hs, mask = ctx.saved_tensors
        T, B, H = cs.shape
        i, f, g, o = acts.chunk(4, dim=2)  # each (T, B, H)
        c_prev = torch.cat([c0[None], cs[:-1]])  # (T, B, H)
        # Factors that do not depend on the incoming gradient, for all steps at once.
        deriv = acts - acts * acts  # sigmoid' = s (1 - s), right for i, f, o
        deriv[:, :, 2 * H : 3 * H] = 1.0 - g * g  # tanh' for g
        tanh_c = torch.tanh(cs)
        k = o * (1.0 - tanh_c * tanh_c)  # dc += dh * o * tanh'(c)
        gci = torch.stack([g, c_prev, i], dim=2)  # (T, B, 3, H): dc times these = di, df, dg
        factors = _mask_factors(mask, x.dtype)

        dpre = torch.empty_like(acts)  # (T, B, 4H) gradients of the gate pre-activations
        w_hh_t = w_hh.t()  # (H, 4H): dh = d @ w_hh is linear(d, w_hh.T)
        dh, dc = dh_last.clone(), dc_last.clone()
        for t in reversed(range(T)):
            dh_new = dh + dout[t]  # (B, H) gradient reaching this step's new h
            dc_new = dc
            if factors is not None:
                m, keep = factors[0][t], factors[1][t]
                dh_new, dc_new = dh_new * m, dc * m
                dh_keep, dc_keep = dh * keep, dc * keep
            dc_new = torch.addcmul(dc_new, dh_new, k[t])  # (B, H)
            d = dpre[t]  # (B, 4H)
            torch.mul(gci[t], dc_new[:, None], out=d[:, : 3 * H].view(B, 3, H))  # di, df, dg
            torch.mul(dh_new, tanh_c[t], out=d[:, 3 * H :])  # do
            d.mul_(deriv[t])
            if factors is None:
                dc = dc_new * f[t]
                dh = linear(d, w_hh_t)  # (B, H)
            else:
                dc = torch.addcmul(dc_keep, dc_new, f[t])
                dh = linear(d, w_hh_t, add=dh_keep)
        dx, dw_ih, db = _input_grads(ctx, dpre, x, w_ih)
        dw_hh = linear(dpre.view(T * B, 4 * H).t(), _prev_states(h0, hs).view(T * B, H).t())
        return dx, dh, dc, dw_ih, dw_hh, db, None


class _GRUScan(torch.autograd.Function):
    """GRU over time (equations in :class:`rnnlab.cells.GRUCell`; gate rows r, z, n)."""

    @staticmethod
    def forward(ctx, x, h0, w_ih, w_hh, b, b_hn, mask):
        T, B, _ = x.shape
        H = h0.shape[-1]
        gx = linear(x.view(T * B, -1), w_ih, b).view(T, B, 3 * H)  # (T, B, 3H)
        b_hh = torch.cat([b_hn.new_zeros(2 * H), b_hn])  # (3H,) only n has a recurrent bias
        acts = torch.empty_like(gx)  # (T, B, 3H) activated r, z, n
        ghn = x.new_empty(T, B, H)  # W_hn h + b_hn, which r multiplies
        hs = x.new_empty(T, B, H)
        out = hs if mask is None else x.new_empty(T, B, H)
        h = h0
        for t in range(T):
            gh = linear(h, w_hh, b_hh)  # (B, 3H)
            a = acts[t]
            torch.add(gx[t, :, : 2 * H], gh[:, : 2 * H], out=a[:, : 2 * H]).sigmoid_()  # r, z
            r, z = a[:, :H], a[:, H : 2 * H]
            ghn[t] = gh[:, 2 * H :]
            n = torch.addcmul(gx[t, :, 2 * H :], r, ghn[t], out=a[:, 2 * H :]).tanh_()
            h_new = torch.addcmul(n, z, h - n)  # (1 - z) n + z h
            if mask is None:
                h = hs[t].copy_(h_new)
            else:
                m = mask[t]
                torch.mul(h_new, m, out=out[t])
                h = torch.where(m, h_new, h, out=hs[t])
        ctx.save_for_backward(x, h0, w_ih, w_hh, acts, ghn, hs, mask)
        return out, h.clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, dout, dh_last):
        x, h0, w_ih, w_hh, acts, ghn, hs, mask = ctx.saved_tensors
        T, B, H = hs.shape
        r, z, n = acts.chunk(3, dim=2)  # each (T, B, H)
        h_prev = _prev_states(h0, hs)  # (T, B, H)
        dz_coef = (h_prev - n) * z * (1.0 - z)  # d pre_z / d h_new
        dn_coef = (1.0 - z) * (1.0 - n * n)  # d pre_n / d h_new
        dr_coef = ghn * r * (1.0 - r)  # d pre_r / d pre_n
        factors = _mask_factors(mask, x.dtype)

        dgx = torch.empty_like(acts)  # (T, B, 3H) gradients of the input-side pre-activations
        dghn = torch.empty_like(ghn)  # (T, B, H) gradient of W_hn h + b_hn
        w_rz_t, w_n_t = w_hh[: 2 * H].t(), w_hh[2 * H :].t()  # (H, 2H), (H, H)
        dh = dh_last.clone()
        for t in reversed(range(T)):
            dh_new = dh + dout[t]
            if factors is not None:
                dh_keep = dh * factors[1][t]
                dh_new = dh_new * factors[0][t]
            d = dgx[t]
            dn = torch.mul(dh_new, dn_coef[t], out=d[:, 2 * H :])
            torch.mul(dh_new, dz_coef[t], out=d[:, H : 2 * H])
            torch.mul(dn, dr_coef[t], out=d[:, :H])
            torch.mul(dn, r[t], out=dghn[t])
            dh = dh_new * z[t] if factors is None else torch.addcmul(dh_keep, dh_new, z[t])
            dh = linear(dghn[t], w_n_t, add=linear(d[:, : 2 * H], w_rz_t, add=dh))
        dx, dw_ih, db = _input_grads(ctx, dgx, x, w_ih)
        h_prev_t = h_prev.view(T * B, H).t()  # (H, T*B)
        dw_rz = linear(dgx[:, :, : 2 * H].reshape(T * B, 2 * H).t(), h_prev_t)  # (2H, H)
        dw_hh = torch.cat([dw_rz, linear(dghn.view(T * B, H).t(), h_prev_t)])  # (3H, H)
        return dx, dh, dw_ih, dw_hh, db, dghn.sum((0, 1)), None


class _RNNScan(torch.autograd.Function):
    """Vanilla RNN over time (:class:`rnnlab.cells.RNNCell`)."""

    @staticmethod
    def forward(ctx, x, h0, w_ih, w_hh, b, mask):
        T, B, _ = x.shape
        H = h0.shape[-1]
        xw = linear(x.view(T * B, -1), w_ih, b).view(T, B, H)  # (T, B, H)
        hn = torch.empty_like(xw)  # (T, B, H) each step's new h, before masking
        hs = hn if mask is None else torch.empty_like(xw)
        out = hs if mask is None else torch.empty_like(xw)
        h = h0
        for t in range(T):
            h_new = torch.tanh(linear(h, w_hh, add=xw[t]), out=hn[t])
            if mask is None:
                h = h_new
            else:
                m = mask[t]
                torch.mul(h_new, m, out=out[t])
                h = torch.where(m, h_new, h, out=hs[t])
        ctx.save_for_backward(x, h0, w_ih, w_hh, hn, hs, mask)
        return out, h.clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, dout, dh_last):
        x, h0, w_ih, w_hh, hn, hs, mask = ctx.saved_tensors
        T, B, H = hs.shape
        deriv = 1.0 - hn * hn  # tanh'
        factors = _mask_factors(mask, x.dtype)
        dpre = torch.empty_like(hn)
        w_hh_t = w_hh.t()
        dh = dh_last.clone()
        for t in reversed(range(T)):
            dh_new = dh + dout[t]
            if factors is None:
                dh = linear(torch.mul(dh_new, deriv[t], out=dpre[t]), w_hh_t)
            else:
                d = torch.mul(dh_new * factors[0][t], deriv[t], out=dpre[t])
                dh = linear(d, w_hh_t, add=dh * factors[1][t])
        dx, dw_ih, db = _input_grads(ctx, dpre, x, w_ih)
        dw_hh = linear(dpre.view(T * B, H).t(), _prev_states(h0, hs).view(T * B, H).t())
        return dx, dh, dw_ih, dw_hh, db, None


# -- compiled kernels ---------------------------------------------------------------------------
# The same algorithm as the classes above, with each whole time loop in C++
# (rnnlab/_ext/recurrent.cpp): per step one GEMM and one vectorised pass over the gates; for
# float32 LSTM each thread runs its own batch rows through all steps, without synchronisation.
# Inputs and outputs stay batch first; the kernels index time themselves, so no flips.


def _scan_compiled(
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
    params = [p for p in cell.parameters()]
    train = torch.is_grad_enabled() and (
        x.requires_grad or any(p.requires_grad for p in params) or _state_requires_grad(state)
    )
    if isinstance(cell, LSTMCell):
        args = (cell.weight_ih, cell.weight_hh, cell.bias, mask, reverse)
        if not train and mask is None and x.dtype == torch.float32 and not bf16:
            # Each thread runs its batch rows through the whole loop and keeps only two state
            # slots (recurrent.cpp, lstm_infer); the same arithmetic as the training kernel.
            w = (cell.weight_ih, cell.weight_hh, cell.bias)
            h0, c0 = state.h.contiguous(), state.c.contiguous()
            out, h, c = ext.lstm_infer(x, h0, c0, *w, reverse, torch.get_num_threads())
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


def _state_requires_grad(state: Tensor | LSTMState) -> bool:
    tensors = state if isinstance(state, LSTMState) else (state,)
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
