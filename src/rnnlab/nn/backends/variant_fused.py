"""The pure-torch fast path of the LSTM and GRU variants (:class:`rnnlab.nn.variants.
VariantLSTMCell`, :class:`rnnlab.nn.variant_gru.VariantGRUCell`): the reference step under
autograd, with the input side of the gates hoisted out of the loop.

Shape legend: B batch, T time, I input features, H cell units, R = P or H (h's width).

What it saves against the reference loop: the input projection of all T steps, and its
LayerNorm, is one GEMM and one normalisation over (B*T, 4H) (GRU: 3H) instead of T small ones,
and the steps read precomputed rows. The recurrence itself (the recurrent product, its
LayerNorm, the gates, the projection, the masks) is the cell's own
:meth:`~VariantLSTMCell.forward`, so this path cannot drift from the reference; autograd writes
its backward (which can itself be differentiated, unlike the classic cells' fused path). The
compiled kernels (:mod:`rnnlab.nn.backends.variant_compiled` for the LSTM variants,
:mod:`rnnlab.nn.backends.gru_variant_compiled` for the GRU's) are the fast ones; this path runs
where they cannot (float16, CUDA, the extension missing) and wherever ``backend="fused"`` is
asked for.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rnnlab.nn.backends.reference import _where
from rnnlab.nn.cells import LSTMState
from rnnlab.nn.variant_gru import VariantGRUCell
from rnnlab.nn.variants import CellNoise, VariantLSTMCell, step_noise

__all__ = ["scan", "lstm_variant", "gru_variant"]


def scan(
    cell: VariantLSTMCell | VariantGRUCell,
    x: Tensor,
    state: LSTMState | Tensor,
    mask: Tensor | None,
    noise: CellNoise | None,
    *,
    reverse: bool,
) -> tuple[Tensor, LSTMState | Tensor]:
    """Run ``cell`` over x (B, T, I) from ``state`` (an LSTM's (h (B, R), c (B, H)), a GRU's
    h (B, H)), skipping steps where ``mask`` (B, T) is False, with ``noise``'s masks (None:
    none); backwards in time if ``reverse``. Returns (output (B, T, R), final state)."""
    T = x.shape[1]
    a_x = cell.gate_inputs(x).unbind(1)  # T of (B, 4H) (GRU: 3H)
    steps = x.unbind(1)
    outputs: list[Tensor] = [x.new_empty(0)] * T
    for t in reversed(range(T)) if reverse else range(T):
        masks = None if noise is None else step_noise(noise, t)
        new_state = cell(steps[t], state, noise=masks, a_x=a_x[t])
        h = new_state.h if isinstance(new_state, LSTMState) else new_state  # (B, R)
        if mask is None:
            state = new_state
            outputs[t] = h
        else:
            m = mask[:, t, None]  # (B, 1)
            state = _where(m, new_state, state)
            outputs[t] = h * m
    return torch.stack(outputs, dim=1), state


def lstm_variant(
    cell: VariantLSTMCell, x: Tensor, state: LSTMState, mask: Tensor | None, noise, *, reverse
) -> tuple[Tensor, LSTMState]:
    """The routing table's ``fused.lstm_variant``: :func:`scan` of an LSTM variant."""
    return scan(cell, x, state, mask, noise, reverse=reverse)


def gru_variant(
    cell: VariantGRUCell, x: Tensor, h: Tensor, mask: Tensor | None, noise, *, reverse
) -> tuple[Tensor, Tensor]:
    """The routing table's ``fused.gru_variant``: :func:`scan` of a GRU variant."""
    return scan(cell, x, h, mask, noise, reverse=reverse)
