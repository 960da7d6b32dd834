"""The pure-torch fast path: one direction of one layer, with hand-written backpropagation
through time. It runs wherever torch runs (any dtype, any device) and never touches the C++
kernels; :mod:`rnnlab.nn.backends.dispatch` decides when it runs.

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

The parameters are the cells' own (:mod:`rnnlab.nn.cells`), so the reference loop and this path
are the same model; ``tests/test_fused.py`` checks outputs, final states and every gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from rnnlab.nn.backends._gemm import linear
from rnnlab.nn.cells import GRUCell, LSTMCell, LSTMState, RNNCell

__all__ = ["lstm", "gru", "rnn"]


def lstm(
    cell: LSTMCell, x: Tensor, state: LSTMState, mask: Tensor | None, *, reverse: bool
) -> tuple[Tensor, LSTMState]:
    """Run an LSTM cell over x (B, T, I) from ``state`` (h, c) each (B, H), skipping steps where
    ``mask`` (B, T) is False; backwards in time if ``reverse``. Returns (output (B, T, H), final
    state)."""
    xs, ms = _time_major(x, mask, reverse)
    out, h, c = _LSTMScan.apply(xs, state.h, state.c, cell.weight_ih, cell.weight_hh, cell.bias, ms)
    return _batch_first(out, reverse), LSTMState(h, c)


def gru(
    cell: GRUCell, x: Tensor, state: Tensor, mask: Tensor | None, *, reverse: bool
) -> tuple[Tensor, Tensor]:
    """As :func:`lstm`, for a GRU cell; state (B, H)."""
    xs, ms = _time_major(x, mask, reverse)
    args = (cell.weight_ih, cell.weight_hh, cell.bias, cell.bias_hn, ms)
    out, final = _GRUScan.apply(xs, state, *args)
    return _batch_first(out, reverse), final


def rnn(
    cell: RNNCell, x: Tensor, state: Tensor, mask: Tensor | None, *, reverse: bool
) -> tuple[Tensor, Tensor]:
    """As :func:`lstm`, for a vanilla RNN cell; state (B, H)."""
    xs, ms = _time_major(x, mask, reverse)
    out, final = _RNNScan.apply(xs, state, cell.weight_ih, cell.weight_hh, cell.bias, ms)
    return _batch_first(out, reverse), final


def _time_major(x: Tensor, mask: Tensor | None, reverse: bool) -> tuple[Tensor, Tensor | None]:
    """x (B, T, I) -> contiguous (T, B, I) and mask (B, T) -> (T, B, 1), in processing order
    (flipped in time for a backward direction), so every step's slice is contiguous."""
    xs = x.transpose(0, 1)  # (T, B, I)
    ms = None if mask is None else mask.t()[:, :, None]  # (T, B, 1)
    if reverse:
        xs = xs.flip(0)
        ms = None if ms is None else ms.flip(0)
    return xs.contiguous(), ms


def _batch_first(out: Tensor, reverse: bool) -> Tensor:
    """(T, B, H) in processing order -> (B, T, H) in time order."""
    if reverse:
        out = out.flip(0)
    return out.transpose(0, 1).contiguous()


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
    """LSTM over time (equations in :class:`rnnlab.nn.cells.LSTMCell`; gate rows i, f, g, o)."""

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
    """GRU over time (equations in :class:`rnnlab.nn.cells.GRUCell`; gate rows r, z, n)."""

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
    """Vanilla RNN over time (:class:`rnnlab.nn.cells.RNNCell`)."""

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
