"""The ONNX graph of a CTC run's model: frames in, per-frame log-probabilities out.

Shape legend: B batch, T frames, I features per frame, P projection, H hidden units,
D directions, S symbols (blank first).

    x (B, T, I), lengths (B,) int64
    --[MatMul + Add: projection]--> Transpose (T, B, F)
    --> one LSTM / GRU / RNN op per layer (D directions, ``sequence_lens`` = lengths: the
        backward direction starts at each row's last real frame, as rnnlab's does; peepholes
        as the LSTM op's P; an LSTM variant with LayerNorm or projection: a Scan of its step
        per direction, :mod:`rnnlab.export.variants`)
    --> MatMul + Add: head (T, B, S) --> LogSoftmax --> Transpose: log_probs (B, T, S)

Frames past a row's length are padding: the ONNX ops give them zero outputs, rnnlab leaves them
unspecified; only the real frames are the model's answer. Weights are re-ordered into ONNX's
gate order by :func:`rnnlab.export.graph.recurrent_weights`.
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
from rnnlab.models.ctc import CTCModel

__all__ = ["ctc_graph"]


def _layer(g: Graph, layer: nn.Module, x: str, seq_lens: str) -> str:
    """One rnnlab layer as one ONNX op (a ``Scan`` per direction for an LSTM variant with
    LayerNorm or projection): x (T, B, F) -> (T, B, D*R), R = H or the projection."""
    shape = g.const("shape", np.array([0, 0, -1], dtype=np.int64))
    if needs_scan(layer.cells[0]):
        Y = variant_layer(g, list(layer.cells), x, seq_lens)[0]  # (T, D, B, R)
        return g.op("Reshape", [g.op("Transpose", [Y], perm=[0, 2, 1, 3]), shape])
    kind = onnx_kind(layer.cells[0])
    H, D = layer.hidden_size, layer.num_directions
    W, R, B = zip(*(recurrent_weights(c, kind, H) for c in layer.cells), strict=True)
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
    Y = g.op(kind, inputs, n_out=2, **attrs)[0]  # (T, D, B, H)
    Y = g.op("Transpose", [Y], perm=[0, 2, 1, 3])  # (T, B, D, H)
    return g.op("Reshape", [Y, shape])  # (T, B, D*H)


def ctc_graph(model: nn.Module, opset: int) -> Any:
    """The ``onnx.ModelProto`` of a :class:`~rnnlab.models.ctc.CTCModel`: inputs ``x``
    (B, T, I) float32 and ``lengths`` (B,) int64 in 1..T, output ``log_probs`` (B, T, S)."""
    from onnx import TensorProto, helper

    if not isinstance(model, CTCModel):
        raise TypeError(f"ctc_graph expected a CTCModel, got {type(model).__name__}")
    g = Graph()
    inputs = [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", "T", model.input_size]),
        helper.make_tensor_value_info("lengths", TensorProto.INT64, ["B"]),
    ]
    x = "x"
    if model.projection is not None:
        x = linear(g, x, model.projection)  # (B, T, P)
    x = g.op("Transpose", [x], perm=[1, 0, 2])  # (T, B, F)
    seq_lens = g.op("Cast", ["lengths"], to=TensorProto.INT32)
    for layer in model.layers:
        x = _layer(g, layer, x, seq_lens)  # (T, B, D*H)
    logits = linear(g, x, model.head)  # (T, B, S)
    log_probs = g.op("LogSoftmax", [logits], axis=-1)
    g.nodes.append(helper.make_node("Transpose", [log_probs], ["log_probs"], perm=[1, 0, 2]))
    output = helper.make_tensor_value_info(
        "log_probs", TensorProto.FLOAT, ["B", "T", model.num_symbols]
    )
    graph = helper.make_graph(g.nodes, "rnnlab_ctc", inputs, [output], g.initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


register_hook("onnx", CTCModel, ctc_graph)
