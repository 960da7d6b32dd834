"""Torch's own recurrent ops on rnnlab's parameters: one direction of one layer, or a whole
stack in one call (:func:`stack`), unpadded.

Shape legend: B batch, T time, I input features, H hidden units.

``torch.lstm``, ``torch.gru`` and ``torch.rnn_tanh`` are the functional ops behind
torch.nn.LSTM/GRU/RNN (oneDNN on the CPU, cuDNN on CUDA). They take torch's parameter list
``[weight_ih, weight_hh, bias_ih, bias_hh]``; rnnlab's cells map onto it without copying a
weight:

* LSTM and RNN have one bias per gate, so ``bias_ih = bias`` and ``bias_hh = 0``;
* the GRU (torch's convention: the reset gate multiplies ``W_hn h + b_hn``) keeps ``bias``
  (3H, rows r, z, n) and ``bias_hn`` (H), so ``bias_ih = bias`` and
  ``bias_hh = [0 (2H), bias_hn]``: torch's ``b_hr`` and ``b_hz`` would only add to ``b_r`` and
  ``b_z``, while ``b_hn`` sits inside the reset product, where rnnlab keeps it too.

Gradients reach the cells' parameters through torch's own backward (the zeros get none). These
ops cannot skip padded steps, so :mod:`rnnlab.nn.backends.dispatch` routes here only without a
mask; a backward direction is the forward op on the time-reversed input, exact when every step
is real.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rnnlab.nn.cells import GRUCell, LSTMCell, LSTMState, RNNCell
from rnnlab.nn.variant_gru import VariantGRUCell
from rnnlab.nn.variants import VariantLSTMCell

__all__ = ["check_call", "check_variant", "lstm", "gru", "rnn", "stack"]

TorchCell = LSTMCell | VariantLSTMCell | GRUCell | VariantGRUCell | RNNCell  # cells torch runs

# torch's functional ops after (input, hx, params): has_biases, num_layers, dropout, train,
# bidirectional, batch_first
_ONE_LAYER = (True, 1, 0.0, False, False, True)


def lstm(
    cell: LSTMCell | VariantLSTMCell, x: Tensor, state: LSTMState, *, reverse: bool = False
) -> tuple[Tensor, LSTMState]:
    """x (B, T, I), state (h (B, R), c (B, H)) -> (output (B, T, R), final LSTMState). A variant
    cell with a projection (and nothing else, :func:`check_variant`) passes ``weight_hr`` as
    torch's fifth parameter; torch reads the projection from h being narrower than c."""
    params = _params(cell)
    if getattr(cell, "proj_size", 0):
        params.append(cell.weight_hr)
    hx = [state.h[None], state.c[None]]  # each (1, B, H)
    out, h, c = torch.lstm(_time(x, reverse), hx, params, *_ONE_LAYER)
    return _time(out, reverse), LSTMState(h[0], c[0])


def gru(
    cell: GRUCell | VariantGRUCell, x: Tensor, h: Tensor, *, reverse: bool = False
) -> tuple[Tensor, Tensor]:
    """x (B, T, I), h (B, H) -> (output (B, T, H), final h (B, H))."""
    out, h_n = torch.gru(_time(x, reverse), h[None], _params(cell), *_ONE_LAYER)
    return _time(out, reverse), h_n[0]


def rnn(cell: RNNCell, x: Tensor, h: Tensor, *, reverse: bool = False) -> tuple[Tensor, Tensor]:
    """x (B, T, I), h (B, H) -> (output (B, T, H), final h (B, H))."""
    out, h_n = torch.rnn_tanh(_time(x, reverse), h[None], _params(cell), *_ONE_LAYER)
    return _time(out, reverse), h_n[0]


def _params(cell: TorchCell) -> list[Tensor]:
    """One cell's ``[weight_ih, weight_hh, bias_ih, bias_hh]`` in torch's layout (see the module
    docstring for the biases)."""
    if isinstance(cell, (GRUCell, VariantGRUCell)):
        H = cell.hidden_size
        bias_hh = torch.cat([cell.bias_hn.new_zeros(2 * H), cell.bias_hn])  # (3H,) 0 for r, z
        return [cell.weight_ih, cell.weight_hh, cell.bias, bias_hh]
    return [cell.weight_ih, cell.weight_hh, cell.bias, torch.zeros_like(cell.bias)]


def stack(
    cells: list[LSTMCell] | list[GRUCell] | list[RNNCell],
    x: Tensor,
    state: Tensor | LSTMState,
    num_layers: int,
    bidirectional: bool,
) -> tuple[Tensor, Tensor | LSTMState]:
    """A whole stack in one call of torch's op, as torch.nn.LSTM/GRU/RNN make it: ``cells`` in
    rnnlab's order (index ``layer * D + direction``, torch's too), x (B, T, I), state (L*D, B,
    H) (an LSTMState of two for the LSTM) -> (output (B, T, D*H), final state shaped as
    ``state``). No dropout between the layers: the caller takes this only where none applies."""
    params = [p for cell in cells for p in _params(cell)]
    flags = (True, num_layers, 0.0, torch.is_grad_enabled(), bidirectional, True)
    if isinstance(cells[0], LSTMCell):
        out, h, c = torch.lstm(x, [state.h, state.c], params, *flags)
        return out, LSTMState(h, c)
    op = torch.gru if isinstance(cells[0], GRUCell) else torch.rnn_tanh
    out, h = op(x, state, params, *flags)
    return out, h


def check_call(x: Tensor, mask: Tensor | None) -> None:
    """The rows of the routing table where backend "torch" raises: a mask, or a dtype other
    than float32/float64."""
    if mask is not None:
        raise ValueError(
            "backend='torch' expected no mask (torch's own recurrent op cannot skip padded "
            "steps), got lengths or a mask with padding. Use backend='auto', 'fused' or "
            "'reference' for padded batches, or lengths all equal to T."
        )
    if x.dtype not in (torch.float32, torch.float64):
        raise RuntimeError(
            f"backend='torch' runs float32 or float64 here, got {x.dtype}. Cast the layer "
            "and input with .float(), or use backend='fused'."
        )


def check_variant(cell: VariantLSTMCell | VariantGRUCell) -> None:
    """torch's LSTM op has a projection (``proj_size``) and nothing else of the variants, its GRU
    op none: refuse a variant cell with LayerNorm or peepholes (recurrent dropout and zoneout
    are refused when their masks come, in training)."""
    extras = [name for name in ("layer_norm", "peepholes") if getattr(cell, name, False)]
    if extras:
        what = " or ".join(extras)
        has = (
            f"torch's own LSTM op, which has a projection (proj_size) but not {what}"
            if isinstance(cell, VariantLSTMCell)
            else f"torch's own GRU op, which has no {what}"
        )
        raise RuntimeError(f"backend='torch' runs {has}. Use backend='auto' or 'fused'.")


def _time(x: Tensor, reverse: bool) -> Tensor:
    """x (B, T, .) in processing order: flipped in time for the backward direction."""
    return x.flip(1) if reverse else x
