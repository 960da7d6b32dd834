"""The ONNX graph of :class:`rnnlab.LanguageModel`, with the recurrent state as explicit inputs
and outputs, so a runtime can generate token by token as :meth:`LanguageModel.generate` does.

Shape legend: B batch, T time, E embedding size, H hidden units, L layers, V vocabulary,
NH heads, DH = H / NH units per head.

Inputs ``ids`` (B, T) int64 and one float32 input per field of the model's state, named as the
field with a 0 (:meth:`LanguageModel.init_state`); outputs ``logits`` (B, T, V) and the state
after the last step, one output per field, to feed back as the next call's inputs. Zeros as the
initial state give the model's own start. The state per cell:

    lstm                 h0, c0 (L, B, H)                -> h, c
                         (with a projection P: h0 (L, B, P), c0 (L, B, H))
    gru, rnn, mingru,    h0 (L, B, H)                    -> h
      minlstm
    slstm                h0, c0, n0, m0 (L, B, H)        -> h, c, n, m
    mlstm                h0 (L, B, H), C0 (L, B, NH, DH, DH), n0 (L, B, NH, DH), m0 (L, B, NH)
                                                         -> h, C, n, m

The graph::

    ids --Gather(embedding)--> (B, T, E) --Transpose--> (T, B, E)
    --> per layer l: LSTM/GRU/RNN op (initial_h = h0[l], initial_c = c0[l]) --> Y (T, B, H)
        (minGRU / minLSTM: MatMul to every step's gates, then a Scan of h = a * h + b;
         sLSTM / mLSTM: MatMul to every step's input projection, then a Scan of the cell's
         step equations, :mod:`rnnlab.export.xlstm`; an LSTM with LayerNorm or projection: a
         Scan of its step, :mod:`rnnlab.export.variants`; peepholes: the LSTM op's P)
    --> Transpose (B, T, H) --> MatMul + Add (decoder) --> logits (B, T, V)

Gate orders and the GRU candidate are handled as for the classifiers
(:mod:`rnnlab.export.classifier`). A language model reads one direction; a bidirectional
recurrent layer is refused.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rnnlab.export.api import ExportError, register_hook
from rnnlab.export.graph import (
    Graph,
    linear,
    min_layer,
    onnx_kind,
    recurrent_weights,
    to_numpy,
    with_peepholes,
)
from rnnlab.export.variants import needs_scan, variant_layer
from rnnlab.export.xlstm import mlstm_layer, slstm_layer
from rnnlab.nn.language_model import LanguageModel
from rnnlab.nn.mincells import MinCell
from rnnlab.nn.xlstm import MLSTMCell, SLSTMCell

__all__ = ["language_model_graph"]


def _layer_state(g: Graph, state: str, layer: int) -> str:
    """``state`` (L, B, ...) -> its layer ``layer`` as (1, B, ...)."""
    start = g.const("start", np.array([layer], np.int64))
    end = g.const("end", np.array([layer + 1], np.int64))
    return g.op("Slice", [state, start, end, g.const("axis0", np.array([0], np.int64))])


def _state_shapes(model: LanguageModel) -> dict[str, list[Any]]:
    """Each field of the model's state -> its shape, (L, "B", ...): ``{"h": [L, "B", H]}``, or
    one entry per field of the cell's named tuple (LSTMState h, c; SLSTMState h, c, n, m; ...)."""
    state = model.init_state(1)
    fields = dict(state._asdict()) if isinstance(state, tuple) else {"h": state}
    return {name: [t.shape[0], "B", *t.shape[2:]] for name, t in fields.items()}


def _layer(g: Graph, x: str, cell: Any, state: dict[str, str]) -> tuple[str, dict[str, str]]:
    """One layer: x (T, B, F) and its state (each field (1, B, ...)) -> Y (T, B, H) and the
    final state, by field."""
    if isinstance(cell, MinCell):
        Y, h_T = min_layer(g, x, cell, state["h"])  # (T, B, H), (1, B, H)
        return Y, {"h": h_T}
    if isinstance(cell, SLSTMCell):
        return slstm_layer(g, x, cell, state)
    if isinstance(cell, MLSTMCell):
        return mlstm_layer(g, x, cell, state)
    if needs_scan(cell):  # LayerNorm or projection: h (1, B, R), c (1, B, H) for an LSTM
        names = ["h", "c"] if "c" in state else ["h"]
        Y, *finals = variant_layer(g, [cell], x, "", *(state[n] for n in names))  # (T, 1, B, R)
        axis1 = g.const("axis1", np.array([1], np.int64))
        return g.op("Squeeze", [Y, axis1]), dict(zip(names, finals, strict=True))
    kind, H = onnx_kind(cell), cell.hidden_size
    W, R, B = (w[None] for w in recurrent_weights(cell, kind, H))  # (1, G*H, F|H), (1, 2GH)
    attrs: dict[str, Any] = {"hidden_size": H}
    if kind == "GRU":
        attrs["linear_before_reset"] = 1
    weights = [g.const(name, to_numpy(w)) for name, w in zip("WRB", (W, R, B), strict=True)]
    names = ["h", "c"] if kind == "LSTM" else ["h"]
    op_inputs = [x, *weights, "", *(state[n] for n in names)]  # initial_h, initial_c
    op_inputs = with_peepholes(g, [cell], op_inputs)  # P (1, 3H) for a peephole LSTM
    outs = g.op(kind, op_inputs, n_out=len(names) + 1, **attrs)
    axis1 = g.const("axis1", np.array([1], np.int64))
    Y = g.op("Squeeze", [outs[0], axis1])  # (T, 1, B, H) -> (T, B, H)
    return Y, dict(zip(names, outs[1:], strict=True))  # (1, B, H) each


def language_model_graph(model: LanguageModel, opset: int) -> Any:
    """The ``onnx.ModelProto`` of ``model`` in eval mode (dropout off); see the module
    docstring for its inputs and outputs."""
    from onnx import TensorProto, helper

    if not isinstance(model, LanguageModel):
        raise TypeError(
            f"language_model_graph expected a LanguageModel, got {type(model).__name__}"
        )
    g, rnn = Graph(), model.rnn
    if rnn.num_directions != 1:
        raise ExportError(
            "ONNX export of a language model expected a unidirectional recurrent layer (a "
            "language model reads left to right), got a bidirectional one"
        )
    L, V = model.num_layers, model.vocab_size
    shapes = _state_shapes(model)
    inputs = [helper.make_tensor_value_info("ids", TensorProto.INT64, ["B", "T"])]
    inputs += [
        helper.make_tensor_value_info(f"{name}0", TensorProto.FLOAT, shape)
        for name, shape in shapes.items()
    ]
    x = g.op("Gather", [g.const("embedding", to_numpy(model.embedding.weight)), "ids"])  # (B, T, E)
    x = g.op("Transpose", [x], perm=[1, 0, 2])  # (T, B, E)
    finals: dict[str, list[str]] = {name: [] for name in shapes}
    for layer, cell in enumerate(rnn.cells):  # one direction: cell k is layer k
        state = {name: _layer_state(g, f"{name}0", layer) for name in shapes}  # (1, B, ...)
        x, last = _layer(g, x, cell, state)  # (T, B, H), {name: (1, B, ...)}
        for name in shapes:
            finals[name].append(last[name])
    y = g.op("Transpose", [x], perm=[1, 0, 2])  # (B, T, H)
    logits = linear(g, y, model.decoder)  # (B, T, V)
    g.nodes.append(helper.make_node("Identity", [logits], ["logits"]))
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["B", "T", V])]
    for name, shape in shapes.items():
        parts = finals[name]
        stacked = parts[0] if L == 1 else g.op("Concat", parts, axis=0)  # (L, B, ...)
        g.nodes.append(helper.make_node("Identity", [stacked], [name]))
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))
    graph = helper.make_graph(g.nodes, "rnnlab_language_model", inputs, outputs, g.initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


register_hook("onnx", LanguageModel, language_model_graph)
