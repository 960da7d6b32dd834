"""sLSTM's fused path (pure torch): every step's input projection in one GEMM, then the steps.

Shape legend: B batch, T time, I input features, H hidden units.

sLSTM stays sequential (its gates read h_{t-1} through the head-wise recurrent matrices, Beck et
al. 2024), so what can leave the loop is what an LSTM's fused path takes out of it: W x_t + b
for all t at once, (B*T, I) x (I, 4H). Each step then runs the cell's own head-wise recurrent
product (:meth:`rnnlab.nn.xlstm.SLSTMCell.recurrent`) and its own stabilised pointwise
equations (:meth:`~rnnlab.nn.xlstm.SLSTMCell.pointwise`), the very code of the one-step
reference, under ordinary autograd. Which path runs is decided by
:func:`rnnlab.nn.backends.dispatch.scan_layer`, never here.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rnnlab.nn.xlstm import SLSTMCell, SLSTMState

__all__ = ["slstm"]


def slstm(
    cell: SLSTMCell, x: Tensor, state: SLSTMState, mask: Tensor | None, *, reverse: bool
) -> tuple[Tensor, SLSTMState]:
    """One direction over x (B, T, I) from ``state`` (each (B, H)): (output (B, T, H), final
    state). At a step where ``mask`` (B, T) is False the state is kept and the output is 0."""
    T = x.shape[1]
    wx = x @ cell.weight_ih.T + cell.bias  # (B, T, 4H): every step's input projection
    # unbind, not wx[:, t]: the backward of T selects would fill T zero (B, T, 4H) tensors
    wx_steps = wx.unbind(1)  # T of (B, 4H)
    outputs: list[Tensor] = [x.new_empty(0)] * T
    for t in reversed(range(T)) if reverse else range(T):
        gates = wx_steps[t] + cell.recurrent(state.h)  # (B, 4H)
        new, _ = cell.pointwise(gates, state)
        if mask is None:
            state, outputs[t] = new, new.h
        else:
            m = mask[:, t, None]  # (B, 1)
            state = SLSTMState(*(torch.where(m, a, b) for a, b in zip(new, state, strict=True)))
            outputs[t] = new.h * m
    return torch.stack(outputs, dim=1), state  # (B, T, H)
