r"""ONNX graphs of xLSTM's layers (Beck et al. 2024): the step equations of
:class:`rnnlab.nn.xlstm.SLSTMCell` and :class:`~rnnlab.nn.xlstm.MLSTMCell` as the body of an ONNX
``Scan``, so T is dynamic and one token per call (T = 1, the state carried from call to call) is
the step form.

Shape legend: T time, B batch, F a layer's input features, H hidden units, NH heads,
DH = H / NH units per head.

What does not read the state leaves the loop, as in rnnlab's fused sLSTM path and as in
:func:`rnnlab.export.graph.min_layer`: every step's input projection ``W x_t + b`` is one
``MatMul`` over (T, B, F). The ``Scan`` body is then node for node the cell's ``forward`` (the
same operations in the same order, the weights read from the outer graph), carrying every state
the cell carries: sLSTM's h, c, n, m (each (B, H)); mLSTM's h (B, H), C (B, NH, DH, DH),
n (B, NH, DH) and m (B, NH), its h carried only to be returned (no gate reads h_{t-1}).
Exponentials are taken only of ``log gate - m <= 0`` (the stabiliser m), so the graph stays
finite whatever the pre-activations, as the cells do.
"""

from __future__ import annotations

import numpy as np

from rnnlab.export.graph import Graph, scan, to_numpy
from rnnlab.nn.xlstm import GATE_EXP_FLOOR, MLSTMCell, SLSTMCell

__all__ = ["mlstm_layer", "slstm_layer"]


def _ints(g: Graph, stem: str, values: list[int]) -> str:
    return g.const(stem, np.array(values, np.int64))


def _scalar(g: Graph, stem: str, value: float) -> str:
    return g.const(stem, np.array(value, np.float32))


def _gate_exp(body: Graph, a: str, floor: str, zero: str) -> str:
    """exp(a) for a stabilised exponent a <= 0, 0 where a <= -60: the cell's ``gate_exp``."""
    return body.op("Where", [body.op("Greater", [a, floor]), body.op("Exp", [a]), zero])


def _log_sigmoid(g: Graph, v: str) -> str:
    """log sigmoid(v) = -softplus(-v), finite for any finite v."""
    return g.op("Neg", [g.op("Softplus", [g.op("Neg", [v])])])


def slstm_layer(
    g: Graph, x: str, cell: SLSTMCell, state: dict[str, str]
) -> tuple[str, dict[str, str]]:
    """One sLSTM layer: x (T, B, F) and ``state`` h, c, n, m (each (1, B, H)) -> Y (T, B, H) and
    the final h, c, n, m (each (1, B, H)), by :meth:`SLSTMCell.forward`'s equations (its
    :meth:`~SLSTMCell.recurrent` and :meth:`~SLSTMCell.pointwise`)."""
    H, NH, DH = cell.hidden_size, cell.num_heads, cell.head_size
    wx = g.op("MatMul", [x, g.const("weight_ih", to_numpy(cell.weight_ih.T))])  # (T, B, 4H)
    wx = g.op("Add", [wx, g.const("bias", to_numpy(cell.bias))])  # (T, B, 4H)
    R = g.const("weight_hh", to_numpy(cell.weight_hh.transpose(1, 2)))  # (NH, DH, 4DH)
    floor, zero = _scalar(g, "floor", GATE_EXP_FLOOR), _scalar(g, "zero", 0.0)
    body = Graph(prefix=g.name("slstm_step") + "/")
    h_prev, c_prev, n_prev, m_prev = (body.prefix + s + "_prev" for s in "hcnm")  # (B, H) each
    wx_t = body.prefix + "wx_t"  # (B, 4H)
    # R h_{t-1}, head by head (SLSTMCell.recurrent)
    heads = body.op("Reshape", [h_prev, _ints(g, "shape", [-1, NH, DH])])  # (B, NH, DH)
    heads = body.op("Transpose", [heads], perm=[1, 0, 2])  # (NH, B, DH)
    r = body.op("MatMul", [heads, R])  # (NH, B, 4DH)
    r = body.op("Reshape", [r, _ints(g, "shape", [NH, -1, 4, DH])])  # (NH, B, 4, DH)
    r = body.op("Transpose", [r], perm=[1, 2, 0, 3])  # (B, 4, NH, DH)
    r = body.op("Reshape", [r, _ints(g, "shape", [-1, 4 * H])])  # (B, 4H), rows of weight_ih
    gates = body.op("Add", [wx_t, r])  # (B, 4H)
    split = _ints(g, "split", [H] * 4)
    i_tilde, f_tilde, z_tilde, o_tilde = body.op("Split", [gates, split], n_out=4, axis=1)
    log_i = i_tilde  # (B, H)
    log_f = f_tilde if cell.forget_gate == "exp" else _log_sigmoid(body, f_tilde)  # (B, H)
    fresh = body.op("Equal", [n_prev, zero])  # (B, H): no history yet
    log_f_m = body.op("Add", [log_f, m_prev])  # (B, H): log f_t + m_{t-1}
    m = body.op("Where", [fresh, log_i, body.op("Max", [log_f_m, log_i])])  # (B, H)
    i = _gate_exp(body, body.op("Sub", [log_i, m]), floor, zero)  # (B, H), <= 1
    f = body.op("Where", [fresh, zero, _gate_exp(body, body.op("Sub", [log_f_m, m]), floor, zero)])
    z, o = body.op("Tanh", [z_tilde]), body.op("Sigmoid", [o_tilde])  # (B, H) each
    c = body.op("Add", [body.op("Mul", [f, c_prev]), body.op("Mul", [i, z])])  # (B, H)
    n = body.op("Add", [body.op("Mul", [f, n_prev]), i])  # (B, H)
    h = body.op("Div", [body.op("Mul", [o, c]), n])  # (B, H)
    bh = ["B", H]
    states = {s: (state[s], bh) for s in "hcnm"}
    return scan(g, body, states, {wx_t: (wx, ["B", 4 * H])}, [h, c, n, m], h)


def mlstm_layer(
    g: Graph, x: str, cell: MLSTMCell, state: dict[str, str]
) -> tuple[str, dict[str, str]]:
    """One mLSTM layer: x (T, B, F) and ``state`` h (1, B, H), C (1, B, NH, DH, DH),
    n (1, B, NH, DH), m (1, B, NH) -> Y (T, B, H) and the final state, shaped as ``state``, by
    :meth:`MLSTMCell.forward`'s equations (the recurrent form)."""
    H, NH, DH = cell.hidden_size, cell.num_heads, cell.head_size
    k = g.op("MatMul", [x, g.const("weight_ih", to_numpy(cell.weight_ih.T))])  # (T, B, 4H+2NH)
    k = g.op("Add", [k, g.const("bias", to_numpy(cell.bias))])  # (T, B, 4H + 2NH)
    sizes = _ints(g, "split", [H, H, H, H, NH, NH])
    q, key, v, o_tilde, i_tilde, f_tilde = g.op("Split", [k, sizes], n_out=6, axis=2)
    heads = _ints(g, "shape", [0, 0, NH, DH])  # (T, B, H) -> (T, B, NH, DH)
    q, key, v = (g.op("Reshape", [t, heads]) for t in (q, key, v))  # (T, B, NH, DH) each
    key = g.op("Div", [key, _scalar(g, "sqrt_dh", DH**0.5)])  # (T, B, NH, DH)
    o = g.op("Sigmoid", [o_tilde])  # (T, B, H)
    log_f = _log_sigmoid(g, f_tilde)  # (T, B, NH); log i = ĩ
    body = Graph(prefix=g.name("mlstm_step") + "/")
    C_prev, n_prev, m_prev = (body.prefix + s + "_prev" for s in "Cnm")
    q_t, k_t, v_t, o_t, log_i_t, log_f_t = (body.prefix + s for s in ("q", "k", "v", "o", "i", "f"))
    axis2, axis3, axes23 = _ints(g, "axis2", [2]), _ints(g, "axis3", [3]), _ints(g, "axes", [2, 3])
    log_f_m = body.op("Add", [log_f_t, m_prev])  # (B, NH): log f_t + m_{t-1}
    m = body.op("Max", [log_f_m, log_i_t])  # (B, NH)
    i = body.op("Exp", [body.op("Sub", [log_i_t, m])])  # (B, NH), <= 1
    f = body.op("Exp", [body.op("Sub", [log_f_m, m])])  # (B, NH), <= 1
    outer = body.op(
        "Mul", [body.op("Unsqueeze", [v_t, axis3]), body.op("Unsqueeze", [k_t, axis2])]
    )  # (B, NH, DH, DH): v_t k_t^T
    f4, i4 = (body.op("Unsqueeze", [a, axes23]) for a in (f, i))  # (B, NH, 1, 1) each
    C = body.op("Add", [body.op("Mul", [f4, C_prev]), body.op("Mul", [i4, outer])])  # (B,NH,DH,DH)
    f3, i3 = (body.op("Unsqueeze", [a, axis2]) for a in (f, i))  # (B, NH, 1) each
    n = body.op("Add", [body.op("Mul", [f3, n_prev]), body.op("Mul", [i3, k_t])])  # (B, NH, DH)
    numerator = body.op("MatMul", [C, body.op("Unsqueeze", [q_t, axis3])])  # (B, NH, DH, 1)
    numerator = body.op("Squeeze", [numerator, axis3])  # (B, NH, DH): C_t q_t
    nq = body.op("ReduceSum", [body.op("Mul", [n, q_t]), axis2], keepdims=0)  # (B, NH)
    bound = body.op("Exp", [body.op("Neg", [m])])  # (B, NH): the stabilised lower bound 1
    denominator = body.op("Max", [body.op("Abs", [nq]), bound])  # (B, NH)
    h_tilde = body.op("Div", [numerator, body.op("Unsqueeze", [denominator, axis2])])  # (B,NH,DH)
    h_tilde = body.op("Reshape", [h_tilde, _ints(g, "shape", [-1, H])])  # (B, H)
    h = body.op("Mul", [o_t, h_tilde])  # (B, H)
    states = {
        "h": (state["h"], ["B", H]),
        "C": (state["C"], ["B", NH, DH, DH]),
        "n": (state["n"], ["B", NH, DH]),
        "m": (state["m"], ["B", NH]),
    }
    steps = {
        q_t: (q, ["B", NH, DH]),
        k_t: (key, ["B", NH, DH]),
        v_t: (v, ["B", NH, DH]),
        o_t: (o, ["B", H]),
        log_i_t: (i_tilde, ["B", NH]),
        log_f_t: (log_f, ["B", NH]),
    }
    return scan(g, body, states, steps, [h, C, n, m], h)
