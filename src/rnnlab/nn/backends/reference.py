"""The readable reference: call the cell once per step, under ordinary autograd.

Shape legend: B batch, T time, I input features, H hidden units.

Every fast kernel (:mod:`rnnlab.nn.backends.fused`, :mod:`rnnlab.nn.backends.compiled`) is
tested against this loop. It is also the only one that records each step's gates, and the only
one whose backward can itself be differentiated (double backward).
"""

from __future__ import annotations

import torch
from torch import Tensor

from rnnlab.nn.cells import Cell, LSTMState
from rnnlab.nn.variants import CellNoise, step_noise

__all__ = ["scan"]


def scan(
    cell: Cell,
    x: Tensor,
    state: Tensor | LSTMState,
    mask: Tensor | None,
    *,
    reverse: bool,
    return_gates: bool = False,
    noise: CellNoise | None = None,
) -> tuple[Tensor, Tensor | LSTMState, dict[str, Tensor] | None]:
    """Run ``cell`` over x (B, T, I) from ``state`` (B, H) (an :class:`LSTMState` for LSTM),
    backwards in time if ``reverse``. At a step where ``mask`` (B, T) is False the new state is
    discarded (``torch.where``) and the output is zero.

    Returns (output (B, T, H), final state, gates): with ``return_gates`` the gates map each
    name the cell records (LSTM: i, f, g, o, c, h; GRU: r, z, n, h; RNN: h; others: their
    ``gate_names``) to a (B, T, H)
    tensor, zero at padded steps; otherwise None. ``noise`` (a variant LSTM cell's masks,
    :class:`rnnlab.nn.variants.CellNoise`) gives each step its slice of them."""
    T = x.shape[1]
    # unbind, not x[:, t]: the backward of T selects would fill T zero (B, T, I) tensors
    steps = x.unbind(1)  # T of (B, I)
    outputs: list[Tensor] = [x.new_empty(0)] * T
    records: list[dict[str, Tensor]] = [{}] * T
    for t in reversed(range(T)) if reverse else range(T):
        if noise is None:
            result = cell(steps[t], state, return_gates=return_gates)
        else:
            result = cell(steps[t], state, return_gates=return_gates, noise=step_noise(noise, t))
        new_state, gates = result if return_gates else (result, None)
        h = new_state[0] if isinstance(new_state, tuple) else new_state  # (B, H): h first
        if mask is None:
            state = new_state
            outputs[t] = h
        else:
            m = mask[:, t, None]  # (B, 1)
            state = _where(m, new_state, state)
            outputs[t] = h * m
            gates = None if gates is None else {k: v * m for k, v in gates.items()}
        if gates is not None:
            records[t] = gates
    output = torch.stack(outputs, dim=1)  # (B, T, H)
    if not return_gates:
        return output, state, None
    return output, state, {k: torch.stack([r[k] for r in records], 1) for k in records[0]}


def _where(m: Tensor, new: Tensor | tuple, old: Tensor | tuple) -> Tensor | tuple:
    """``new`` where m (B, 1) is True, else ``old``; for a state tensor or a named tuple of
    them (LSTMState, SLSTMState)."""
    if isinstance(new, tuple):
        return type(new)(*(_where(m, a, b) for a, b in zip(new, old, strict=True)))
    m = m.reshape(m.shape[0], *[1] * (new.dim() - 1))  # (B, 1, ...): e.g. mLSTM's (B, NH, DH, DH)
    return torch.where(m, new, old)
