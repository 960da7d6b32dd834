r"""The GRU's variants, where the literature defines one: LayerNorm (Ba et al. 2016, whose
recipe normalises the summed inputs of any recurrent unit), recurrent dropout (Gal &
Ghahramani 2016; Keras's ``GRU(recurrent_dropout=...)``) and zoneout (Krueger et al. 2017,
who apply it to the GRU's one state). The LSTM-only ones (peepholes read a cell state;
projection is LSTMP's) have no GRU form.

Shape legend: B batch, T time, I input features, H hidden units.

:class:`rnnlab.nn.GRU` builds a :class:`VariantGRUCell` instead of the plain
:class:`~rnnlab.nn.cells.GRUCell` as soon as one option is on. One step, gate rows r, z, n as
the plain cell (torch's layout, the reset gate applied after the recurrent product), with every
option on (each line without its option is the plain GRU's)::

    h_in  = h_{t-1} * m_rec                          recurrent dropout: one mask per sequence
    a_x   = LN(W_ih x_t) * gamma_ih                  LayerNorm of each product over all 3H
    a_h   = LN(W_hh h_in) * gamma_hh                   rows, gains only (the biases stay)
    r     = sigmoid(a_x_r + a_h_r + b_r)
    z     = sigmoid(a_x_z + a_h_z + b_z)
    n     = tanh(a_x_n + b_n + r * (a_h_n + b_hn))
    h_new = (1 - z) * n + z * h_{t-1}                the carried h, not the dropped-out h_in
    h_t   = d * h_{t-1} + (1 - d) * h_new            zoneout: d ~ Bernoulli(z_h), training only

Keras's GRU drops h_{t-1} in its recurrent products only, as here, with a mask per gate
(rnnlab shares one mask between the three: Gal & Ghahramani's tied form). Both noises are off
in evaluation mode, as in :mod:`rnnlab.nn.variants`, whose :class:`~rnnlab.nn.variants.
CellNoise` carries the masks (``zone_h`` only: the GRU has no cell state).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rnnlab.nn.variants import StepNoise, VariantCell, check_rate, normalised_product

__all__ = ["VariantGRUCell", "GRU_VARIANT_OPTIONS"]

# The layer options that make a GRU a variant, with their "off" values.
GRU_VARIANT_OPTIONS: dict[str, object] = {
    "layer_norm": False,
    "recurrent_dropout": 0.0,
    "zoneout": 0.0,
}


class VariantGRUCell(VariantCell):
    r"""A GRU cell with any of LayerNorm, recurrent dropout and zoneout (equations in the module
    docstring; the plain GRU's are :class:`~rnnlab.nn.cells.GRUCell`).

    Parameters as :class:`~rnnlab.nn.cells.GRUCell` (``weight_ih`` (3H, I), ``weight_hh``
    (3H, H), ``bias`` (3H), ``bias_hn`` (H)), and with ``layer_norm`` the gains
    ``ln_ih_weight`` and ``ln_hh_weight`` (3H, ones): 3H(I + H + 3) + H parameters.
    ``recurrent_dropout`` p and ``zoneout`` z add none; they act in training only, through masks
    the layer samples (:meth:`sample_noise`).
    """

    gates = 3

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        layer_norm: bool = False,
        recurrent_dropout: float = 0.0,
        zoneout: float = 0.0,
        ln_eps: float = 1e-5,
    ) -> None:
        name = type(self).__name__
        self.layer_norm = bool(layer_norm)
        self.recurrent_dropout = check_rate(name, "recurrent_dropout", recurrent_dropout)
        self.zoneout_hidden = check_rate(
            name, "zoneout (one rate: the GRU has no cell state)", zoneout
        )
        self.zoneout_cell = 0.0
        self.ln_eps = float(ln_eps)
        self.output_size = hidden_size
        super().__init__(input_size, hidden_size)
        H = hidden_size
        self.bias_hn = nn.Parameter(torch.zeros(H))  # (H,)
        if self.layer_norm:
            self.ln_ih_weight = nn.Parameter(torch.ones(3 * H))  # (3H,)
            self.ln_hh_weight = nn.Parameter(torch.ones(3 * H))  # (3H,)

    def reset_parameters(self) -> None:
        super().reset_parameters()
        for name in ("ln_ih_weight", "ln_hh_weight"):
            if hasattr(self, name):  # absent while the base __init__ runs
                nn.init.ones_(getattr(self, name))
        if hasattr(self, "bias_hn"):
            nn.init.zeros_(self.bias_hn)

    def extra_repr(self) -> str:
        s = super().extra_repr()
        if self.layer_norm:
            s += ", layer_norm=True"
        if self.recurrent_dropout:
            s += f", recurrent_dropout={self.recurrent_dropout}"
        if self.zoneout_hidden:
            s += f", zoneout={self.zoneout_hidden}"
        return s

    def forward(
        self,
        x: Tensor,
        h: Tensor,
        return_gates: bool = False,
        noise: StepNoise | None = None,
        a_x: Tensor | None = None,
    ) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
        """One step: x (B, I), h (B, H) -> h_t (B, H), plus the gates (r, z, n, h) if asked.
        ``noise``: this step's masks (None: none); ``a_x`` (B, 3H): :meth:`gate_inputs` of x
        computed beforehand (the fused path's hoisting)."""
        H = self.hidden_size
        noise = noise or StepNoise()
        h_in = h if noise.recurrent is None else h * noise.recurrent  # (B, H)
        a_x = self.gate_inputs(x) if a_x is None else a_x  # (B, 3H)
        gain = getattr(self, "ln_hh_weight", None)
        a_h = normalised_product(h_in, self.weight_hh, gain, self.ln_eps)  # (B, 3H)
        gx = a_x + self.bias  # (B, 3H)
        r = torch.sigmoid(gx[:, :H] + a_h[:, :H])  # (B, H)
        z = torch.sigmoid(gx[:, H : 2 * H] + a_h[:, H : 2 * H])  # (B, H)
        n = torch.tanh(gx[:, 2 * H :] + r * (a_h[:, 2 * H :] + self.bias_hn))  # (B, H)
        h_new = (1 - z) * n + z * h  # (B, H)
        h_t = h_new if noise.zone_h is None else torch.lerp(h_new, h, noise.zone_h)
        return (h_t, {"r": r, "z": z, "n": n, "h": h_t}) if return_gates else h_t
