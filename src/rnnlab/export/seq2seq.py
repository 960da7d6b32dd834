"""The ONNX graph of :class:`rnnlab.nn.Seq2Seq`: the encoder and one decoder step, so a runtime
decodes token by token, carrying the decoder's state, as :mod:`rnnlab.nn.beam` does.

Shape legend: B batch, S source steps, E embedding size, H hidden units, L decoder layers, V
target vocabulary.

One file holds two parts that share no node. Every input has a default value (an initializer
of the same name, batch 1), so a runtime feeds only the part it runs and asks for that part's
outputs:

* encoder: ``src`` (B, S) int64, ``src_lengths`` (B,) int64 -> ``memory`` (B, S, H), ``keys``
  (B, S, H) (the memory's side of the attention scores), ``mask`` (B, S) bool, ``h0`` (L, B,
  H) (and ``c0`` for an LSTM decoder), ``feed0`` (B, H) zeros;
* decoder step: ``token`` (B,) int64 (``<s>`` = 2 first), ``h`` (L, B, H) (and ``c``),
  ``feed`` (B, H), ``memory_in``, ``keys_in``, ``mask_in`` (the encoder's outputs) ->
  ``log_probs`` (B, V), ``h_out`` (and ``c_out``), ``feed_out``, ``attention`` (B, S).

The encoder runs each layer as ONNX's bidirectional ``LSTM``/``GRU``/``RNN`` op with
``sequence_lens`` (peepholes as the LSTM op's P; an LSTM variant with LayerNorm: a ``Scan``
of its step per direction, :mod:`rnnlab.export.variants`); gate orders as
:mod:`rnnlab.export.graph` converts them. :func:`greedy` decodes with onnxruntime exactly as
:func:`rnnlab.nn.beam.greedy` does.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rnnlab.export.api import register_hook
from rnnlab.export.graph import Graph, onnx_kind, recurrent_weights, to_numpy, with_peepholes
from rnnlab.export.variants import needs_scan, variant_layer
from rnnlab.nn.seq2seq import BOS, EOS, PAD, Seq2Seq

__all__ = ["greedy", "seq2seq_graph"]


def _i64(*values: int) -> np.ndarray:
    return np.array(values, np.int64)


def named(g: Graph, op: str, inputs: list[str], out: str, **attrs: Any) -> str:
    """A node whose one output has the name ``out`` (a graph output)."""
    g.nodes.append(g.helper.make_node(op, inputs, [out], **attrs))
    return out


def _matmul(g: Graph, x: str, weight: Any, bias: Any = None) -> str:
    """x (..., in) @ weight.T (+ bias): a torch Linear's weight (out, in) as an ONNX MatMul."""
    y = g.op("MatMul", [x, g.const("weight", to_numpy(weight.T))])
    return y if bias is None else g.op("Add", [y, g.const("bias", to_numpy(bias))])


def _rnn(g: Graph, layer: Any, index: int, x: str, states: list[str], extra: list[str]) -> list:
    """Layer ``index`` of an rnnlab stack as ONNX's op (both directions for a bidirectional
    stack; a ``Scan`` per direction for an LSTM variant with LayerNorm): outputs
    ``[Y (T, D, B, H), Y_h (D, B, H)[, Y_c]]``."""
    D = layer.num_directions
    cells = [layer.cell(index, d) for d in range(D)]
    if needs_scan(cells[0]):
        h, c = [*states, "", ""][:2]
        return variant_layer(g, cells, x, extra[0], h, c)
    kind, H = onnx_kind(cells[0]), layer.hidden_size
    packed = [recurrent_weights(c, kind, H) for c in cells]
    W, R, B = (g.const(n, np.stack([to_numpy(p[k]) for p in packed])) for k, n in enumerate("WRB"))
    attrs: dict[str, Any] = {"hidden_size": H}
    if D == 2:
        attrs["direction"] = "bidirectional"
    if kind == "GRU":
        attrs["linear_before_reset"] = 1
    if kind != "LSTM":
        states = states[:1]
    n_out = 3 if kind == "LSTM" else 2
    inputs = with_peepholes(g, cells, [x, W, R, B, *extra, *states])  # P for peepholes
    return g.op(kind, inputs, n_out=n_out, **attrs)


def _encoder(g: Graph, model: Seq2Seq, lstm: bool) -> None:
    x = g.op("Gather", [g.const("src_embedding", to_numpy(model.source_embedding.weight)), "src"])
    x = g.op("Transpose", [x], perm=[1, 0, 2])  # (S, B, E)
    lens = g.op("Cast", ["src_lengths"], to=6)  # int32, as sequence_lens wants
    enc = model.encoder
    for layer in range(enc.num_layers):
        outs = _rnn(g, enc, layer, x, [], [lens])
        y = g.op("Transpose", [outs[0]], perm=[0, 2, 1, 3])  # (S, B, 2, H/2)
        x = g.op("Reshape", [y, g.const("shape", _i64(0, 0, -1))])  # (S, B, H)
    top = g.op("Transpose", [outs[1]], perm=[1, 0, 2])  # (B, 2, H/2): forwards, backwards
    top = g.op("Reshape", [top, g.const("shape", _i64(0, -1))])  # (B, H)
    L, H = model.decoder_layers, model.hidden_size
    h0 = g.op("Tanh", [_matmul(g, top, model.bridge.weight, model.bridge.bias)])  # (B, L*H)
    h0 = g.op("Reshape", [h0, g.const("shape", _i64(0, L, H))])  # (B, L, H)
    named(g, "Transpose", [h0], "h0", perm=[1, 0, 2])  # (L, B, H)
    if lstm:
        named(g, "Sub", ["h0", "h0"], "c0")
    memory = g.op("Transpose", [x], perm=[1, 0, 2])  # (B, S, H)
    named(g, "Identity", [memory], "memory")
    att = model.attention
    keys = {
        "general": lambda: _matmul(g, memory, att.W_a.weight),
        "additive": lambda: _matmul(g, memory, att.W_k.weight, att.W_k.bias),
        "dot": lambda: memory,
    }[att.kind]()
    named(g, "Identity", [keys], "keys")
    named(g, "ReduceSum", [h0, g.const("axis", _i64(1))], "feed_sum", keepdims=0)  # (B, H)
    named(g, "Sub", ["feed_sum", "feed_sum"], "feed0")
    S = g.op("Shape", ["src"], start=1, end=2)  # (1,)
    steps = g.op(
        "Range", [g.const("zero", _i64(0)[0]), g.op("Squeeze", [S]), g.const("one", _i64(1)[0])]
    )  # (S,)
    named(
        g,
        "Less",
        [
            g.op("Unsqueeze", [steps, g.const("axis", _i64(0))]),
            g.op("Unsqueeze", ["src_lengths", g.const("axis", _i64(1))]),
        ],
        "mask",
    )


def _decoder_step(g: Graph, model: Seq2Seq, lstm: bool) -> None:
    y = g.op("Gather", [g.const("tgt_embedding", to_numpy(model.target_embedding.weight)), "token"])
    if model.input_feeding:
        y = g.op("Concat", [y, "feed"], axis=1)  # (B, E + H)
    x = g.op("Unsqueeze", [y, g.const("axis", _i64(0))])  # (1, B, I)
    dec, finals = model.decoder, {"h": [], "c": []}
    for layer in range(dec.num_layers):
        span = [
            g.const("start", _i64(layer)),
            g.const("end", _i64(layer + 1)),
            g.const("axis", _i64(0)),
        ]
        states = [g.op("Slice", [name, *span]) for name in (("h", "c") if lstm else ("h",))]
        outs = _rnn(g, dec, layer, x, states, [""])
        x = g.op("Squeeze", [outs[0], g.const("axis", _i64(1))])  # (1, B, H)
        finals["h"].append(outs[1])
        if lstm:
            finals["c"].append(outs[2])
    for name in ("h", "c") if lstm else ("h",):
        parts = finals[name]
        named(
            g,
            "Concat" if len(parts) > 1 else "Identity",
            parts,
            f"{name}_out",
            **({"axis": 0} if len(parts) > 1 else {}),
        )
    top = g.op("Transpose", [x], perm=[1, 0, 2])  # (B, 1, H)
    att = model.attention
    if att.kind == "additive":
        q = g.op("Unsqueeze", [_matmul(g, top, att.W_q.weight), g.const("axis", _i64(2))])
        k = g.op("Unsqueeze", ["keys_in", g.const("axis", _i64(1))])  # (B, 1, S, H)
        joint = g.op("Tanh", [g.op("Add", [q, k])])  # (B, 1, S, H)
        scores = g.op("Squeeze", [_matmul(g, joint, att.v.weight), g.const("axis", _i64(3))])
    else:
        scores = g.op("MatMul", [top, g.op("Transpose", ["keys_in"], perm=[0, 2, 1])])
    real = g.op("Unsqueeze", ["mask_in", g.const("axis", _i64(1))])  # (B, 1, S)
    scores = g.op("Where", [real, scores, g.const("minus_inf", np.array(-np.inf, np.float32))])
    weights = g.op("Softmax", [scores], axis=-1)  # (B, 1, S)
    named(g, "Squeeze", [weights, g.const("axis", _i64(1))], "attention")
    context = g.op("MatMul", [weights, "memory_in"])  # (B, 1, H)
    joint = g.op("Concat", [context, top], axis=-1)  # (B, 1, 2H)
    attentional = g.op("Tanh", [_matmul(g, joint, att.W_c.weight)])  # (B, 1, H)
    named(g, "Squeeze", [attentional, g.const("axis", _i64(1))], "feed_out")
    logits = _matmul(g, "feed_out", model.output.weight, model.output.bias)  # (B, V)
    named(g, "LogSoftmax", [logits], "log_probs", axis=-1)


def seq2seq_graph(model: Seq2Seq, opset: int) -> Any:
    """The ``onnx.ModelProto`` of ``model`` in eval mode; see the module docstring."""
    from onnx import TensorProto, helper, numpy_helper

    if not isinstance(model, Seq2Seq):
        raise TypeError(f"seq2seq_graph expected a Seq2Seq, got {type(model).__name__}")
    g = Graph()
    lstm = model.decoder_cell == "lstm"
    L, H, V = model.decoder_layers, model.hidden_size, model.target_vocab
    F, I64, BOOL = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL
    _encoder(g, model, lstm)
    _decoder_step(g, model, lstm)
    spec = [
        ("src", I64, ["B", "S"], np.full((1, 1), 4, np.int64)),
        ("src_lengths", I64, ["B"], np.ones(1, np.int64)),
        ("token", I64, ["B"], np.full(1, BOS, np.int64)),
        ("h", F, [L, "B", H], np.zeros((L, 1, H), np.float32)),
    ]
    if lstm:
        spec.append(("c", F, [L, "B", H], np.zeros((L, 1, H), np.float32)))
    spec += [
        ("feed", F, ["B", H], np.zeros((1, H), np.float32)),
        ("memory_in", F, ["B", "S", H], np.zeros((1, 1, H), np.float32)),
        ("keys_in", F, ["B", "S", H], np.zeros((1, 1, H), np.float32)),
        ("mask_in", BOOL, ["B", "S"], np.ones((1, 1), bool)),
    ]
    inputs = [helper.make_tensor_value_info(n, t, s) for n, t, s, _ in spec]
    defaults = [numpy_helper.from_array(v, n) for n, _, _, v in spec]
    outs = [
        ("memory", F, ["B", "S", H]),
        ("keys", F, ["B", "S", H]),
        ("mask", BOOL, ["B", "S"]),
        ("h0", F, [L, "B", H]),
        ("feed0", F, ["B", H]),
        ("log_probs", F, ["B", V]),
        ("h_out", F, [L, "B", H]),
        ("feed_out", F, ["B", H]),
        ("attention", F, ["B", "S"]),
    ]
    if lstm:
        outs += [("c0", F, [L, "B", H]), ("c_out", F, [L, "B", H])]
    outputs = [helper.make_tensor_value_info(n, t, s) for n, t, s in outs]
    graph = helper.make_graph(g.nodes, "rnnlab_seq2seq", inputs, outputs, g.initializers + defaults)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def greedy(path: Any, src_ids: list[int], max_length: int = 100) -> tuple[list[int], list[float]]:
    """Greedy decoding of one source with onnxruntime on an exported file: ``(tokens without
    </s>, the log-probability of each token and of </s>)``, never choosing <pad> or <s>."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # not the warning that the inputs have defaults: by design
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    # every input has a default, so onnxruntime lists them as overridable initializers
    names = {o.name.removesuffix("_out") for o in session.get_outputs()}  # "c" for an LSTM
    src = np.array([src_ids], np.int64)
    enc_out = ["memory", "keys", "mask", "h0", "feed0"] + (["c0"] if "c" in names else [])
    values = dict(
        zip(
            enc_out,
            session.run(enc_out, {"src": src, "src_lengths": _i64(len(src_ids))}),
            strict=True,
        )
    )
    step_out = ["log_probs", "h_out", "feed_out"] + (["c_out"] if "c" in names else [])
    feeds = {
        "memory_in": values["memory"],
        "keys_in": values["keys"],
        "mask_in": values["mask"],
        "h": values["h0"],
        "feed": values["feed0"],
    }
    if "c" in names:
        feeds["c"] = values["c0"]
    token, tokens, scores = BOS, [], []
    for _ in range(max_length):
        feeds["token"] = _i64(token)
        out = dict(zip(step_out, session.run(step_out, feeds), strict=True))
        logp = out["log_probs"][0].copy()
        logp[[PAD, BOS]] = -np.inf
        token = int(logp.argmax())
        scores.append(float(logp[token]))
        feeds["h"], feeds["feed"] = out["h_out"], out["feed_out"]
        if "c" in names:
            feeds["c"] = out["c_out"]
        if token == EOS:
            break
        tokens.append(token)
    return tokens, scores


register_hook("onnx", Seq2Seq, seq2seq_graph)
