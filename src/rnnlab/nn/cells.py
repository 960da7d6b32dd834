"""Reference recurrent cells, each written from its equations.

Shape legend used in every comment of this package:
    B batch, T time, I input features, H hidden units, D directions (1 or 2), L layers.

Every cell keeps its input-to-hidden weights, hidden-to-hidden weights and bias as separate
parameters, named after the equations: ``weight_ih`` (G*H, I), ``weight_hh`` (G*H, H) and ``bias``
(G*H), where G is the number of gate blocks. Olah's "Understanding LSTM Networks" (2015) writes
one matrix W over the concatenation [h_{t-1}, x_t]; W [h, x] = W_hh h + W_ih x, so the two forms
are the same model.

These cells are the readable reference. The fast paths (:mod:`rnnlab.nn.backends`) use the very
same parameters and are tested against them.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn

__all__ = ["Cell", "LSTMState", "RNNCell", "LSTMCell", "GRUCell"]


class LSTMState(NamedTuple):
    """Recurrent state of an LSTM: hidden state ``h`` and cell state ``c``, each (..., B, H)."""

    h: Tensor
    c: Tensor


def _check_sizes(name: str, input_size: int, hidden_size: int) -> None:
    for what, value in (("input_size", input_size), ("hidden_size", hidden_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} expected {what} to be a positive int, got {value!r}")


def _glorot_uniform_(weight: Tensor) -> None:
    """Glorot/Xavier uniform over the whole (G*H, I) kernel, as Keras initialises ``kernel``."""
    fan_out, fan_in = weight.shape
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    nn.init.uniform_(weight, -bound, bound)


def _orthogonal_(weight: Tensor) -> None:
    """Orthogonal recurrent weights: Keras initialises the (H, G*H) recurrent kernel
    orthogonally (Saxe et al. 2014), which keeps early gradients from exploding or vanishing."""
    kernel = torch.empty(weight.shape[1], weight.shape[0], dtype=weight.dtype)  # (H, G*H)
    nn.init.orthogonal_(kernel)
    with torch.no_grad():
        weight.copy_(kernel.T)


class Cell(nn.Module):
    """The base class of rnnlab's cells: the shared parameters and their initialisation.

    A cell has ``gates`` blocks of H rows in ``weight_ih`` (G*H, I), ``weight_hh`` (G*H, H) and
    one ``bias`` (G*H,) per gate; subclasses give ``gates``, ``forward(x, state) -> state`` for
    one step (the readable reference) and the gate names they record. A new cell kind
    subclasses it (or brings its own parameters) and registers its layer in
    :mod:`rnnlab.nn.registry`."""

    gates: int = 1

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        _check_sizes(type(self).__name__, input_size, hidden_size)
        self.input_size = input_size
        self.hidden_size = hidden_size
        G, H = self.gates, hidden_size
        self.weight_ih = nn.Parameter(torch.empty(G * H, input_size))  # (G*H, I)
        self.weight_hh = nn.Parameter(torch.empty(G * H, H))  # (G*H, H)
        self.bias = nn.Parameter(torch.empty(G * H))  # (G*H,)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _glorot_uniform_(self.weight_ih.data)
        _orthogonal_(self.weight_hh.data)
        nn.init.zeros_(self.bias)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}"


class RNNCell(Cell):
    r"""Vanilla (Elman) RNN cell.

    .. math::  h_t = \tanh(W_{ih} x_t + W_{hh} h_{t-1} + b)

    Parameters: ``weight_ih`` (H, I), ``weight_hh`` (H, H), ``bias`` (H); H(I + H + 1) in all.
    Initialisation: Glorot-uniform ``weight_ih``, orthogonal ``weight_hh``, zero ``bias``
    (Keras's ``SimpleRNN`` defaults). Bengio et al. (1994) showed why this cell struggles to
    carry information over long gaps: the gradient through many tanh steps vanishes.
    """

    gates = 1

    def forward(
        self, x: Tensor, h: Tensor, return_gates: bool = False
    ) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
        """One step: x (B, I), h (B, H) -> h_t (B, H), plus ``{"h": h_t}`` if asked."""
        h_t = torch.tanh(x @ self.weight_ih.T + h @ self.weight_hh.T + self.bias)  # (B, H)
        return (h_t, {"h": h_t}) if return_gates else h_t


class LSTMCell(Cell):
    r"""Long short-term memory cell (Hochreiter & Schmidhuber 1997, with the forget gate of
    Gers et al. 2000), with the equations of Olah's "Understanding LSTM Networks" (2015): one
    weight matrix and one bias per gate.

    .. math::
        i_t &= \sigma(W_{ii} x_t + W_{hi} h_{t-1} + b_i)        \quad\text{input gate}\\
        f_t &= \sigma(W_{if} x_t + W_{hf} h_{t-1} + b_f)        \quad\text{forget gate}\\
        g_t &= \tanh(W_{ig} x_t + W_{hg} h_{t-1} + b_g)         \quad\text{candidate } \tilde C_t\\
        o_t &= \sigma(W_{io} x_t + W_{ho} h_{t-1} + b_o)        \quad\text{output gate}\\
        c_t &= f_t \odot c_{t-1} + i_t \odot g_t\\
        h_t &= o_t \odot \tanh(c_t)

    Weight layout: ``weight_ih`` (4H, I), ``weight_hh`` (4H, H) and ``bias`` (4H) stack the gates
    in the order i, f, g, o, rows ``[0:H]`` = i, ``[H:2H]`` = f, ``[2H:3H]`` = g, ``[3H:4H]`` = o.
    This is the order of torch.nn.LSTM and of Keras (which calls g "c"), so weights copy across
    without reordering. There is one bias per gate (TF1 and Keras style), not torch's two, so the
    cell has exactly 4H(I + H + 1) parameters.

    Initialisation (Keras's ``LSTM`` defaults): Glorot-uniform ``weight_ih``, orthogonal
    ``weight_hh``, zero bias except the forget-gate block, which starts at ``forget_bias``
    (default 1.0; Jozefowicz et al. 2015 showed that a forget bias of 1 helps learning). This is
    Keras's ``unit_forget_bias``. TF1's ``BasicLSTMCell(forget_bias=1.0)`` instead adds the
    constant at every step to a zero-initialised bias: both start from the same function, but
    here the forget bias is an ordinary trainable parameter.
    """

    gates = 4

    def __init__(self, input_size: int, hidden_size: int, forget_bias: float = 1.0) -> None:
        self.forget_bias = float(forget_bias)
        super().__init__(input_size, hidden_size)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        H = self.hidden_size
        with torch.no_grad():
            self.bias[H : 2 * H].fill_(self.forget_bias)

    def forward(
        self, x: Tensor, state: LSTMState, return_gates: bool = False
    ) -> LSTMState | tuple[LSTMState, dict[str, Tensor]]:
        """One step: x (B, I), state (h, c) each (B, H) -> new state, plus the gates if asked."""
        h_prev, c_prev = state
        gates = x @ self.weight_ih.T + h_prev @ self.weight_hh.T + self.bias  # (B, 4H)
        i, f, g, o = gates.chunk(4, dim=-1)  # each (B, H)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        c = f * c_prev + i * g  # (B, H)
        h = o * torch.tanh(c)  # (B, H)
        state = LSTMState(h, c)
        if return_gates:
            return state, {"i": i, "f": f, "g": g, "o": o, "c": c, "h": h}
        return state


class GRUCell(Cell):
    r"""Gated recurrent unit (Cho et al. 2014) in the PyTorch/cuDNN convention.

    .. math::
        r_t &= \sigma(W_{ir} x_t + W_{hr} h_{t-1} + b_r)                  \quad\text{reset}\\
        z_t &= \sigma(W_{iz} x_t + W_{hz} h_{t-1} + b_z)                  \quad\text{update}\\
        n_t &= \tanh(W_{in} x_t + b_n + r_t \odot (W_{hn} h_{t-1} + b_{hn}))  \quad\text{new}\\
        h_t &= (1 - z_t) \odot n_t + z_t \odot h_{t-1}

    The reset gate multiplies the recurrent term *after* its matrix product, including its own
    bias ``b_hn`` (torch.nn.GRU, cuDNN, and Keras's ``reset_after=True``). Because of that, the
    recurrent bias of the candidate cannot be folded into ``bias``: the cell keeps ``bias`` (3H)
    for r, z, n and ``bias_hn`` (H), 3H(I + H) + 4H parameters in all. Rows of ``weight_ih``,
    ``weight_hh`` and ``bias`` are stacked r, z, n, as in torch.

    Initialisation: Glorot-uniform ``weight_ih``, orthogonal ``weight_hh``, zero biases.
    """

    gates = 3

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__(input_size, hidden_size)
        self.bias_hn = nn.Parameter(torch.zeros(hidden_size))  # (H,)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if hasattr(self, "bias_hn"):  # absent while the base __init__ runs
            nn.init.zeros_(self.bias_hn)

    def forward(
        self, x: Tensor, h: Tensor, return_gates: bool = False
    ) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
        """One step: x (B, I), h (B, H) -> h_t (B, H), plus the gates if asked."""
        H = self.hidden_size
        gx = x @ self.weight_ih.T + self.bias  # (B, 3H)
        gh = h @ self.weight_hh.T  # (B, 3H)
        r = torch.sigmoid(gx[:, :H] + gh[:, :H])  # (B, H)
        z = torch.sigmoid(gx[:, H : 2 * H] + gh[:, H : 2 * H])  # (B, H)
        n = torch.tanh(gx[:, 2 * H :] + r * (gh[:, 2 * H :] + self.bias_hn))  # (B, H)
        h_t = (1 - z) * n + z * h  # (B, H)
        return (h_t, {"r": r, "z": z, "n": n, "h": h_t}) if return_gates else h_t
