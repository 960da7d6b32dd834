r"""ONNX graphs of rnnlab's LSTM and GRU variants (:class:`rnnlab.nn.variants.VariantLSTMCell`,
:class:`rnnlab.nn.variant_gru.VariantGRUCell`): the cell's step as the body of an ONNX
``Scan``, with the interface of ONNX's ``LSTM`` and ``GRU`` ops, so every exporter
(classifiers, CTC, the seq2seq encoder, the language model) writes :func:`variant_layer` where
it would write the op.

Shape legend: T time, B batch, F a layer's input features, H cell units, P projection size,
R = P if P > 0 else H (the width of h), D directions.

Which graph a variant layer gets (:func:`rnnlab.export.graph.body_options`):

* peepholes, recurrent dropout and zoneout only: ONNX's ``LSTM`` op, weights as
  :func:`rnnlab.export.graph.recurrent_weights` packs them and the peepholes as its input P
  (:func:`rnnlab.export.graph.with_peepholes`; the op's o reads the new c, as the cell's).
  Recurrent dropout and zoneout are the identity in eval mode (the module docstring of
  :mod:`rnnlab.nn.variants`), so the exported model leaves them out;
* LayerNorm or projection (with peepholes or not): ONNX's op has neither, so each direction is
  a ``Scan`` whose body is :meth:`VariantLSTMCell.forward` in eval mode, node for node::

      outside the loop, every step at once:  a_x = LN(x W_ih^T) * gamma_ih + b    (T, B, 4H)
      body, state h (B, R), c (B, H):        a   = a_x_t + LN(h W_hh^T) * gamma_hh
                                             i = sigmoid(a_i + p_i * c), f = sigmoid(a_f + p_f * c)
                                             g = tanh(a_g), c_new = f * c + i * g
                                             o = sigmoid(a_o + p_o * c_new)
                                             m = o * tanh(LN(c_new) * gamma_c + beta_c)
                                             h_new = m W_hr^T                         (B, R)

  A GRU with LayerNorm is the same ``Scan`` of :meth:`VariantGRUCell.forward`: a_x = LN(x
  W_ih^T) * gamma_ih + b outside the loop; in the body a_h = LN(h W_hh^T) * gamma_hh,
  r, z = sigmoid(a_x + a_h), n = tanh(a_x_n + r * (a_h_n + b_hn)), h_new = (1 - z) n + z h.
  Without LayerNorm a GRU variant is ONNX's ``GRU`` op.

  LN is over the last axis with the biased variance and ``ln_eps``, as torch's
  ``layer_norm``. LN, sigmoid and tanh are written out in elementary ops, for accuracy
  (:func:`_layer_norm` and :func:`_sigmoid` say why not ONNX's ``LayerNormalization``,
  ``Sigmoid`` and ``Tanh``).

With ``sequence_lens``, a padded step (t >= the row's length: post padding) leaves h and c as
they were and outputs zero, and a backward direction (the ``Scan`` run from the last step to the
first) therefore starts at each row's last real step: the semantics of ONNX's op and of every
rnnlab kernel.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rnnlab.export.graph import Graph, body_options, scan, to_numpy
from rnnlab.nn.variant_gru import VariantGRUCell
from rnnlab.nn.variants import VariantLSTMCell

__all__ = ["needs_scan", "variant_layer", "variant_lstm"]


def needs_scan(cell: Any) -> bool:
    """Whether ``cell``'s layers export through :func:`variant_layer` (a variant with LayerNorm
    or projection) rather than ONNX's ``LSTM`` or ``GRU`` op."""
    return bool(body_options(cell))


def _ints(g: Graph, stem: str, values: list[int]) -> str:
    return g.const(stem, np.array(values, np.int64))


def _layer_norm(g: Graph, at: Graph, v: str, weight: Any, bias: Any, eps: float) -> str:
    """LN(v) * weight (+ bias) over the last axis, as torch's ``F.layer_norm``: nodes of ``at``
    (``g`` or a loop body) reading weights that ``g``, the outer graph, holds.

    Written out rather than ONNX's ``LayerNormalization``: onnxruntime's CPU kernel takes the
    variance in one float32 pass, E[v^2] - E[v]^2, which loses the digits of a row whose mean
    is large beside its spread (a trained cell's c_new, normalised with a gain near
    1/sqrt(eps)); the two passes here, var = E[(v - E[v])^2], keep them, as torch's own kernel
    does. ``Mul(d, d)``, not ``Pow(d, 2)``, so that onnxruntime's LayerNormFusion does not swap
    its kernel back in."""
    axes = _ints(g, "axes", [-1])
    d = at.op("Sub", [v, at.op("ReduceMean", [v, axes], keepdims=1)])  # v - mean
    var = at.op("ReduceMean", [at.op("Mul", [d, d]), axes], keepdims=1)  # (..., 1), biased
    std = at.op("Sqrt", [at.op("Add", [var, g.const("eps", np.array(eps, np.float32))])])
    y = at.op("Mul", [at.op("Div", [d, std]), g.const("ln_weight", to_numpy(weight))])
    return y if bias is None else at.op("Add", [y, g.const("ln_bias", to_numpy(bias))])


def _sigmoid(g: Graph, at: Graph, v: str) -> str:
    """sigmoid(v) = 1 / (1 + exp(-v)), a node chain of ``at`` (exp(-v) = inf gives 0).

    Why not ONNX's ``Sigmoid`` and ``Tanh``: onnxruntime's CPU kernels are fast approximations,
    off float64 by up to 1.3e-7 and 2.6e-7 on [-8, 8] (torch's: 9e-8 and 3e-8), and a cell
    with LayerNorm can magnify each step's rounding a thousandfold (a c_new row spread less
    than sqrt(eps)): with them, a trained text model's export ended 5e-5 from float64 where
    rnnlab's float32 was 3e-6; with these, which Exp (7e-8 relative) makes as exact as
    torch's, the two track each other step by step. The extra nodes cost time: 1.1 to 1.8
    times the Scan's time with the kernels (onnxruntime 1.32, one thread, H = 128, B 1..32)."""
    one = g.const("one", np.array(1.0, np.float32))
    return at.op("Div", [one, at.op("Add", [one, at.op("Exp", [at.op("Neg", [v])])])])


def _tanh(g: Graph, at: Graph, v: str) -> str:
    """tanh(v) = sign(v) (1 - t) / (1 + t) with t = exp(-2 |v|) <= 1, so nothing overflows and
    the absolute error stays near float32's rounding of 1 (:func:`_sigmoid` says why not
    ONNX's ``Tanh``)."""
    one = g.const("one", np.array(1.0, np.float32))
    minus_two = g.const("minus_two", np.array(-2.0, np.float32))
    t = at.op("Exp", [at.op("Mul", [at.op("Abs", [v]), minus_two])])
    magnitude = at.op("Div", [at.op("Sub", [one, t]), at.op("Add", [one, t])])
    return at.op("Mul", [magnitude, at.op("Sign", [v])])


def _step_mask(g: Graph, x: str, seq_lens: str) -> str:
    """(T, B, 1) float32: 1 at the real steps (t < the row's length, post padding), else 0."""
    from onnx import TensorProto

    T = g.op("Squeeze", [g.op("Shape", [x], start=0, end=1), _ints(g, "axis0", [0])])  # ()
    zero, one = g.const("zero", np.array(0, np.int64)), g.const("one", np.array(1, np.int64))
    steps = g.op("Unsqueeze", [g.op("Range", [zero, T, one]), _ints(g, "axis1", [1])])  # (T, 1)
    lengths = g.op("Cast", [seq_lens], to=TensorProto.INT64)  # (B,)
    real = g.op("Cast", [g.op("Less", [steps, lengths])], to=TensorProto.FLOAT)  # (T, B)
    return g.op("Unsqueeze", [real, _ints(g, "axis2", [2])])  # (T, B, 1)


def _zeros(g: Graph, x: str, width: int) -> str:
    """(1, B, width) float32 zeros, B read from x (T, B, F): the initial state if none is given."""
    from onnx import TensorProto, helper

    B = g.op("Shape", [x], start=1, end=2)  # (1,)
    shape = g.op("Concat", [_ints(g, "one", [1]), B, _ints(g, "width", [width])], axis=0)
    value = helper.make_tensor("value", TensorProto.FLOAT, [1], [0.0])
    return g.op("ConstantOfShape", [shape], value=value)


def _initial(g: Graph, x: str, state: str, d: int, width: int) -> str:
    """Direction ``d``'s initial state (1, B, width): ``state`` (D, B, width) sliced, or zeros
    where ``state`` is ""."""
    if not state:
        return _zeros(g, x, width)
    span = [_ints(g, "start", [d]), _ints(g, "end", [d + 1]), _ints(g, "axis0", [0])]
    return g.op("Slice", [state, *span])


def _direction(
    g: Graph, cell: VariantLSTMCell, x: str, mask: str, h0: str, c0: str, reverse: bool
) -> tuple[str, str, str]:
    """One direction: x (T, B, F), mask (T, B, 1) or "", h0 (1, B, R), c0 (1, B, H) -> Y
    (T, B, R) and the final h (1, B, R), c (1, B, H)."""
    from onnx import TensorProto

    H, R, eps = cell.hidden_size, cell.output_size, cell.ln_eps
    a_x = g.op("MatMul", [x, g.const("weight_ih", to_numpy(cell.weight_ih.T))])  # (T, B, 4H)
    if cell.layer_norm:
        a_x = _layer_norm(g, g, a_x, cell.ln_ih_weight, None, eps)
    a_x = g.op("Add", [a_x, g.const("bias", to_numpy(cell.bias))])  # (T, B, 4H)
    body = Graph(prefix=g.name("variant_lstm_step") + "/")
    h_prev, c_prev = body.prefix + "h_prev", body.prefix + "c_prev"  # (B, R), (B, H)
    a_x_t, mask_t = body.prefix + "a_x_t", body.prefix + "mask_t"  # (B, 4H), (B, 1)
    a_h = body.op("MatMul", [h_prev, g.const("weight_hh", to_numpy(cell.weight_hh.T))])  # (B, 4H)
    if cell.layer_norm:
        a_h = _layer_norm(g, body, a_h, cell.ln_hh_weight, None, eps)
    a = body.op("Add", [a_x_t, a_h])  # (B, 4H)
    a_i, a_f, a_g, a_o = body.op("Split", [a, _ints(g, "split", [H] * 4)], n_out=4, axis=1)
    if cell.peepholes:  # Gers & Schmidhuber 2000: i, f read c_{t-1}; o reads c_new
        p_i, p_f, p_o = (g.const("peephole", to_numpy(p)) for p in cell.peephole.split(H))
        a_i = body.op("Add", [a_i, body.op("Mul", [p_i, c_prev])])
        a_f = body.op("Add", [a_f, body.op("Mul", [p_f, c_prev])])
    i, f = _sigmoid(g, body, a_i), _sigmoid(g, body, a_f)  # (B, H) each
    g_gate = _tanh(g, body, a_g)  # (B, H): g, the candidate
    c_new = body.op("Add", [body.op("Mul", [f, c_prev]), body.op("Mul", [i, g_gate])])  # (B, H)
    if cell.peepholes:
        a_o = body.op("Add", [a_o, body.op("Mul", [p_o, c_new])])
    o = _sigmoid(g, body, a_o)  # (B, H)
    c_hat = c_new
    if cell.layer_norm:  # Ba et al. 2016: c is normalised on its way to h, not where it is kept
        c_hat = _layer_norm(g, body, c_new, cell.ln_c_weight, cell.ln_c_bias, eps)
    h_new = body.op("Mul", [o, _tanh(g, body, c_hat)])  # (B, H)
    if cell.proj_size:
        h_new = body.op("MatMul", [h_new, g.const("weight_hr", to_numpy(cell.weight_hr.T))])
    h, c, y = h_new, c_new, h_new  # (B, R), (B, H), (B, R)
    steps = {a_x_t: (a_x, [None, 4 * H])}
    if mask:  # a padded step keeps the state and outputs zero
        real = body.op("Cast", [mask_t], to=TensorProto.BOOL)  # (B, 1)
        h = body.op("Where", [real, h_new, h_prev])
        c = body.op("Where", [real, c_new, c_prev])
        y = body.op("Where", [real, h_new, g.const("zero", np.array(0.0, np.float32))])
        steps[mask_t] = (mask, [None, 1])
    states = {"h": (h0, [None, R]), "c": (c0, [None, H])}  # B unnamed: see scan()
    Y, finals = scan(g, body, states, steps, [h, c], y, reverse=reverse)
    return Y, finals["h"], finals["c"]


def variant_lstm(
    g: Graph,
    cells: list[VariantLSTMCell],
    x: str,
    seq_lens: str = "",
    initial_h: str = "",
    initial_c: str = "",
) -> list[str]:
    """One level of D variant cells (forwards, then backwards) as ONNX's ``LSTM`` op would give
    it: x (T, B, F) -> ``[Y (T, D, B, R), Y_h (D, B, R), Y_c (D, B, H)]``.

    ``seq_lens`` (B,) int32, lengths with post padding ("" : every step is real);
    ``initial_h`` (D, B, R) and ``initial_c`` (D, B, H) ("": zeros). The cells are put in eval
    mode's semantics: recurrent dropout and zoneout are left out."""
    if not cells or not all(isinstance(c, VariantLSTMCell) for c in cells):
        raise TypeError(
            f"variant_lstm expected VariantLSTMCells, got {[type(c).__name__ for c in cells]}"
        )
    mask = _step_mask(g, x, seq_lens) if seq_lens else ""
    H, R = cells[0].hidden_size, cells[0].output_size
    axis1 = _ints(g, "axis1", [1])
    Ys, hs, cs = [], [], []
    for d, cell in enumerate(cells):
        h0, c0 = _initial(g, x, initial_h, d, R), _initial(g, x, initial_c, d, H)
        Y, h, c = _direction(g, cell, x, mask, h0, c0, reverse=d == 1)
        Ys.append(g.op("Unsqueeze", [Y, axis1]))  # (T, 1, B, R)
        hs.append(h)
        cs.append(c)
    if len(cells) == 1:
        return [Ys[0], hs[0], cs[0]]
    return [g.op("Concat", parts, axis=axis) for parts, axis in ((Ys, 1), (hs, 0), (cs, 0))]


def _gru_direction(
    g: Graph, cell: VariantGRUCell, x: str, mask: str, h0: str, reverse: bool
) -> tuple[str, str]:
    """One GRU direction: x (T, B, F), mask (T, B, 1) or "", h0 (1, B, H) -> Y (T, B, H) and
    the final h (1, B, H)."""
    from onnx import TensorProto

    H, eps = cell.hidden_size, cell.ln_eps
    a_x = g.op("MatMul", [x, g.const("weight_ih", to_numpy(cell.weight_ih.T))])  # (T, B, 3H)
    if cell.layer_norm:
        a_x = _layer_norm(g, g, a_x, cell.ln_ih_weight, None, eps)
    a_x = g.op("Add", [a_x, g.const("bias", to_numpy(cell.bias))])  # (T, B, 3H)
    body = Graph(prefix=g.name("variant_gru_step") + "/")
    h_prev, a_x_t, mask_t = (body.prefix + n for n in ("h_prev", "a_x_t", "mask_t"))
    a_h = body.op("MatMul", [h_prev, g.const("weight_hh", to_numpy(cell.weight_hh.T))])
    if cell.layer_norm:
        a_h = _layer_norm(g, body, a_h, cell.ln_hh_weight, None, eps)  # (B, 3H)
    split = _ints(g, "split", [H] * 3)
    x_r, x_z, x_n = body.op("Split", [a_x_t, split], n_out=3, axis=1)
    h_r, h_z, h_n = body.op("Split", [a_h, split], n_out=3, axis=1)
    r = _sigmoid(g, body, body.op("Add", [x_r, h_r]))  # (B, H)
    z = _sigmoid(g, body, body.op("Add", [x_z, h_z]))
    h_n = body.op("Add", [h_n, g.const("bias_hn", to_numpy(cell.bias_hn))])
    n = _tanh(g, body, body.op("Add", [x_n, body.op("Mul", [r, h_n])]))
    one = g.const("one", np.array(1.0, np.float32))
    h_new = body.op(
        "Add", [body.op("Mul", [body.op("Sub", [one, z]), n]), body.op("Mul", [z, h_prev])]
    )  # (B, H)
    h, y = h_new, h_new
    steps = {a_x_t: (a_x, [None, 3 * H])}
    if mask:  # a padded step keeps the state and outputs zero
        real = body.op("Cast", [mask_t], to=TensorProto.BOOL)  # (B, 1)
        h = body.op("Where", [real, h_new, h_prev])
        y = body.op("Where", [real, h_new, g.const("zero", np.array(0.0, np.float32))])
        steps[mask_t] = (mask, [None, 1])
    Y, finals = scan(g, body, {"h": (h0, [None, H])}, steps, [h], y, reverse=reverse)
    return Y, finals["h"]


def variant_layer(
    g: Graph,
    cells: list[VariantLSTMCell] | list[VariantGRUCell],
    x: str,
    seq_lens: str = "",
    initial_h: str = "",
    initial_c: str = "",
) -> list[str]:
    """:func:`variant_lstm` for LSTM variants; for GRU variants the same level as ONNX's ``GRU``
    op gives it: ``[Y (T, D, B, H), Y_h (D, B, H)]`` (``initial_c`` unused)."""
    if not cells or not all(isinstance(c, VariantGRUCell) for c in cells):
        return variant_lstm(g, cells, x, seq_lens, initial_h, initial_c)
    mask = _step_mask(g, x, seq_lens) if seq_lens else ""
    axis1 = _ints(g, "axis1", [1])
    Ys, hs = [], []
    for d, cell in enumerate(cells):
        h0 = _initial(g, x, initial_h, d, cell.hidden_size)
        Y, h = _gru_direction(g, cell, x, mask, h0, reverse=d == 1)
        Ys.append(g.op("Unsqueeze", [Y, axis1]))  # (T, 1, B, H)
        hs.append(h)
    if len(cells) == 1:
        return [Ys[0], hs[0]]
    return [g.op("Concat", Ys, axis=1), g.op("Concat", hs, axis=0)]
