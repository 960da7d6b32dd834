"""Copy recurrent layers between rnnlab and ``torch.nn`` (``LSTM``, ``GRU``, ``RNN`` with tanh).

Shape legend: B batch, T time, I input features, H hidden units, D directions, L layers.

Biases. rnnlab keeps one bias per gate, torch two (``b_ih`` and ``b_hh``), which only ever
appear as a sum, so ``bias = b_ih + b_hh``. The exception is the GRU candidate, whose recurrent
bias sits inside the reset gate's product: rnnlab's ``GRUCell`` keeps it apart as ``bias_hn``,
so ``bias = b_ih + [b_hr, b_hz, 0]`` and ``bias_hn = b_hn``. ``to_torch`` writes ``b_ih = bias``
and ``b_hh = 0`` (GRU: ``b_hh = [0, 0, bias_hn]``). A torch module built with ``bias=False``
becomes an rnnlab layer whose (trainable) biases start at zero.

Time layout. rnnlab layers are batch first. ``from_torch`` accepts ``batch_first=False``
modules too: the weights do not depend on the layout, but the converted layer then expects
(B, T, I) input, so transpose time-major input with ``x.transpose(0, 1)``. ``to_torch`` returns
a ``batch_first=True`` module.
"""

from __future__ import annotations

from typing import TypeVar

import torch
from torch import Tensor, nn

from rnnlab.nn.cells import Cell, GRUCell, LSTMCell, RNNCell
from rnnlab.nn.layers import RecurrentLayer

__all__ = ["from_torch", "to_torch"]

Layer = TypeVar("Layer", bound=RecurrentLayer)

_TORCH_TYPES: dict[type[Cell], type[nn.RNNBase]] = {
    LSTMCell: nn.LSTM,
    GRUCell: nn.GRU,
    RNNCell: nn.RNN,
}


def from_torch(cls: type[Layer], module: nn.RNNBase, backend: str = "auto") -> Layer:
    """An rnnlab ``cls`` (RNN, LSTM or GRU) that computes what ``module`` computes, on the
    module's device and dtype, in the module's train/eval mode. See the module docstring for
    biases and the time layout. An LSTM with ``proj_size`` P > 0 becomes an rnnlab LSTM with
    the same projection (``weight_hr`` (P, H) copied). Raises TypeError for the wrong module type
    and ValueError for what rnnlab cannot express (a ``relu`` RNN)."""
    name = f"{cls.__name__}.from_torch"
    torch_type = _TORCH_TYPES[cls.cell_type]
    if not isinstance(module, torch_type):
        raise TypeError(
            f"{name} expected a torch.nn.{torch_type.__name__}, got {type(module).__name__}"
        )
    proj_size = getattr(module, "proj_size", 0)  # LSTM only; its weight_hr copies as is
    if getattr(module, "nonlinearity", "tanh") != "tanh":
        raise ValueError(
            f"{name} expected nonlinearity='tanh' (rnnlab's RNN is tanh only), "
            f"got {module.nonlinearity!r}"
        )
    ref = module.weight_ih_l0
    layer = cls(
        module.input_size,
        module.hidden_size,
        num_layers=module.num_layers,
        bidirectional=module.bidirectional,
        dropout=module.dropout,
        backend=backend,
        **({"proj_size": proj_size} if proj_size else {}),
    ).to(device=ref.device, dtype=ref.dtype)
    for k, cell in enumerate(layer.cells):
        suffix = _torch_suffix(k, layer.num_directions)
        w_ih = getattr(module, f"weight_ih{suffix}")  # (G*H, I)
        w_hh = getattr(module, f"weight_hh{suffix}")  # (G*H, H)
        zeros = torch.zeros_like(cell.bias)
        b_ih = getattr(module, f"bias_ih{suffix}") if module.bias else zeros  # (G*H,)
        b_hh = getattr(module, f"bias_hh{suffix}") if module.bias else zeros  # (G*H,)
        load_cell(cell, w_ih, w_hh, b_ih, b_hh)
        if proj_size:
            with torch.no_grad():
                cell.weight_hr.copy_(getattr(module, f"weight_hr{suffix}"))  # (P, H)
    return layer.train(module.training)


def to_torch(layer: RecurrentLayer) -> nn.RNNBase:
    """A ``batch_first=True`` torch.nn.LSTM / GRU / RNN (tanh) with ``layer``'s weights, device,
    dtype and train/eval mode: ``b_ih = bias``, ``b_hh = 0`` (GRU: ``[0, 0, bias_hn]``). An LSTM
    with a projection becomes torch's ``proj_size`` LSTM; an LSTM or GRU with LayerNorm,
    peepholes, recurrent dropout or zoneout is refused: torch's modules have none of them."""
    ref = layer.cells[0].weight_ih
    options = getattr(layer, "variant_options", {})
    extra = sorted(set(options) - {"proj_size"})
    if extra:
        raise ValueError(
            f"to_torch expected a layer that torch.nn.{type(layer).__name__} can express (an "
            f"LSTM's projection at most), got one with {', '.join(extra)}"
        )
    module = _TORCH_TYPES[type(layer).cell_type](
        layer.input_size,
        layer.hidden_size,
        num_layers=layer.num_layers,
        bias=True,
        batch_first=True,
        # torch warns about dropout on a single layer, where both libraries ignore it
        dropout=layer.dropout if layer.num_layers > 1 else 0.0,
        bidirectional=layer.bidirectional,
        device=ref.device,
        dtype=ref.dtype,
        **({"proj_size": options["proj_size"]} if options else {}),
    )
    with torch.no_grad():
        for k, cell in enumerate(layer.cells):
            suffix = _torch_suffix(k, layer.num_directions)
            getattr(module, f"weight_ih{suffix}").copy_(cell.weight_ih)
            getattr(module, f"weight_hh{suffix}").copy_(cell.weight_hh)
            getattr(module, f"bias_ih{suffix}").copy_(cell.bias)
            b_hh = getattr(module, f"bias_hh{suffix}")  # (G*H,)
            b_hh.zero_()
            if isinstance(cell, GRUCell):
                b_hh[2 * cell.hidden_size :].copy_(cell.bias_hn)
            if options:
                getattr(module, f"weight_hr{suffix}").copy_(cell.weight_hr)
    return module.train(layer.training)


def _torch_suffix(k: int, num_directions: int) -> str:
    """torch's parameter suffix for cell ``k = layer * D + direction``: ``_l1_reverse``."""
    layer, direction = divmod(k, num_directions)
    return f"_l{layer}" + ("_reverse" if direction else "")


def load_cell(cell: Cell, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor, b_hh: Tensor) -> None:
    """Copy torch-layout weights (rows in rnnlab's gate order, two biases) into ``cell``."""
    H = cell.hidden_size
    with torch.no_grad():
        cell.weight_ih.copy_(w_ih)
        cell.weight_hh.copy_(w_hh)
        if isinstance(cell, GRUCell):
            cell.bias.copy_(b_ih)
            cell.bias[: 2 * H] += b_hh[: 2 * H]  # r and z: the two biases only ever add
            cell.bias_hn.copy_(b_hh[2 * H :])  # n: stays inside r * (W_hn h + b_hn)
        else:
            cell.bias.copy_(b_ih + b_hh)
