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

from rnnlab.export.api import ExportError
from rnnlab.nn.cells import GRUCell, LSTMCell, RNNCell
from rnnlab.nn.mincells import MinCell, MinGRUCell
from rnnlab.nn.variant_gru import VariantGRUCell
from rnnlab.nn.variants import VariantLSTMCell

__all__ = [
    "GATE_ORDER",
    "Graph",
    "body_options",
    "linear",
    "min_layer",
    "onnx_kind",
    "recurrent_weights",
    "reorder",
    "scan",
    "to_numpy",
    "with_peepholes",
]

# ONNX gate order, as indices of rnnlab's H-row blocks
GATE_ORDER = {"LSTM": [0, 3, 1, 2], "GRU": [1, 0, 2], "RNN": [0]}


class Graph:
    """Nodes and initializers under construction, with fresh names.

    A loop body (the graph of a ``Scan``) is a Graph of its own with a ``prefix`` that no other
    name has, such as ``g.name("slstm_step") + "/"``: ONNX wants every name unique across a
    graph and the bodies nested in it. A body may read the outer graph's values (its weights,
    made with the outer ``g.const``) by name."""

    def __init__(self, prefix: str = "") -> None:
        from onnx import helper

        self.helper = helper
        self.prefix = prefix
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.count = 0

    def name(self, stem: str) -> str:
        self.count += 1
        return f"{self.prefix}{stem}_{self.count}"

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


def body_options(cell: nn.Module) -> list[str]:
    """The options of a :class:`~rnnlab.nn.variants.VariantLSTMCell` or
    :class:`~rnnlab.nn.variant_gru.VariantGRUCell` that ONNX's ``LSTM`` and ``GRU`` ops cannot
    express, so that its layers are a ``Scan`` of the cell's step
    (:func:`rnnlab.export.variants.variant_layer`): ``layer_norm`` and ``proj_size`` where on.
    Empty for any other cell, and for a variant with only peepholes (the op's input P:
    :func:`with_peepholes`), recurrent dropout and zoneout (both the identity in eval mode)."""
    if isinstance(cell, VariantGRUCell):  # ONNX's GRU op has no LayerNorm either
        return ["layer_norm"] if cell.layer_norm else []
    if not isinstance(cell, VariantLSTMCell):
        return []
    on = {"layer_norm": cell.layer_norm, "proj_size": cell.proj_size}
    return [name for name, value in on.items() if value]


def with_peepholes(g: Graph, cells: list[nn.Module], inputs: list[str]) -> list[str]:
    """``inputs`` of ONNX's ``LSTM`` op (X, W, R, B[, sequence_lens, initial_h, initial_c])
    with its 8th, P (D, 3H) in ONNX's order i, o, f (rnnlab's ``peephole`` rows are i, f, o),
    where the cells have peepholes; unchanged for any other cells. ONNX's o gate reads the new
    c_t and i, f read c_{t-1}, as :class:`~rnnlab.nn.variants.VariantLSTMCell` (Gers &
    Schmidhuber 2000)."""
    if not getattr(cells[0], "peepholes", False):
        return inputs
    H = cells[0].hidden_size
    rows = [c.peephole.split(H) for c in cells]  # D x (p_i, p_f, p_o), each (H,)
    P = np.stack([to_numpy(torch.cat([p_i, p_o, p_f])) for p_i, p_f, p_o in rows])  # (D, 3H)
    return [*inputs, *[""] * (7 - len(inputs)), g.const("P", P)]


def onnx_kind(cell: nn.Module) -> str:
    """The ONNX op of an rnnlab cell: ``"LSTM"``, ``"GRU"`` or ``"RNN"`` (``"LSTM"`` too for a
    :class:`~rnnlab.nn.variants.VariantLSTMCell` with only peepholes, recurrent dropout or
    zoneout: :func:`body_options`); any other cell (a variant with LayerNorm or projection:
    :mod:`rnnlab.export.variants`; the cells of 2024 have no ONNX op; a language model's
    exporter writes their steps as a ``Scan``: :func:`min_layer`, :mod:`rnnlab.export.xlstm`)
    is refused, naming it."""
    for kind, cls in (("LSTM", LSTMCell), ("GRU", GRUCell), ("RNN", RNNCell)):
        if isinstance(cell, cls):
            return kind
    for kind, cls in (("LSTM", VariantLSTMCell), ("GRU", VariantGRUCell)):
        if not isinstance(cell, cls):
            continue
        options = body_options(cell)
        if not options:
            return kind
        raise ExportError(
            f"ONNX's {kind} op expected a cell without {', '.join(options)}, got a "
            f"{cls.__name__} with them (its layers export as a Scan of the cell's step: "
            "rnnlab.export.variants.variant_layer)"
        )
    raise ExportError(
        f"ONNX export expected an LSTM, GRU or RNN cell here, got {type(cell).__name__} (a "
        "language model of minGRU, minLSTM, sLSTM or mLSTM exports; other models of the 2024 "
        "cells do not yet)"
    )


def min_layer(g: Graph, x: str, cell: MinCell, h0: str) -> tuple[str, str]:
    """One minGRU / minLSTM layer: x (T, B, F) and h0 (1, B, H) -> Y (T, B, H) and h_T
    (1, B, H). The pre-activations of every step are one MatMul; a_t and b_t of
    h_t = a_t * h_{t-1} + b_t follow elementwise (:meth:`rnnlab.nn.mincells.MinCell.coefficients`),
    and an ONNX ``Scan`` runs the recurrence, so T is dynamic and T = 1 is the step form."""
    from onnx import TensorProto, helper

    H, G = cell.hidden_size, cell.gates
    k = g.op("MatMul", [x, g.const("weight_ih", to_numpy(cell.weight_ih.T))])  # (T, B, G*H)
    k = g.op("Add", [k, g.const("bias", to_numpy(cell.bias))])
    sizes = g.const("split", np.full(G, H, np.int64))
    blocks = g.op("Split", [k, sizes], n_out=G, axis=2)  # G x (T, B, H)
    one = g.const("one", np.array(1.0, np.float32))
    if isinstance(cell, MinGRUCell):
        z, h_tilde = blocks
        z = g.op("Sigmoid", [z])
        a, b = g.op("Sub", [one, z]), g.op("Mul", [z, h_tilde])
    else:  # minLSTM: f' = sigmoid(log f - log i), log sigmoid(v) = -softplus(-v)
        k_f, k_i, h_tilde = blocks
        log_f, log_i = (g.op("Neg", [g.op("Softplus", [g.op("Neg", [v])])]) for v in (k_f, k_i))
        a = g.op("Sigmoid", [g.op("Sub", [log_f, log_i])])
        b = g.op("Mul", [g.op("Sub", [one, a]), h_tilde])
    float_bh = ["B", H]
    body = helper.make_graph(
        [
            helper.make_node("Mul", ["a_t", "h_prev"], ["ah"]),
            helper.make_node("Add", ["ah", "b_t"], ["h_next"]),
            helper.make_node("Identity", ["h_next"], ["y_t"]),
        ],
        "min_step",
        [
            helper.make_tensor_value_info(n, TensorProto.FLOAT, float_bh)
            for n in ("h_prev", "a_t", "b_t")
        ],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, float_bh) for n in ("h_next", "y_t")],
    )
    axis0 = g.const("axis0", np.array([0], np.int64))
    h = g.op("Squeeze", [h0, axis0])  # (B, H)
    h_T, Y = g.op("Scan", [h, a, b], n_out=2, body=body, num_scan_inputs=2)  # (B, H), (T, B, H)
    return Y, g.op("Unsqueeze", [h_T, axis0])


def scan(
    g: Graph,
    body: Graph,
    states: dict[str, tuple[str, list[Any]]],
    steps: dict[str, tuple[str, list[Any]]],
    new_states: list[str],
    y_t: str,
    reverse: bool = False,
) -> tuple[str, dict[str, str]]:
    """Run ``body`` as a ``Scan`` over axis 0 of ``steps``' values (from the last step to the
    first with ``reverse``; Y is then still in time order).

    ``states`` maps a state's name to (its outer value of shape (1, ...), its shape in the body);
    ``steps`` maps a body input to (its outer value (T, ...), its shape at one step); every
    value is float32. A body shape may leave the batch axis unnamed (None): onnxruntime holds a
    name such as "B" to one size across the whole file, and a file whose other inputs have
    batch-1 defaults (seq2seq's) would then tie the body's B to 1. The body reads state ``s``
    as ``body.prefix + s + "_prev"``;
    ``new_states`` are its next states in the order of ``states``, ``y_t`` its output at the
    step, shaped as state ``h``. Returns Y (T, ...) and each final state as (1, ...)."""
    from onnx import TensorProto, helper

    def info(name: str, shape: list[Any]) -> Any:
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)

    shapes = [shape for _, shape in states.values()]
    outs = [body.op("Identity", [v]) for v in [*new_states, y_t]]  # distinct output names
    graph = helper.make_graph(
        body.nodes,
        body.prefix.rstrip("/"),
        [info(body.prefix + n + "_prev", shape) for n, shape in zip(states, shapes, strict=True)]
        + [info(n, shape) for n, (_, shape) in steps.items()],
        [info(o, shape) for o, shape in zip(outs, [*shapes, states["h"][1]], strict=True)],
    )
    axis0 = g.const("axis0", np.array([0], np.int64))
    first = [g.op("Squeeze", [value, axis0]) for value, _ in states.values()]  # (...) each
    directions = {"scan_input_directions": [1] * len(steps), "scan_output_directions": [1]}
    results = g.op(
        "Scan",
        first + [value for value, _ in steps.values()],
        n_out=len(states) + 1,
        body=graph,
        num_scan_inputs=len(steps),
        **(directions if reverse else {}),
    )
    finals = {n: g.op("Unsqueeze", [r, axis0]) for n, r in zip(states, results[:-1], strict=True)}
    return results[-1], finals


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
