"""Building ONNX graphs from rnnlab's weights: the helpers every kind's exporter shares.

Shape legend: G gates (LSTM 4, GRU 3, RNN 1), H hidden units, F a layer's input features.

:class:`Graph` collects nodes and initializers with fresh names; :func:`recurrent_weights` gives
one cell's ``W``, ``R`` and ``B`` in the layout of ONNX's ``LSTM`` / ``GRU`` / ``RNN`` ops, whose
gate order differs from rnnlab's: LSTM i, o, f, c (rnnlab i, f, g, o); GRU z, r, h (rnnlab r,
z, n) with ``linear_before_reset=1``, which is rnnlab's (and torch's) candidate
``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from rnnlab.nn.cells import GRUCell, LSTMCell

__all__ = ["GATE_ORDER", "Graph", "linear", "onnx_kind", "recurrent_weights", "reorder", "to_numpy"]

# ONNX gate order, as indices of rnnlab's H-row blocks
GATE_ORDER = {"LSTM": [0, 3, 1, 2], "GRU": [1, 0, 2], "RNN": [0]}


class Graph:
    """Nodes and initializers under construction, with fresh names."""

    def __init__(self) -> None:
        from onnx import helper

        self.helper = helper
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.count = 0

    def name(self, stem: str) -> str:
        self.count += 1
        return f"{stem}_{self.count}"

    def const(self, stem: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        name = self.name(stem)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], n_out: int = 1, **attrs: Any) -> Any:
        outputs = [self.name(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(self.helper.make_node(op_type, inputs, outputs, **attrs))
        return outputs[0] if n_out == 1 else outputs


def to_numpy(t: torch.Tensor) -> np.ndarray:
    """A float32 numpy copy of ``t`` (detached, on the CPU)."""
    return t.detach().to(torch.float32).cpu().numpy()


def onnx_kind(cell: nn.Module) -> str:
    """The ONNX op of an rnnlab cell: ``"LSTM"``, ``"GRU"`` or ``"RNN"``."""
    return "LSTM" if isinstance(cell, LSTMCell) else "GRU" if isinstance(cell, GRUCell) else "RNN"


def reorder(rows: torch.Tensor, kind: str, H: int) -> torch.Tensor:
    """(G*H, ...) rows in rnnlab's gate order -> ONNX's."""
    return torch.cat([rows[k * H : (k + 1) * H] for k in GATE_ORDER[kind]])


def recurrent_weights(
    cell: nn.Module, kind: str, H: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One cell's ``(W (G*H, F), R (G*H, H), B (2*G*H,))`` in ONNX's layout: the input bias is
    rnnlab's one bias per gate, the recurrent bias zero but for the GRU candidate's ``b_hn``,
    which ONNX applies inside ``r * (...)`` with ``linear_before_reset=1``."""
    b_rec = torch.zeros_like(cell.bias)  # (G*H,)
    if kind == "GRU":
        b_rec[2 * H :] = cell.bias_hn
    bias = torch.cat([reorder(cell.bias, kind, H), reorder(b_rec, kind, H)])
    return reorder(cell.weight_ih, kind, H), reorder(cell.weight_hh, kind, H), bias


def linear(g: Graph, x: str, layer: nn.Linear) -> str:
    """x (..., in) -> (..., out) through ``layer``'s weight and bias."""
    w = g.const("weight", to_numpy(layer.weight.T))  # (in, out)
    return g.op("Add", [g.op("MatMul", [x, w]), g.const("bias", to_numpy(layer.bias))])
