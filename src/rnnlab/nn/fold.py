"""A Linear before a recurrent layer, folded into the layer's input weights.

Shape legend: B batch, T time, K features of the raw input, I the layer's input features (the
Linear's outputs), H hidden units, G gate blocks (LSTM 4, GRU 3, RNN 1, minGRU/minLSTM 2).

The tutorial's MNIST model reads each row through a Linear(28, 128) with no activation and
feeds the result to the LSTM, whose gates start with W_ih u_t + b, u_t = W x_t + b_in. Matrix
products associate, so

    W_ih (W x_t + b_in) + b  =  (W_ih W) x_t + (W_ih b_in + b).

The layer can therefore run on x itself with the folded weights W_ih W (G*H, K) and
W_ih b_in + b (G*H,): the same function of the same parameters, whose gradients autograd
carries back through the two small products to W, b_in, W_ih and b. Only the arithmetic
changes: per step and row the input side costs G*H*K multiply-adds instead of I*K + G*H*I,
and in training neither the (B, T, I) activations u nor their gradient is ever formed. For the
MNIST model (K = 28, I = H = 128) that is 1.62 instead of 2.87 GFLOP per training step
(benchmarks/RESULTS.md, "The Linear folded into the LSTM"). The results differ from the unfolded
computation by float rounding only (tests/test_fold.py holds outputs and gradients to 1e-5).

The fold is written and tested for the plain cells (:data:`FOLDABLE`), which read their input
only through W_ih u_t + b. A cell that does anything to W_ih u_t before adding the bias (the
LayerNorm variants normalise it) would not compute the same function, and xLSTM's cells keep
other input weights; for every cell outside the list, :func:`fold_input` applies the Linear
itself, and the layer runs as it would unfolded.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnlab.nn.cells import GRUCell, LSTMCell, RNNCell
from rnnlab.nn.mincells import MinGRUCell, MinLSTMCell
from rnnlab.nn.validation import check_input

__all__ = ["FOLDABLE", "fold_input", "check_projection"]

# Exact types: the variant cells subclass these and may normalise W_ih u before the bias.
FOLDABLE = (LSTMCell, GRUCell, RNNCell, MinGRUCell, MinLSTMCell)


def check_projection(name: str, projection: object, input_size: int, x: Tensor) -> None:
    """``projection`` must be ``(weight (I, K), bias (I,) or None)`` with I the layer's input
    size and K the last dimension of x."""
    if not isinstance(projection, tuple) or len(projection) != 2:
        raise TypeError(
            f"{name} expected input_projection as (weight, bias), got {type(projection).__name__}"
        )
    weight, bias = projection
    K = x.shape[-1] if isinstance(x, Tensor) and x.dim() == 3 else "K"
    if not isinstance(weight, Tensor) or weight.dim() != 2 or weight.shape[0] != input_size:
        got = tuple(weight.shape) if isinstance(weight, Tensor) else type(weight).__name__
        raise ValueError(
            f"{name} expected an input_projection weight of shape ({input_size}, {K}), got {got}"
        )
    if bias is not None and (not isinstance(bias, Tensor) or tuple(bias.shape) != (input_size,)):
        got = tuple(bias.shape) if isinstance(bias, Tensor) else type(bias).__name__
        raise ValueError(
            f"{name} expected an input_projection bias of shape ({input_size},), got {got}"
        )


def _folded_cell(cell: nn.Module, weight: Tensor, bias: Tensor | None) -> nn.Module:
    """A shallow copy of ``cell`` that reads K inputs: its ``weight_ih`` is W_ih W (G*H, K) and
    its ``bias`` b + W_ih b_in, both functions of the original parameters (autograd flows back
    to them); every other parameter is the cell's own tensor."""
    view = copy.copy(cell)  # shares the buffers and the other parameters
    params = dict(cell._parameters)
    # In the parameters' own dtype whatever autocast says: the kernels cast where they need to.
    with torch.autocast(weight.device.type, enabled=False):
        params["weight_ih"] = cell.weight_ih @ weight  # (G*H, I) @ (I, K) -> (G*H, K)
        if bias is not None:
            params["bias"] = cell.bias + cell.weight_ih @ bias  # (G*H,)
    view._parameters = params
    view.input_size = weight.shape[1]
    return view


def fold_input(
    name: str,
    cells: list[nn.Module],
    num_directions: int,
    x: Tensor,
    projection: tuple[Tensor, Tensor | None],
) -> tuple[Tensor, list[nn.Module]]:
    """The layer's input x (B, T, K) and its cells, with the Linear ``projection`` (weight
    (I, K), bias (I,) or None) before the first layer folded into that layer's cells (one per
    direction). Where a first-layer cell cannot fold (see the module docstring), and inside
    torch.compile, x becomes x W^T + b_in (B, T, I) and the cells stay as they are. The
    projection is checked against the cells' input size I and x against its K first; ``name``
    (the layer's) starts the errors."""
    check_projection(name, projection, cells[0].input_size, x)
    weight, bias = projection
    check_input(name, x, weight.shape[1])
    D = num_directions
    # Under torch.compile the Linear runs first: dynamo cannot trace the copy of a module.
    if torch.compiler.is_compiling() or not all(type(cell) in FOLDABLE for cell in cells[:D]):
        return F.linear(x, weight, bias), cells  # (B, T, I)
    return x, [_folded_cell(cell, weight, bias) for cell in cells[:D]] + cells[D:]
