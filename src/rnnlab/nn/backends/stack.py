"""The whole-stack row of the routing table: every layer and direction of a stack in one call
of torch's recurrent op, as torch.nn.LSTM makes it.

Shape legend: B batch, T time, H hidden units, L layers, D directions (1 or 2).

:func:`route_stack` decides from :func:`rnnlab.nn.backends.dispatch.route_layer`'s decision for
the first layer (the table in :func:`~rnnlab.nn.backends.dispatch.scan_layer` has the row);
:func:`scan_stack` runs it (:func:`rnnlab.nn.backends.native.stack`) or says the layers must go
one by one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor

from rnnlab.nn.backends import native
from rnnlab.nn.backends.dispatch import Backend, route_layer
from rnnlab.nn.backends.kernels import AnyCell, Kernel, Route, State
from rnnlab.nn.backends.precision import Precision
from rnnlab.nn.cells import GRUCell, LSTMCell, RNNCell

__all__ = ["route_stack", "scan_stack"]

_STACK: dict[type[AnyCell], Kernel] = {
    LSTMCell: "torch.lstm_stack",
    GRUCell: "torch.gru_stack",
    RNNCell: "torch.rnn_stack",
}


def route_stack(
    cells: Sequence[AnyCell],
    num_layers: int,
    x: Tensor,
    states: Sequence[State],
    mask: Tensor | None,
    *,
    backend: Backend = "auto",
    precision: Precision = "fp32",
    return_gates: bool = False,
    between: bool = False,
) -> Route | None:
    """The whole stack's row of the table, ``("torch.lstm_stack",)`` (``.gru_stack``,
    ``.rnn_stack``): one call of torch's op for every layer and direction, where the first layer
    routes to torch's op (:func:`route_layer`) and nothing needs the layers apart: plain cells
    (``cells`` and ``states`` in the stack's order, index ``layer * D + direction``; a variant
    cell's recurrent noise keeps it per layer), no gates recorded, no dropout ``between`` the
    layers in this call. None: each layer goes through
    :func:`~rnnlab.nn.backends.dispatch.scan_layer`."""
    if return_gates or between or any(type(cell) is not type(cells[0]) for cell in cells):
        return None
    if type(cells[0]) not in _STACK:  # a variant, a cell of 2024
        return None
    D = len(cells) // num_layers
    first = route_layer(cells[:D], x, states[:D], mask, backend=backend, precision=precision)
    if first.backend != "torch":
        return None
    return Route("torch", (_STACK[type(cells[0])],), False, False)


def scan_stack(
    cells: Sequence[AnyCell],
    num_layers: int,
    x: Tensor,
    state: State,
    states: Sequence[State],
    mask: Tensor | None,
    **options: Any,
) -> tuple[Tensor, State] | None:
    """Run the whole stack in one call where :func:`route_stack` (given ``options``) takes that
    row: (output (B, T, D*H), final state as ``state``: (L*D, B, H), an LSTMState of two for the
    LSTM); ``states`` are ``state``'s per layer and direction. None where the row does not
    apply: the caller then runs each layer through
    :func:`~rnnlab.nn.backends.dispatch.scan_layer`."""
    if route_stack(cells, num_layers, x, states, mask, **options) is None:
        return None
    bidirectional = len(cells) == 2 * num_layers
    return native.stack(list(cells), x, state, num_layers, bidirectional)
