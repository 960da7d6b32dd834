r"""minGRU and minLSTM (Feng et al. 2024, "Were RNNs All We Needed?"): the readable one-step
reference of each, written from the paper's equations.

Shape legend: B batch, I input features, H hidden units (the paper's d_x and d_h).

Both cells take h_{t-1} out of every gate, so each gate depends on x_t alone and the recurrence
becomes linear in h:

.. math::  h_t = a_t \odot h_{t-1} + b_t

with a_t and b_t computed from x_t only. That is what lets training run over all steps at once
with a parallel scan (:mod:`rnnlab.nn.backends.parallel`), while generation still steps one token
at a time with the same cell. The fast path computes a_t and b_t with the very same expressions
as :meth:`MinGRUCell.coefficients` and :meth:`MinLSTMCell.coefficients` below, on the same
parameters, and is tested against these cells.

Parameters follow the classic cells' layout (:mod:`rnnlab.nn.cells`): ``weight_ih`` (G*H, I)
and ``bias`` (G*H) stack the G blocks of rows named in each docstring; there is no
``weight_hh``, since no gate reads h_{t-1}. Initialisation: Glorot-uniform ``weight_ih``, zero
``bias`` (the paper names no initialisation; these are the classic cells' Keras defaults).

The paper's log-space variant (its appendix) passes h̃_t through g(x) = x + 0.5 (x >= 0),
sigmoid(x) (x < 0) to keep every h_t positive for a log-space scan. rnnlab's scan needs no
logarithm (it only multiplies by a_t in [0, 1], so nothing overflows), so h̃_t stays the
plain linear map of the paper's main text and h may take either sign.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from rnnlab.nn.cells import _check_sizes, _glorot_uniform_

__all__ = ["MinGRUCell", "MinLSTMCell", "MinCell"]


class MinCell(nn.Module):
    """What minGRU and minLSTM share: ``weight_ih`` (G*H, I) and ``bias`` (G*H) for G blocks of
    H rows; ``coefficients`` gives a_t and b_t of the linear recurrence; ``forward`` is one
    step of it, h_t = a_t * h_{t-1} + b_t."""

    gates: int = 2
    gate_names: tuple[str, ...] = ()

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        _check_sizes(type(self).__name__, input_size, hidden_size)
        self.input_size = input_size
        self.hidden_size = hidden_size
        G, H = self.gates, hidden_size
        self.weight_ih = nn.Parameter(torch.empty(G * H, input_size))  # (G*H, I)
        self.bias = nn.Parameter(torch.empty(G * H))  # (G*H,)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _glorot_uniform_(self.weight_ih.data)
        nn.init.zeros_(self.bias)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}"

    def coefficients(self, k: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """From the pre-activations k = W x + b (..., G*H): a and b (..., H) of
        h_t = a * h_{t-1} + b, and the named gates."""
        raise NotImplementedError

    def forward(
        self, x: Tensor, h: Tensor, return_gates: bool = False
    ) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
        """One step: x (B, I), h (B, H) -> h_t (B, H), plus the gates if asked."""
        k = x @ self.weight_ih.T + self.bias  # (B, G*H)
        a, b, gates = self.coefficients(k)  # (B, H) each
        h_t = a * h + b  # (B, H)
        return (h_t, {**gates, "h": h_t}) if return_gates else h_t


class MinGRUCell(MinCell):
    r"""minGRU (Feng et al. 2024, section 3.2): a GRU whose update gate and candidate read x_t
    alone, and which has no reset gate.

    .. math::
        z_t &= \sigma(W_z x_t + b_z)                           \quad\text{update gate}\\
        \tilde h_t &= W_h x_t + b_h                            \quad\text{candidate}\\
        h_t &= (1 - z_t) \odot h_{t-1} + z_t \odot \tilde h_t

    so a_t = 1 - z_t and b_t = z_t ⊙ h̃_t. Weight layout: ``weight_ih`` (2H, I) and ``bias``
    (2H), rows ``[0:H]`` = z, ``[H:2H]`` = h̃; 2H(I + 1) parameters. Recorded gates: z,
    h_tilde, h.
    """

    gates = 2
    gate_names = ("z", "h_tilde", "h")

    def coefficients(self, k: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        k_z, h_tilde = k.chunk(2, dim=-1)  # (..., H) each
        z = torch.sigmoid(k_z)  # (..., H)
        return 1 - z, z * h_tilde, {"z": z, "h_tilde": h_tilde}


class MinLSTMCell(MinCell):
    r"""minLSTM (Feng et al. 2024, section 3.1): an LSTM whose gates read x_t alone, with no
    output gate and no cell state apart from h, and whose forget and input gates are
    normalised to sum to one (so h stays on the scale of h̃, whatever the sequence length).

    .. math::
        f_t &= \sigma(W_f x_t + b_f)                           \quad\text{forget gate}\\
        i_t &= \sigma(W_i x_t + b_i)                           \quad\text{input gate}\\
        \tilde h_t &= W_h x_t + b_h                            \quad\text{candidate}\\
        f'_t &= f_t / (f_t + i_t), \qquad i'_t = i_t / (f_t + i_t)\\
        h_t &= f'_t \odot h_{t-1} + i'_t \odot \tilde h_t

    so a_t = f'_t and b_t = i'_t ⊙ h̃_t. The code computes f'_t as
    σ(log f_t - log i_t) (the same number), which stays finite for saturated inputs where f_t
    and i_t both underflow to 0 and f_t / (f_t + i_t) would be 0/0. Weight layout:
    ``weight_ih`` (3H, I) and ``bias`` (3H), rows ``[0:H]`` = f, ``[H:2H]`` = i,
    ``[2H:3H]`` = h̃ (the paper's order); 3H(I + 1) parameters. Recorded gates: f and i (the
    normalised f' and i', which act on h), h_tilde, h.
    """

    gates = 3
    gate_names = ("f", "i", "h_tilde", "h")

    def coefficients(self, k: Tensor) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        k_f, k_i, h_tilde = k.chunk(3, dim=-1)  # (..., H) each
        log_f, log_i = F.logsigmoid(k_f), F.logsigmoid(k_i)  # (..., H): log f_t, log i_t
        # f / (f + i) = sigmoid(log f - log i): finite where f and i both underflow to 0
        f_prime = torch.sigmoid(log_f - log_i)  # (..., H)
        i_prime = 1 - f_prime  # (..., H): i / (f + i)
        return f_prime, i_prime * h_tilde, {"f": f_prime, "i": i_prime, "h_tilde": h_tilde}
