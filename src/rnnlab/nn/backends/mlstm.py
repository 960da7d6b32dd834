r"""mLSTM's parallel form (Beck et al. 2024, appendix): every step of a sequence at once.

Shape legend: B batch, T time, I input features, H hidden units, NH heads, DH units per head;
t indexes the step that reads, s the steps read.

No gate of the mLSTM (:class:`rnnlab.nn.xlstm.MLSTMCell`) reads h_{t-1}, so unrolling its
recurrence gives every step in closed form. With F_t = sum_{u<=t} log f_u (log f = 0 and
log i = -inf at a padded step, which leaves the state unchanged) and the initial state
(C_0, n_0, m_0):

    D_ts = F_t - F_s + log i_s  (s <= t; -inf for s > t),   D_t0 = F_t + m_0
    m_t  = max(D_t0, max_s D_ts)                 the step form's stabiliser, exactly
    C_t q_t   = sum_s exp(D_ts - m_t) (k_s . q_t) v_s + exp(D_t0 - m_t) C_0 q_t
    n_t . q_t = sum_s exp(D_ts - m_t) (k_s . q_t)     + exp(D_t0 - m_t) n_0 . q_t
    h_t  = o_t * C_t q_t / max(|n_t . q_t|, exp(-m_t))

so a layer is one GEMM for every step's projections, (T x T) attention-like products per head
and a cumulative sum; the final state is the same sums at t = T. Every exponent is <= 0. It
costs O(T^2 DH) per head against the step form's O(T DH^2), and keeps no T copies of C.
The gradients are autograd's; the tests check them against the step form's.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rnnlab.nn.xlstm import MLSTMCell, MLSTMState

__all__ = ["mlstm"]


def mlstm(
    cell: MLSTMCell, x: Tensor, state: MLSTMState, mask: Tensor | None, *, reverse: bool
) -> tuple[Tensor, MLSTMState]:
    """One direction over x (B, T, I) from ``state``: (output (B, T, H), final state). At a
    step where ``mask`` (B, T) is False the state is kept and the output is zero."""
    if reverse:
        x = x.flip(1)
        mask = None if mask is None else mask.flip(1)
    _, C0, n0, m0 = state  # (B, NH, DH, DH), (B, NH, DH), (B, NH)
    q, k, v, o, log_i, log_f = cell.projections(x @ cell.weight_ih.T + cell.bias)
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, NH, T, DH) each
    log_i, log_f = log_i.transpose(1, 2), log_f.transpose(1, 2)  # (B, NH, T) each
    if mask is not None:
        real = mask[:, None, :]  # (B, 1, T)
        log_i = log_i.masked_fill(~real, float("-inf"))
        log_f = log_f.masked_fill(~real, 0.0)
    T = x.shape[1]
    F_cum = torch.cumsum(log_f, dim=-1)  # (B, NH, T)
    causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()  # (T, T): s <= t
    D = (F_cum[..., :, None] - F_cum[..., None, :] + log_i[..., None, :]).masked_fill(
        ~causal, float("-inf")
    )  # (B, NH, T, T)
    D0 = F_cum + m0[..., None]  # (B, NH, T): the initial state's weight
    m = torch.maximum(D.amax(dim=-1), D0)  # (B, NH, T)
    W = torch.exp(D - m[..., None])  # (B, NH, T, T), <= 1
    w0 = torch.exp(D0 - m)  # (B, NH, T), <= 1
    S = (q @ k.transpose(-1, -2)) * W  # (B, NH, T, T): exp(D_ts - m_t) (k_s . q_t)
    numerator = S @ v + w0[..., None] * torch.einsum("bhij,bhtj->bhti", C0, q)  # (B, NH, T, DH)
    nq = S.sum(-1) + w0 * torch.einsum("bhj,bhtj->bht", n0, q)  # (B, NH, T): n_t . q_t
    denominator = torch.maximum(nq.abs(), torch.exp(-m))  # (B, NH, T)
    h_tilde = (numerator / denominator[..., None]).transpose(1, 2).flatten(2)  # (B, T, H)
    h = o * h_tilde  # (B, T, H)
    last = W[..., -1, :]  # (B, NH, T): step T's weights of every step s
    C = w0[..., -1, None, None] * C0 + torch.einsum("bhs,bhsi,bhsj->bhij", last, v, k)
    n = w0[..., -1, None] * n0 + torch.einsum("bhs,bhsj->bhj", last, k)  # (B, NH, DH)
    if mask is not None:
        h = h * mask[:, :, None]
        final_h = _last_real(h, mask, state.h)  # (B, H)
    else:
        final_h = h[:, -1]
    if reverse:
        h = h.flip(1)
    return h, MLSTMState(final_h, C, n, m[..., -1])


def _last_real(h: Tensor, mask: Tensor, h0: Tensor) -> Tensor:
    """The output at each sequence's last real step (B, H); ``h0`` where none is real."""
    T = mask.shape[1]
    steps = torch.arange(T, device=mask.device).expand_as(mask)  # (B, T)
    last = torch.where(mask, steps, -1).amax(dim=1)  # (B,)
    picked = h.gather(1, last.clamp(min=0)[:, None, None].expand(-1, 1, h.shape[2]))[:, 0]
    return torch.where((last >= 0)[:, None], picked, h0)  # (B, H)
