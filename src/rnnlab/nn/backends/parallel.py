r"""The parallel path of minGRU and minLSTM: every step's gates in one GEMM, then a scan over time.

Shape legend: B batch, T time, I input features, H hidden units, K steps per chunk, C chunks.

Both cells (:mod:`rnnlab.nn.mincells`) are the linear recurrence h_t = a_t ⊙ h_{t-1} + b_t
with a_t, b_t computed from x_t alone, so a layer is

1. one GEMM for every step's pre-activations, k = x W^T + b (B, T, G*H);
2. the cell's own :meth:`~rnnlab.nn.mincells.MinCell.coefficients` on all steps at once, the
   very expressions the one-step reference uses; at a padded step a = 1, b = 0, which leaves
   the state unchanged;
3. :func:`linear_scan`, which solves the recurrence for every t at once.

The scan is blocked (the two-level scan of Blelloch 1990): time is cut into C chunks of K ~ sqrt(T)
steps; the recurrence runs inside every chunk at once (K steps over (B, C, H) tensors, with the
running product of a), then across chunks (C steps over (B, H)), and a last multiply-add gives
every h_t: about 2 sqrt(T) vector steps instead of T. It only ever multiplies by a_t in [0, 1]
and adds, so nothing overflows and no logarithm or division is needed; this is why it takes
values of either sign, unlike the log-space scan (Heinsen 2023), which needs b_t > 0 (the
paper's appendix makes h̃ positive for it).

Backpropagation is the same recurrence backwards in time (:class:`_LinearScan`): with
g_t = dL/dh_t in full, g_t = dh_t + a_{t+1} ⊙ g_{t+1}, then dL/db_t = g_t,
dL/da_t = g_t ⊙ h_{t-1} and dL/dh_0 = a_0 ⊙ g_0. The backward is itself written with
:func:`linear_scan`, so it can be differentiated again (gradgradcheck).

bf16: with ``bf16=True`` the GEMM of step 1 takes bf16 operands (float32 result, as under
``torch.autocast``); the coefficients and the scan stay float32. Input of a 16-bit dtype is
scanned in float32 and the result cast back.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from rnnlab.nn.mincells import MinCell

__all__ = ["linear_scan", "mingru", "minlstm"]


def linear_scan(a: Tensor, b: Tensor, h0: Tensor) -> Tensor:
    """h (B, T, H) with h_t = a_t * h_{t-1} + b_t from h_{-1} = h0 (B, H); a, b (B, T, H).
    Differentiable (twice); 16-bit input is scanned in float32."""
    dtype = a.dtype
    if dtype in (torch.float16, torch.bfloat16):
        return _LinearScan.apply(a.float(), b.float(), h0.float()).to(dtype)
    return _LinearScan.apply(a, b, h0)


class _LinearScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, h0: Tensor) -> Tensor:
        h = _blocked_scan(a, b, h0)  # (B, T, H)
        ctx.save_for_backward(a, h0, h)
        return h

    @staticmethod
    def backward(ctx, dh: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        a, h0, h = ctx.saved_tensors
        a_next = torch.cat([a[:, 1:], torch.zeros_like(a[:, :1])], dim=1)  # (B, T, H): a_{t+1}
        # g_t = dh_t + a_{t+1} g_{t+1}: the forward recurrence, backwards in time
        g = linear_scan(a_next.flip(1), dh.flip(1), torch.zeros_like(h0)).flip(1)  # (B, T, H)
        h_prev = torch.cat([h0[:, None], h[:, :-1]], dim=1)  # (B, T, H): h_{t-1}
        return g * h_prev, g, a[:, 0] * g[:, 0]


@torch.no_grad()
def _blocked_scan(a: Tensor, b: Tensor, h0: Tensor) -> Tensor:
    """The forward of :func:`linear_scan` (no autograd): chunks of K steps, then across them."""
    B, T, H = a.shape
    K = max(1, math.isqrt(T))  # steps per chunk
    C = -(-T // K)  # chunks
    if C * K > T:  # pad with a = 1, b = 0: steps that change nothing
        a = torch.cat([a, a.new_ones(B, C * K - T, H)], dim=1)
        b = torch.cat([b, b.new_zeros(B, C * K - T, H)], dim=1)
    a, b = a.reshape(B, C, K, H), b.reshape(B, C, K, H)
    h = torch.empty_like(b)  # (B, C, K, H): the recurrence inside each chunk, from 0
    P = torch.empty_like(a)  # (B, C, K, H): products of a inside each chunk, up to step k
    h[:, :, 0], P[:, :, 0] = b[:, :, 0], a[:, :, 0]
    for k in range(1, K):  # every chunk at once
        h[:, :, k] = torch.addcmul(b[:, :, k], a[:, :, k], h[:, :, k - 1])  # (B, C, H)
        P[:, :, k] = P[:, :, k - 1] * a[:, :, k]  # (B, C, H)
    carry, entering = h0, []  # the state entering each chunk
    for c in range(C):
        entering.append(carry)
        carry = torch.addcmul(h[:, c, K - 1], P[:, c, K - 1], carry)  # (B, H)
    h.addcmul_(P, torch.stack(entering, dim=1)[:, :, None])  # (B, C, K, H)
    return h.reshape(B, C * K, H)[:, :T]


def _scan_cell(
    cell: MinCell, x: Tensor, h0: Tensor, mask: Tensor | None, *, reverse: bool, bf16: bool
) -> tuple[Tensor, Tensor]:
    """Steps 1-3 of the module docstring for one direction: (output (B, T, H), h_T (B, H))."""
    if bf16:  # bf16 operands, float32 result, as torch.autocast would
        k = (x.bfloat16() @ cell.weight_ih.bfloat16().T).float() + cell.bias  # (B, T, G*H)
    else:
        k = x @ cell.weight_ih.T + cell.bias  # (B, T, G*H)
    a, b, _ = cell.coefficients(k)  # (B, T, H) each
    if mask is not None:
        m = mask[:, :, None]  # (B, T, 1)
        a = torch.where(m, a, torch.ones_like(a))  # padded steps keep the state
        b = torch.where(m, b, torch.zeros_like(b))
    if reverse:
        a, b = a.flip(1), b.flip(1)
    h = linear_scan(a, b, h0)  # (B, T, H), in scan order
    final = h[:, -1]  # (B, H)
    if reverse:
        h = h.flip(1)
    return (h if mask is None else h * mask[:, :, None]), final


def mingru(
    cell: MinCell,
    x: Tensor,
    h0: Tensor,
    mask: Tensor | None,
    *,
    reverse: bool,
    bf16: bool = False,
) -> tuple[Tensor, Tensor]:
    """A minGRU direction over x (B, T, I) from h0 (B, H): (output (B, T, H), final h (B, H)),
    zero output at steps where ``mask`` (B, T) is False."""
    return _scan_cell(cell, x, h0, mask, reverse=reverse, bf16=bf16)


def minlstm(
    cell: MinCell,
    x: Tensor,
    h0: Tensor,
    mask: Tensor | None,
    *,
    reverse: bool,
    bf16: bool = False,
) -> tuple[Tensor, Tensor]:
    """A minLSTM direction, as :func:`mingru` (the cell supplies its own coefficients)."""
    return _scan_cell(cell, x, h0, mask, reverse=reverse, bf16=bf16)
