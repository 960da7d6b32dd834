r"""The LSTM variants users keep asking torch and Keras for, in one readable cell: LayerNorm
(Ba et al. 2016), projection (LSTMP, Sak et al. 2014), peepholes (Gers & Schmidhuber 2000),
recurrent dropout (Gal & Ghahramani 2016, Keras's ``recurrent_dropout``) and zoneout (Krueger
et al. 2017).

Shape legend: B batch, T time, I input features, H cell units, P projection size,
R = P if P > 0 else H (the width of h: the output, the carried h and the recurrent GEMM's input).

:class:`rnnlab.nn.LSTM` builds a :class:`VariantLSTMCell` instead of the plain
:class:`~rnnlab.nn.cells.LSTMCell` as soon as one of these options is on, so the plain LSTM and
its kernels stay exactly as they are. The equations of one step, with every option on (each
line without its option is the plain LSTM's)::

    h_in  = h_{t-1} * m_rec                         recurrent dropout: one mask per sequence
    a_x   = LN(W_ih x_t) * gamma_ih                 LayerNorm of each product, over all 4H
    a_h   = LN(W_hh h_in) * gamma_hh                  rows, gains only (the bias is b)
    a     = a_x + a_h + b
    i     = sigmoid(a_i + p_i * c_{t-1})            peepholes read the cell state
    f     = sigmoid(a_f + p_f * c_{t-1})
    g     = tanh(a_g)
    c_new = f * c_{t-1} + i * g
    o     = sigmoid(a_o + p_o * c_new)              the output gate peeks at the new c
    m     = o * tanh(LN(c_new) * gamma_c + beta_c)  LayerNorm over H on the way to h only
    h_new = W_hr m                                  projection to P (torch's proj_size)
    c_t   = d_c * c_{t-1} + (1 - d_c) * c_new       zoneout: d ~ Bernoulli(z) per unit and
    h_t   = d_h * h_{t-1} + (1 - d_h) * h_new         step, in training only

LN(v) = (v - mean(v)) / sqrt(var(v) + eps) (biased variance, as torch's layer_norm). The
carried cell state is c_new, not its normalised form (Ba et al.'s equations; pytorch's
``custom_lstms.py`` carries the normalised one). In evaluation mode both noises are off:
recurrent dropout, like all dropout, is the identity, and so is zoneout (c_t = c_new,
h_t = h_new), the convention of Keras's and torch's dropout layers; Krueger et al. instead
mix with the expected mask at test time, which a user gets by running in training mode with a
fixed mask of the expectation.

The noise is sampled by the layer (:meth:`VariantLSTMCell.sample_noise`) and handed to the
kernels as a :class:`CellNoise`, so every fast path applies the very same masks as the
reference loop, and a test can give a mask of its own (e.g. Keras's).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from rnnlab.nn.cells import Cell, LSTMState

__all__ = [
    "VariantCell",
    "VariantLSTMCell",
    "CellNoise",
    "StepNoise",
    "VARIANT_OPTIONS",
    "step_noise",
    "layer_noise",
    "zoneout_rates",
    "check_rate",
    "normalised_product",
]

# The layer options that make an LSTM a variant, with their "off" values.
VARIANT_OPTIONS: dict[str, object] = {
    "proj_size": 0,
    "layer_norm": False,
    "peepholes": False,
    "recurrent_dropout": 0.0,
    "zoneout": 0.0,
}


class CellNoise(NamedTuple):
    """The random masks of one direction of one layer for one call (all optional).

    ``recurrent`` (B, R): recurrent dropout's mask, already scaled by 1 / (1 - p) (Keras's
    semantics: the same mask at every step of the sequence); ``zone_c`` (B, T, H) and
    ``zone_h`` (B, T, R): zoneout's 0/1 masks, 1 where the unit keeps its previous value,
    indexed in real time order (a backward direction reads ``[:, t]`` at time t). The masks are
    constants: no gradient flows into them."""

    recurrent: Tensor | None = None
    zone_c: Tensor | None = None
    zone_h: Tensor | None = None


class StepNoise(NamedTuple):
    """One step's slice of a :class:`CellNoise`: recurrent (B, R), zone_c (B, H), zone_h (B, R)."""

    recurrent: Tensor | None = None
    zone_c: Tensor | None = None
    zone_h: Tensor | None = None


def layer_noise(
    name: str,
    given: list | None,
    cells: Sequence[nn.Module],
    ks: range,
    training: bool,
    shape: tuple[int, int],
    x: Tensor,
) -> list[CellNoise | None] | None:
    """The masks of a stack's layer-directions ``ks`` (indexes into ``cells``, all of the
    stack's, ``layer * D + direction``): the caller's ``given`` (one entry per cell), else in
    ``training`` fresh ones of (B, T) = ``shape`` for variant cells with recurrent dropout or
    zoneout, else None. ``name`` (the layer's) starts the error."""
    if given is not None:
        if len(given) != len(cells):
            raise ValueError(
                f"{name} expected noise to have one entry per layer and "
                f"direction ({len(cells)}), got {len(given)}"
            )
        return [given[k] for k in ks]
    if not training:
        return None
    chosen = [cells[k] for k in ks]
    if not any(getattr(cell, "has_noise", False) for cell in chosen):
        return None
    return [cell.sample_noise(*shape, x) for cell in chosen]


def step_noise(noise: CellNoise, t: int) -> StepNoise:
    """The masks of the step at (real) time ``t``."""
    zone_c = None if noise.zone_c is None else noise.zone_c[:, t]
    zone_h = None if noise.zone_h is None else noise.zone_h[:, t]
    return StepNoise(noise.recurrent, zone_c, zone_h)


def zoneout_rates(name: str, zoneout: float | tuple[float, float] | list) -> tuple[float, float]:
    """``zoneout`` as (cell, hidden) rates: one number is used for both, a pair is (z_c, z_h)
    (Krueger et al. found z_c = 0.5, z_h = 0.05 best for character models). Each in [0, 1)."""
    pair = (zoneout, zoneout) if isinstance(zoneout, (int, float)) else tuple(zoneout)
    if len(pair) != 2 or not all(
        isinstance(z, (int, float)) and not isinstance(z, bool) and 0.0 <= z < 1.0 for z in pair
    ):
        raise ValueError(
            f"{name} expected zoneout to be a rate in [0, 1) or a pair (cell, hidden) of them, "
            f"got {zoneout!r}"
        )
    return float(pair[0]), float(pair[1])


def normalised_product(v: Tensor, weight: Tensor, gain: Tensor | None, eps: float) -> Tensor:
    """v (..., K) @ weight.T (G, K) -> (..., G), then LayerNorm over those G rows scaled by
    ``gain`` (G) if ``gain`` is given (a LayerNorm cell's W_ih x and W_hh h)."""
    a = v @ weight.T
    return a if gain is None else F.layer_norm(a, a.shape[-1:], gain, None, eps)


def check_rate(name: str, what: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name} expected {what} in [0, 1), got {value!r}")
    return float(value)


class VariantCell(Cell):
    """What the LSTM's and the GRU's variant cells share: the noise they draw in training and the
    input side of their gates. A subclass sets ``recurrent_dropout``, ``zoneout_cell`` (0 for
    a GRU), ``zoneout_hidden``, ``output_size`` (R) and ``ln_eps``, and has ``ln_ih_weight``
    with ``layer_norm``."""

    recurrent_dropout: float
    zoneout_cell: float
    zoneout_hidden: float
    output_size: int
    ln_eps: float

    @property
    def has_noise(self) -> bool:
        """Whether the cell draws masks in training (recurrent dropout or zoneout)."""
        return bool(self.recurrent_dropout or self.zoneout_cell or self.zoneout_hidden)

    def sample_noise(self, B: int, T: int, like: Tensor) -> CellNoise:
        """Fresh masks for one call over B sequences of T steps, in ``like``'s dtype and device,
        from torch's global generator: the recurrent-dropout mask (B, R) scaled by 1 / (1 - p),
        zoneout's (B, T, H) and (B, T, R) 0/1 masks (1 = keep the previous value; no c mask
        for a cell without a cell state)."""
        H, R = self.hidden_size, self.output_size
        recurrent = zone_c = zone_h = None
        if self.recurrent_dropout:
            keep = 1.0 - self.recurrent_dropout
            recurrent = like.new_empty(B, R).bernoulli_(keep).div_(keep)
        if self.zoneout_cell:
            zone_c = like.new_empty(B, T, H).bernoulli_(self.zoneout_cell)
        if self.zoneout_hidden:
            zone_h = like.new_empty(B, T, R).bernoulli_(self.zoneout_hidden)
        return CellNoise(recurrent, zone_c, zone_h)

    def gate_inputs(self, x: Tensor) -> Tensor:
        """a_x = W_ih x (LayerNorm-ed and scaled by ``ln_ih_weight`` with ``layer_norm``) for
        x (..., I) -> (..., G*H): the part of the gates that depends on the input alone, which
        the fused path computes for every step at once."""
        gain = getattr(self, "ln_ih_weight", None)
        return normalised_product(x, self.weight_ih, gain, self.ln_eps)


class VariantLSTMCell(VariantCell):
    r"""An LSTM cell with any of LayerNorm, projection, peepholes, recurrent dropout and zoneout
    (equations in the module docstring; the plain LSTM's are :class:`~rnnlab.nn.cells.LSTMCell`).

    Parameters, gate rows i, f, g, o as :class:`~rnnlab.nn.cells.LSTMCell`:

    - ``weight_ih`` (4H, I), ``weight_hh`` (4H, R), ``bias`` (4H), the forget block starting at
      ``forget_bias``;
    - ``weight_hr`` (P, H) with ``proj_size`` P > 0 (torch's ``weight_hr_l0`` layout);
    - ``ln_ih_weight``, ``ln_hh_weight`` (4H, ones) and ``ln_c_weight`` (H, ones), ``ln_c_bias``
      (H, zeros) with ``layer_norm``: 4H(I + R + 1) + PH + 10H parameters with both;
    - ``peephole`` (3H, zeros: the cell starts as the plain LSTM), rows p_i, p_f, p_o.

    ``recurrent_dropout`` p and ``zoneout`` (z_c, z_h) add no parameters; they act in training
    only, through masks the layer samples (:meth:`sample_noise`).
    """

    gates = 4

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        forget_bias: float = 1.0,
        proj_size: int = 0,
        layer_norm: bool = False,
        peepholes: bool = False,
        recurrent_dropout: float = 0.0,
        zoneout: float | tuple[float, float] = 0.0,
        ln_eps: float = 1e-5,
    ) -> None:
        name = type(self).__name__
        if isinstance(proj_size, bool) or not isinstance(proj_size, int) or proj_size < 0:
            raise ValueError(f"{name} expected proj_size to be an int >= 0, got {proj_size!r}")
        if proj_size >= hidden_size:
            raise ValueError(
                f"{name} expected proj_size smaller than hidden_size ({hidden_size}), got "
                f"{proj_size} (torch.nn.LSTM's rule: a projection must reduce)"
            )
        self.forget_bias = float(forget_bias)
        self.proj_size = proj_size
        self.output_size = proj_size or hidden_size  # R
        self.layer_norm = bool(layer_norm)
        self.peepholes = bool(peepholes)
        self.recurrent_dropout = check_rate(name, "recurrent_dropout", recurrent_dropout)
        self.zoneout_cell, self.zoneout_hidden = zoneout_rates(name, zoneout)
        self.ln_eps = float(ln_eps)
        super().__init__(input_size, hidden_size)
        H, R = hidden_size, self.output_size
        if proj_size:  # the base class made weight_hh (4H, H): the recurrent input is R wide
            self.weight_hh = nn.Parameter(torch.empty(4 * H, R))  # (4H, R)
            self.weight_hr = nn.Parameter(torch.empty(proj_size, H))  # (P, H)
        if self.layer_norm:
            self.ln_ih_weight = nn.Parameter(torch.ones(4 * H))  # (4H,)
            self.ln_hh_weight = nn.Parameter(torch.ones(4 * H))  # (4H,)
            self.ln_c_weight = nn.Parameter(torch.ones(H))  # (H,)
            self.ln_c_bias = nn.Parameter(torch.zeros(H))  # (H,)
        if self.peepholes:
            self.peephole = nn.Parameter(torch.zeros(3 * H))  # (3H,) p_i, p_f, p_o
        self.reset_parameters()

    def reset_parameters(self) -> None:
        super().reset_parameters()
        H = self.hidden_size
        with torch.no_grad():
            self.bias[H : 2 * H].fill_(self.forget_bias)
        if hasattr(self, "weight_hr"):  # absent while the base __init__ runs
            # Glorot-uniform, as Keras's kernels; torch draws U(-1/sqrt(H), 1/sqrt(H)).
            bound = (6.0 / sum(self.weight_hr.shape)) ** 0.5
            nn.init.uniform_(self.weight_hr, -bound, bound)
        for name in ("ln_ih_weight", "ln_hh_weight", "ln_c_weight"):
            if hasattr(self, name):
                nn.init.ones_(getattr(self, name))
        if hasattr(self, "ln_c_bias"):
            nn.init.zeros_(self.ln_c_bias)
        if hasattr(self, "peephole"):
            nn.init.zeros_(self.peephole)

    def extra_repr(self) -> str:
        s = super().extra_repr()
        if self.proj_size:
            s += f", proj_size={self.proj_size}"
        if self.layer_norm:
            s += ", layer_norm=True"
        if self.peepholes:
            s += ", peepholes=True"
        if self.recurrent_dropout:
            s += f", recurrent_dropout={self.recurrent_dropout}"
        if self.zoneout_cell or self.zoneout_hidden:
            s += f", zoneout=({self.zoneout_cell}, {self.zoneout_hidden})"
        return s

    def forward(
        self,
        x: Tensor,
        state: LSTMState,
        return_gates: bool = False,
        noise: StepNoise | None = None,
        a_x: Tensor | None = None,
    ) -> LSTMState | tuple[LSTMState, dict[str, Tensor]]:
        """One step: x (B, I), state (h (B, R), c (B, H)) -> new state, plus the gates (i, f, g,
        o, c, h) if asked. ``noise`` is this step's masks (None: none); ``a_x`` (B, 4H), if
        given, is :meth:`gate_inputs` of x computed beforehand (the fused path's hoisting)."""
        h_prev, c_prev = state
        H = self.hidden_size
        noise = noise or StepNoise()
        h_in = h_prev if noise.recurrent is None else h_prev * noise.recurrent  # (B, R)
        a_x = self.gate_inputs(x) if a_x is None else a_x  # (B, 4H)
        gain = getattr(self, "ln_hh_weight", None)
        a_h = normalised_product(h_in, self.weight_hh, gain, self.ln_eps)  # (B, 4H)
        a = a_x + a_h + self.bias  # (B, 4H)
        a_i, a_f, a_g, a_o = a.chunk(4, dim=-1)  # each (B, H)
        if self.peepholes:
            p_i, p_f, p_o = self.peephole[:H], self.peephole[H : 2 * H], self.peephole[2 * H :]
            a_i, a_f = a_i + p_i * c_prev, a_f + p_f * c_prev
        i, f, g = torch.sigmoid(a_i), torch.sigmoid(a_f), torch.tanh(a_g)
        c_new = f * c_prev + i * g  # (B, H)
        if self.peepholes:
            a_o = a_o + p_o * c_new
        o = torch.sigmoid(a_o)
        c_hat = c_new
        if self.layer_norm:
            c_hat = F.layer_norm(c_new, (H,), self.ln_c_weight, self.ln_c_bias, self.ln_eps)
        h_new = o * torch.tanh(c_hat)  # (B, H)
        if self.proj_size:
            h_new = h_new @ self.weight_hr.T  # (B, P)
        c, h = c_new, h_new
        if noise.zone_c is not None:
            c = torch.lerp(c_new, c_prev, noise.zone_c)  # d c_prev + (1 - d) c_new
        if noise.zone_h is not None:
            h = torch.lerp(h_new, h_prev, noise.zone_h)
        new_state = LSTMState(h, c)
        if return_gates:
            return new_state, {"i": i, "f": f, "g": g, "o": o, "c": c, "h": h}
        return new_state
