"""The ONNX graph of :class:`rnnlab.LanguageModel`, with the recurrent state as explicit inputs
and outputs, so a runtime can generate token by token as :meth:`LanguageModel.generate` does.

Shape legend: B batch, T time, E embedding size, H hidden units, L layers, V vocabulary.

Inputs ``ids`` (B, T) int64, ``h0`` (L, B, H) float32 (and ``c0`` for LSTM); outputs ``logits``
(B, T, V), ``h`` (L, B, H) (and ``c``): the state after the last step, to feed back as the next
call's ``h0``/``c0``. Zeros as the initial state give the model's own start. The graph::

    ids --Gather(embedding)--> (B, T, E) --Transpose--> (T, B, E)
    --> per layer l: LSTM/GRU/RNN op (initial_h = h0[l], initial_c = c0[l]) --> Y (T, B, H)
        (minGRU / minLSTM: MatMul to every step's gates, then a Scan of h = a * h + b)
    --> Transpose (B, T, H) --> MatMul + Add (decoder) --> logits (B, T, V)

Gate orders and the GRU candidate are handled as for the classifiers
(:mod:`rnnlab.export.classifier`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rnnlab.export.api import register_hook
from rnnlab.export.graph import Graph, linear, min_layer, onnx_kind, recurrent_weights, to_numpy
from rnnlab.nn.language_model import LanguageModel
from rnnlab.nn.mincells import MinCell

__all__ = ["language_model_graph"]


def _layer_state(g: Graph, state: str, layer: int) -> str:
    """``state`` (L, B, H) -> its layer ``layer`` as (1, B, H)."""
    start = g.const("start", np.array([layer], np.int64))
    end = g.const("end", np.array([layer + 1], np.int64))
    return g.op("Slice", [state, start, end, g.const("axis0", np.array([0], np.int64))])


def language_model_graph(model: LanguageModel, opset: int) -> Any:
    """The ``onnx.ModelProto`` of ``model`` in eval mode (dropout off); see the module
    docstring for its inputs and outputs."""
    from onnx import TensorProto, helper

    if not isinstance(model, LanguageModel):
        raise TypeError(
            f"language_model_graph expected a LanguageModel, got {type(model).__name__}"
        )
    g, rnn = Graph(), model.rnn
    kind = "MIN" if isinstance(rnn.cells[0], MinCell) else onnx_kind(rnn.cells[0])
    L, H, V = model.num_layers, model.hidden_size, model.vocab_size
    state_names = ["h0", "c0"] if kind == "LSTM" else ["h0"]
    inputs = [helper.make_tensor_value_info("ids", TensorProto.INT64, ["B", "T"])]
    inputs += [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, [L, "B", H]) for n in state_names
    ]
    x = g.op("Gather", [g.const("embedding", to_numpy(model.embedding.weight)), "ids"])  # (B, T, E)
    x = g.op("Transpose", [x], perm=[1, 0, 2])  # (T, B, E)
    finals: dict[str, list[str]] = {"h": [], "c": []}
    axis1 = g.const("axis1", np.array([1], np.int64))
    for layer, c in enumerate(rnn.cells):  # one direction: cell k is layer k
        if kind == "MIN":
            x, h_T = min_layer(g, x, c, _layer_state(g, "h0", layer))  # (T, B, H), (1, B, H)
            finals["h"].append(h_T)
            continue
        W, R, B = (w[None] for w in recurrent_weights(c, kind, H))  # (1, G*H, F|H), (1, 2GH)
        states = [_layer_state(g, name, layer) for name in state_names]  # (1, B, H) each
        attrs: dict[str, Any] = {"hidden_size": H}
        if kind == "GRU":
            attrs["linear_before_reset"] = 1
        weights = [g.const(name, to_numpy(w)) for name, w in zip("WRB", (W, R, B), strict=True)]
        op_inputs = [x, *weights, ""]
        outs = g.op(kind, op_inputs + states, n_out=3 if kind == "LSTM" else 2, **attrs)
        x = g.op("Squeeze", [outs[0], axis1])  # (T, 1, B, H) -> (T, B, H)
        finals["h"].append(outs[1])  # (1, B, H)
        if kind == "LSTM":
            finals["c"].append(outs[2])
    y = g.op("Transpose", [x], perm=[1, 0, 2])  # (B, T, H)
    logits = linear(g, y, model.decoder)  # (B, T, V)
    g.nodes.append(helper.make_node("Identity", [logits], ["logits"]))
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["B", "T", V])]
    for name in ("h", "c")[: len(state_names)]:
        parts = finals[name]
        stacked = parts[0] if L == 1 else g.op("Concat", parts, axis=0)  # (L, B, H)
        g.nodes.append(helper.make_node("Identity", [stacked], [name]))
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [L, "B", H]))
    graph = helper.make_graph(g.nodes, "rnnlab_language_model", inputs, outputs, g.initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


register_hook("onnx", LanguageModel, language_model_graph)
