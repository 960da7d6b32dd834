"""The ONNX graph of rnnlab's classifiers, written node by node from the model's weights.

Shape legend: B batch, T time, I input features, E embedding size, H hidden units,
D directions, C classes. Both B and T are dynamic axes of the graph.

Why a graph of our own rather than ``torch.onnx.export``: tracing rnnlab's time loop unrolls T
into the graph; an export-time twin on ``torch.nn.LSTM`` exports the ONNX ``LSTM`` op with a
dynamic T but has no way to say "skip the padding of each row" (rnnlab's masked text models,
padded on either side), and the TorchScript exporter that handles packed sequences is
deprecated. ONNX's own ``LSTM`` / ``GRU`` / ``RNN`` ops take a ``sequence_lens`` input that
means exactly rnnlab's ``lengths`` with post padding (padded steps leave the state alone, the
backward direction starts at each row's last real step), so the graph is:

    ids (B, T) --Gather--> (B, T, E)          x (B, T, I) --[MatMul + Add: projection]-->
    [pre padding: GatherElements turns each row to post padding]
    --> Transpose (T, B, F) --> LSTM/GRU/RNN op per layer (D directions, sequence_lens;
        peepholes as the LSTM op's P; an LSTM variant with LayerNorm or projection: a Scan of
        its step per direction, :mod:`rnnlab.export.variants`)
    --> pooling: last = Y_h (D, B, H); mean / max / meanmax over the real steps
    --> MatMul + Add: logits (B, C)

Weights are re-ordered into ONNX's gate order: LSTM i, o, f, c (rnnlab i, f, g, o); GRU z, r, h
(rnnlab r, z, n) with ``linear_before_reset=1``, which is rnnlab's (and torch's) candidate
``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from rnnlab.export.api import register_hook
from rnnlab.export.graph import (
    Graph,
    linear,
    onnx_kind,
    recurrent_weights,
    to_numpy,
    with_peepholes,
)
from rnnlab.export.variants import needs_scan, variant_layer
from rnnlab.models import SequenceClassifier, TextClassifier
from rnnlab.nn.layers import RecurrentLayer

__all__ = ["classifier_graph", "recurrent_level"]


def recurrent_level(g: Graph, layer: RecurrentLayer, x: str, seq_lens: str) -> tuple[str, str]:
    """One rnnlab layer (one level, D directions) as one ONNX op (a ``Scan`` per direction for
    an LSTM variant with LayerNorm or projection). x (T, B, F) -> Y (T, B, D*R) and Y_h
    (D, B, R), R = H or the projection P."""
    if layer.num_layers != 1:
        raise ValueError(f"ONNX export expected single-level layers, got {layer.num_layers}")
    shape = g.const("shape", np.array([0, 0, -1], dtype=np.int64))
    if needs_scan(layer.cells[0]):
        Y, Y_h = variant_layer(g, list(layer.cells), x, seq_lens)[:2]  # (T, D, B, R), (D, B, R)
        Y = g.op("Transpose", [Y], perm=[0, 2, 1, 3])  # (T, B, D, R)
        return g.op("Reshape", [Y, shape]), Y_h  # (T, B, D*R), (D, B, R)
    kind = onnx_kind(layer.cells[0])
    H = layer.hidden_size
    W, R, B = zip(*(recurrent_weights(c, kind, H) for c in layer.cells), strict=True)
    D = layer.num_directions
    attrs: dict[str, Any] = {
        "hidden_size": H,
        "direction": "bidirectional" if D == 2 else "forward",
    }
    if kind == "GRU":
        attrs["linear_before_reset"] = 1
    inputs = [
        x,
        g.const("W", to_numpy(torch.stack(W))),  # (D, G*H, F)
        g.const("R", to_numpy(torch.stack(R))),  # (D, G*H, H)
        g.const("B", to_numpy(torch.stack(B))),  # (D, 2*G*H)
        seq_lens,
    ]
    inputs = with_peepholes(g, list(layer.cells), inputs)  # P (D, 3H) for a peephole LSTM
    Y, Y_h = g.op(kind, inputs, n_out=2, **attrs)[:2]  # (T, D, B, H), (D, B, H)
    Y = g.op("Transpose", [Y], perm=[0, 2, 1, 3])  # (T, B, D, H)
    return g.op("Reshape", [Y, shape]), Y_h  # (T, B, D*H), (D, B, H)


def _to_post_padding(g: Graph, x: str, lengths: str) -> str:
    """x (B, T, F) padded in front -> the same rows with their real steps first: row b's step t
    is its step (t + T - length_b) mod T."""
    zero, one = g.const("zero", np.array(0, np.int64)), g.const("one", np.array(1, np.int64))
    T = g.op("Gather", [g.op("Shape", [x]), one], axis=0)  # ()
    steps = g.op("Range", [zero, T, one])  # (T,)
    shift = g.op("Sub", [T, lengths])  # (B,)
    axis1 = g.const("axis1", np.array([1], np.int64))
    index = g.op("Mod", [g.op("Add", [g.op("Unsqueeze", [shift, axis1]), steps]), T])  # (B, T)
    index = g.op("Unsqueeze", [index, g.const("axis2", np.array([2], np.int64))])  # (B, T, 1)
    index = g.op("Expand", [index, g.op("Shape", [x])])  # (B, T, F)
    return g.op("GatherElements", [x, index], axis=1)


def _pool(g: Graph, pooling: str, Y: str, Y_h: str, lengths: str | None) -> str:
    """The reduction over time of rnnlab's RecurrentStack: Y (T, B, D*H) -> (B, F)."""
    if pooling == "last":
        h = g.op("Transpose", [Y_h], perm=[1, 0, 2])  # (B, D, H)
        return g.op("Reshape", [h, g.const("shape", np.array([0, -1], np.int64))])  # (B, D*H)
    axis0 = g.const("axis0", np.array([0], np.int64))
    if lengths is None:
        mask = None
        count = g.op("Cast", [g.op("Shape", [Y], start=0, end=1)], to=1)  # (1,) float: T
    else:
        zero, one = g.const("zero", np.array(0, np.int64)), g.const("one", np.array(1, np.int64))
        T = g.op("Shape", [Y], start=0, end=1)  # (1,)
        steps = g.op("Range", [zero, g.op("Squeeze", [T, axis0]), one])  # (T,)
        steps = g.op("Unsqueeze", [steps, g.const("axis1", np.array([1], np.int64))])  # (T, 1)
        mask = g.op("Less", [steps, lengths])  # (T, B) real steps, post padding
        mask = g.op("Unsqueeze", [mask, g.const("axis2", np.array([2], np.int64))])  # (T, B, 1)
        count = g.op("Unsqueeze", [g.op("Cast", [lengths], to=1), axis0])  # (1, B)
        count = g.op("Transpose", [count])  # (B, 1)
    parts = []
    if pooling in ("mean", "meanmax"):
        masked = Y if mask is None else g.op("Mul", [Y, g.op("Cast", [mask], to=1)])
        total = g.op("ReduceSum", [masked, axis0], keepdims=0)  # (B, D*H)
        parts.append(g.op("Div", [total, count]))
    if pooling in ("max", "meanmax"):
        masked = Y
        if mask is not None:
            low = g.const("neg_inf", np.array(-np.inf, np.float32))
            masked = g.op("Where", [mask, Y, low])
        parts.append(g.op("ReduceMax", [masked, axis0], keepdims=0))  # (B, D*H)
    return parts[0] if len(parts) == 1 else g.op("Concat", parts, axis=-1)


def classifier_graph(model: nn.Module, opset: int) -> Any:
    """The ``onnx.ModelProto`` of a :class:`~rnnlab.models.SequenceClassifier` (input ``x``
    (B, T, I) float32) or :class:`~rnnlab.models.TextClassifier` (inputs ``ids`` (B, T) int64
    and ``lengths`` (B,) int64, 1..T, read only by masked models); output ``logits`` (B, C).
    The model's semantics are rnnlab's in eval mode: dropout off, padding on the model's side."""
    from onnx import TensorProto, helper

    g, stack = Graph(), model.stack
    lengths = seq_lens = None
    if isinstance(model, TextClassifier):
        inputs = [
            helper.make_tensor_value_info("ids", TensorProto.INT64, ["B", "T"]),
            helper.make_tensor_value_info("lengths", TensorProto.INT64, ["B"]),
        ]
        table = g.const("embedding", to_numpy(model.embedding.weight))  # (V, E)
        x = g.op("Gather", [table, "ids"])  # (B, T, E)
        if model.mask:
            lengths = "lengths"
            if stack.padding == "pre":
                x = _to_post_padding(g, x, lengths)
            seq_lens = g.op("Cast", [lengths], to=TensorProto.INT32)
    elif isinstance(model, SequenceClassifier):
        inputs = [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", "T", model.input_size])
        ]
        x = "x"
        if model.projection is not None:
            x = linear(g, x, model.projection)  # (B, T, P)
    else:
        raise TypeError(
            f"classifier_graph expected a SequenceClassifier or TextClassifier, got "
            f"{type(model).__name__}"
        )
    x = g.op("Transpose", [x], perm=[1, 0, 2])  # (T, B, F)
    Y_h = ""
    for layer in stack.layers:
        x, Y_h = recurrent_level(g, layer, x, seq_lens or "")
    pooled = _pool(g, stack.pooling, x, Y_h, lengths)  # (B, F)
    logits = linear(g, pooled, model.head)
    g.nodes.append(helper.make_node("Identity", [logits], ["logits"]))
    output = helper.make_tensor_value_info(
        "logits", TensorProto.FLOAT, ["B", model.head.out_features]
    )
    graph = helper.make_graph(g.nodes, "rnnlab", inputs, [output], g.initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


register_hook("onnx", SequenceClassifier, classifier_graph)
register_hook("onnx", TextClassifier, classifier_graph)
