r"""The parallel path of minGRU and minLSTM: every step's gates in one GEMM, then a scan over time.

Shape legend: B batch, T time, I input features, H hidden units, K steps per chunk, C chunks.

Both cells (:mod:`rnnlab.nn.mincells`) are the linear recurrence h_t = a_t ⊙ h_{t-1} + b_t
with a_t, b_t computed from x_t alone, so a layer is

1. one GEMM for every step's pre-activations, k = x W^T + b (B, T, G*H);
2. the cell's own :meth:`~rnnlab.nn.mincells.MinCell.coefficients` on all steps at once, the
   very expressions the one-step reference uses; at a padded step a = 1, b = 0, which leaves
   the state unchanged;
3. :func:`linear_scan`, which solves the recurrence for every t at once.

The scan is blocked (the two-level scan of Blelloch 1990): time is cut into C chunks of K
steps; the recurrence runs inside every chunk at once (K steps over (B, C, H) tensors, with the
running product of a), then across chunks (C steps over (B, H)), and a last multiply-add gives
every h_t. :func:`chunk_length` picks K: about sqrt(T) (2 sqrt(T) vector steps instead of T) when
a step is too small to keep the cores busy, and K = 1, a plain sweep of T fused multiply-adds,
when it is not: on a CPU the sweep then wins, since the scan is memory-bound and the blocked
form moves about three times the data. Either way the steps are elementwise (no GEMM and no
nonlinearity inside the loop, unlike an LSTM's), and the scan only ever multiplies by a_t in
[0, 1] and adds, so nothing overflows and no logarithm or division is needed; this is why it
takes values of either sign, unlike the log-space scan (Heinsen 2023), which needs b_t > 0 (the
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
from torch.nn import functional as F

from rnnlab.nn.mincells import MinCell

__all__ = ["direction_output", "input_projection", "linear_scan", "mingru", "minlstm"]


def linear_scan(a: Tensor, b: Tensor, h0: Tensor, *, reverse: bool = False) -> Tensor:
    """h (B, T, H) with h_t = a_t * h_{t-1} + b_t from h_{-1} = h0 (B, H); a, b (B, T, H).
    With ``reverse`` time runs backwards: h_t = a_t * h_{t+1} + b_t from h_T = h0.
    Differentiable (twice); 16-bit input is scanned in float32."""
    dtype = a.dtype
    if dtype in (torch.float16, torch.bfloat16):
        return _LinearScan.apply(a.float(), b.float(), h0.float(), reverse).to(dtype)
    return _LinearScan.apply(a, b, h0, reverse)


def chunk_length(B: int, T: int, H: int) -> int:
    """K, the steps per chunk of the blocked scan: 1 (a plain sweep over time, T fused
    multiply-adds on (B, H)) when a step's B*H elements keep the cores busy (>= 4096), else
    about sqrt(T). Measured on a 2-core AVX-512 CPU: for (B, T, H) = (64, 128, 512) the sweep
    took 6 ms and K = 11 took 39 ms; for (8, 4096, 64) the sweep 26 ms and K = 64 12 ms."""
    return 1 if B * H >= 4096 else max(1, math.isqrt(T))


class _LinearScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, h0: Tensor, reverse: bool) -> Tensor:
        h = _blocked_scan(a, b, h0, reverse=reverse)  # (B, T, H)
        ctx.save_for_backward(a, h0, h)
        ctx.reverse = reverse
        return h

    @staticmethod
    def backward(ctx, dh: Tensor) -> tuple[Tensor, Tensor, Tensor, None]:
        a, h0, h = ctx.saved_tensors
        # g_t = dh_t + a_{t+1} g_{t+1} (forwards in time; the mirror image for reverse): the
        # same recurrence, run the other way
        later = _shift(a, 0.0, towards_past=not ctx.reverse)  # (B, T, H): a of the next step
        g = linear_scan(later, dh, torch.zeros_like(h0), reverse=not ctx.reverse)  # (B, T, H)
        earlier = _shift(h, h0, towards_past=ctx.reverse)  # (B, T, H): the state each step read
        first = 0 if not ctx.reverse else -1  # the step that read h0
        return g * earlier, g, a[:, first] * g[:, first], None


def _shift(x: Tensor, fill: Tensor | float, *, towards_past: bool) -> Tensor:
    """x (B, T, H) moved one step along time: ``towards_past`` gives y_t = x_{t+1} (``fill``
    at T-1), else y_t = x_{t-1} (``fill`` at 0). ``fill`` is a number or a (B, H) tensor."""
    edge = fill[:, None] if isinstance(fill, Tensor) else torch.full_like(x[:, :1], fill)
    return torch.cat([x[:, 1:], edge], 1) if towards_past else torch.cat([edge, x[:, :-1]], 1)


@torch.no_grad()
def _blocked_scan(a: Tensor, b: Tensor, h0: Tensor, *, reverse: bool) -> Tensor:
    """The forward of :func:`linear_scan` (no autograd), in chunks of K steps
    (:func:`chunk_length`): inside every chunk at once, then across chunks."""
    B, T, H = a.shape
    K = chunk_length(B, T, H)
    if K == 1:
        return _sweep(a, b, h0, reverse=reverse)
    if reverse:
        return _blocked_scan(a.flip(1), b.flip(1), h0, reverse=False).flip(1)
    C = -(-T // K)  # chunks
    if C * K > T:  # pad with a = 1, b = 0: steps that change nothing
        a = torch.cat([a, a.new_ones(B, C * K - T, H)], dim=1)
        b = torch.cat([b, b.new_zeros(B, C * K - T, H)], dim=1)
    a = a.reshape(B, C, K, H).permute(2, 0, 1, 3)  # (K, B, C, H)
    b = b.reshape(B, C, K, H).permute(2, 0, 1, 3)  # (K, B, C, H)
    hs, Ps = [b[0]], [a[0]]  # per step k: the recurrence from 0, the product of a up to k
    for k in range(1, K):  # every chunk at once
        hs.append(torch.addcmul(b[k], a[k], hs[-1]))  # (B, C, H)
        Ps.append(Ps[-1] * a[k])  # (B, C, H)
    carry, entering = h0, []  # the state entering each chunk
    for c in range(C):
        entering.append(carry)
        carry = torch.addcmul(hs[-1][:, c], Ps[-1][:, c], carry)  # (B, H)
    h = torch.stack(hs, dim=2)  # (B, C, K, H)
    h.addcmul_(torch.stack(Ps, dim=2), torch.stack(entering, dim=1)[:, :, None])
    return h.reshape(B, C * K, H)[:, :T]


def _sweep(a: Tensor, b: Tensor, h0: Tensor, *, reverse: bool) -> Tensor:
    """K = 1: one fused multiply-add per step, T steps."""
    h, out = h0, torch.empty_like(b)  # (B, H), (B, T, H)
    for t in reversed(range(a.shape[1])) if reverse else range(a.shape[1]):
        h = torch.addcmul(b[:, t], a[:, t], h)  # (B, H)
        out[:, t] = h
    return out


def input_projection(cell: MinCell, x: Tensor, *, bf16: bool) -> Tensor:
    """Step 1 of the module docstring: every step's pre-activations k = x W^T + b (B, T, G*H),
    with bf16 operands and a float32 result (as under ``torch.autocast``) when ``bf16``. The
    compiled rows (:func:`rnnlab.nn.backends.compiled.mingru`, ``.minlstm``) make the same GEMM
    and add the bias in their time loop."""
    if bf16:
        return (x.bfloat16() @ cell.weight_ih.bfloat16().T).float() + cell.bias
    return F.linear(x, cell.weight_ih, cell.bias)  # the bias inside the GEMM


def _scan_cell(
    cell: MinCell, x: Tensor, h0: Tensor, mask: Tensor | None, *, reverse: bool, bf16: bool
) -> tuple[Tensor, Tensor]:
    """Steps 1-3 of the module docstring for one direction: (output (B, T, H), h_T (B, H))."""
    k = input_projection(cell, x, bf16=bf16)  # (B, T, G*H)
    a, b, _ = cell.coefficients(k)  # (B, T, H) each
    if mask is not None:
        m = mask[:, :, None]  # (B, T, 1)
        a = torch.where(m, a, torch.ones_like(a))  # padded steps keep the state
        b = torch.where(m, b, torch.zeros_like(b))
    return direction_output(linear_scan(a, b, h0, reverse=reverse), mask, reverse=reverse)


def direction_output(h: Tensor, mask: Tensor | None, *, reverse: bool) -> tuple[Tensor, Tensor]:
    """From every step's state h (B, T, H): the output (zero at steps where ``mask`` (B, T) is
    False) and the final state (B, H), the one after the last step read (a padded step keeps
    the state, so that is h at the last index in reading order). The compiled rows share it."""
    final = h[:, 0] if reverse else h[:, -1]
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
