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

from torch import nn

from rnnlab.export.api import register_hook
from rnnlab.export.classifier import recurrent_level
from rnnlab.export.graph import Graph, linear
from rnnlab.models.ctc import CTCModel

__all__ = ["ctc_graph"]


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
        x = recurrent_level(g, layer, x, seq_lens)[0]  # (T, B, D*H)
    logits = linear(g, x, model.head)  # (T, B, S)
    log_probs = g.op("LogSoftmax", [logits], axis=-1)
    g.nodes.append(helper.make_node("Transpose", [log_probs], ["log_probs"], perm=[1, 0, 2]))
    output = helper.make_tensor_value_info(
        "log_probs", TensorProto.FLOAT, ["B", "T", model.num_symbols]
    )
    graph = helper.make_graph(g.nodes, "rnnlab_ctc", inputs, [output], g.initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


register_hook("onnx", CTCModel, ctc_graph)
