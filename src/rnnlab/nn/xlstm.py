r"""xLSTM's cells (Beck et al. 2024, "xLSTM: Extended Long Short-Term Memory"), sLSTM (section
2.2) and mLSTM (section 2.3): the readable one-step reference of each.

Shape legend: B batch, I input features, H hidden units, NH heads, DH = H / NH units per head.

sLSTM keeps the LSTM's scalar memory and its recurrent connections, and changes three things:
the input gate (and optionally the forget gate) is exponential, so a new input can overwrite
the memory decisively; a normaliser state n sums the input gates so that the output reads a
weighted average c / n; and the recurrent matrices are block-diagonal, one block per head, so
heads mix only through the next layer. Exponentials overflow, so the cell carries a stabiliser
m, the running log of the largest gate product: every gate is used as exp(log gate - m),
which is at most 1, and c / n is unchanged because c and n are scaled by the same exp(-m).

mLSTM replaces the scalar memory by a matrix per head, C_t = f_t C_{t-1} + i_t v_t k_t^T, read
with a query, and drops the recurrent connections, so it also has a parallel form
(:mod:`rnnlab.nn.backends.mlstm`); same gates, normaliser and stabiliser.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from rnnlab.nn.cells import _check_sizes, _glorot_uniform_, _orthogonal_

__all__ = ["SLSTMState", "SLSTMCell", "MLSTMState", "MLSTMCell"]


GATE_EXP_FLOOR = -60.0  # exp(-60) = 8.8e-27


def gate_exp(a: Tensor) -> Tensor:
    """exp(a) for a stabilised gate's exponent a <= 0, with exp(a) < exp(-60) set to 0.

    One of the two gates of every step is exp(0) = 1, so a term below 8.8e-27 of it cannot show
    in float32 (or float64) output; left alone such terms and their gradients decay into
    subnormal numbers, which the CPU processes about 100 times slower (an sLSTM training step
    on workload F took 33 s instead of about 3)."""
    return torch.where(a > GATE_EXP_FLOOR, torch.exp(a), torch.zeros_like(a))


class SLSTMState(NamedTuple):
    """State of an sLSTM: hidden ``h``, cell ``c``, normaliser ``n`` and stabiliser ``m``,
    each (..., B, H). All zeros is the state before the first step."""

    h: Tensor
    c: Tensor
    n: Tensor
    m: Tensor


class SLSTMCell(nn.Module):
    r"""sLSTM cell (Beck et al. 2024, equations 8-17), with NH heads.

    .. math::
        \tilde\imath_t, \tilde f_t, \tilde z_t, \tilde o_t
            &= W x_t + R h_{t-1} + b     \quad (R \text{ block-diagonal, one block per head})\\
        \log i_t &= \tilde\imath_t          \quad\text{exponential input gate}\\
        \log f_t &= \log\sigma(\tilde f_t) \text{ (``forget_gate="sigmoid"``, the default) or }
                    \tilde f_t \text{ (``"exp"``)}\\
        z_t &= \tanh(\tilde z_t), \qquad o_t = \sigma(\tilde o_t)\\
        m_t &= \max(\log f_t + m_{t-1}, \log i_t)
               \quad (m_t = \log i_t \text{ and } f'_t = 0 \text{ where } n_{t-1} = 0)\\
        i'_t &= \exp(\log i_t - m_t), \qquad f'_t = \exp(\log f_t + m_{t-1} - m_t)\\
        c_t &= f'_t \odot c_{t-1} + i'_t \odot z_t\\
        n_t &= f'_t \odot n_{t-1} + i'_t\\
        h_t &= o_t \odot c_t / n_t

    i' and f' are at most 1, so nothing overflows, whatever the pre-activations (and below
    exp(-60) they are 0: :func:`gate_exp`); n_t >= 1
    after the first step (either f' = 1 and n grows, or i' = 1), so c / n is always defined.
    Where n_{t-1} = 0 the formula's m would include a history that does not exist; taking
    m_t = log i_t there (as NX-AI's reference code does) gives n_1 = 1.

    The forget gate is a sigmoid by default, as in NX-AI's reference code (the paper allows
    either): f <= 1, so m_t <= max(m_{t-1}, log i_t) and a new input is weighed against a
    memory that decays. An exponential forget gate has f = exp(f~) > 1 wherever f~ > 0 (at
    initialisation with ``forget_bias`` 1: f = e): the memory then grows by a factor f every
    step, m by log f, and once m exceeds log i by 60, i' = 0 and nothing new is written; the
    gradient that could lower f~ is 0 too (f' = 1 exactly). Over a state carried across
    windows (a language model's stream) that happened about 60 steps in, for good. Use
    ``"exp"`` only with a ``forget_bias`` < 0 and sequences that start from zeros.

    Weight layout: ``weight_ih`` (4H, I) and ``bias`` (4H) stack i, f, z, o, rows ``[0:H]`` = i,
    ``[H:2H]`` = f, ``[2H:3H]`` = z, ``[3H:4H]`` = o, each block head-major (unit ``k * DH + j``
    is unit j of head k). ``weight_hh`` (NH, 4*DH, DH): head k's recurrent block, rows in the
    same gate order. 4H(I + 1) + 4 H DH parameters (4H(I + H + 1) for one head, as an LSTM).

    Initialisation: Glorot-uniform ``weight_ih``, orthogonal blocks of ``weight_hh``, zero bias
    except the forget block, ``forget_bias`` (default 1.0: sigma(1) = 0.73, the LSTM's rule of
    Jozefowicz et al. 2015).
    """

    gates = 4
    gate_names = ("i", "f", "z", "o", "c", "n", "m", "h")

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_heads: int = 1,
        forget_gate: Literal["exp", "sigmoid"] = "sigmoid",
        forget_bias: float = 1.0,
    ) -> None:
        super().__init__()
        name = type(self).__name__
        _check_sizes(name, input_size, hidden_size)
        if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads < 1:
            raise ValueError(f"{name} expected num_heads to be a positive int, got {num_heads!r}")
        if hidden_size % num_heads:
            raise ValueError(
                f"{name} expected hidden_size divisible by num_heads, got {hidden_size} and "
                f"{num_heads}"
            )
        if forget_gate not in ("exp", "sigmoid"):
            raise ValueError(f"{name} expected forget_gate 'exp' or 'sigmoid', got {forget_gate!r}")
        self.input_size, self.hidden_size = input_size, hidden_size
        self.num_heads, self.head_size = num_heads, hidden_size // num_heads
        self.forget_gate, self.forget_bias = forget_gate, float(forget_bias)
        H, NH, DH = hidden_size, num_heads, self.head_size
        self.weight_ih = nn.Parameter(torch.empty(4 * H, input_size))  # (4H, I)
        self.weight_hh = nn.Parameter(torch.empty(NH, 4 * DH, DH))  # (NH, 4DH, DH)
        self.bias = nn.Parameter(torch.empty(4 * H))  # (4H,)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _glorot_uniform_(self.weight_ih.data)
        for block in self.weight_hh.data:
            _orthogonal_(block)
        nn.init.zeros_(self.bias)
        H = self.hidden_size
        with torch.no_grad():
            self.bias[H : 2 * H].fill_(self.forget_bias)

    def extra_repr(self) -> str:
        return (
            f"{self.input_size}, {self.hidden_size}, num_heads={self.num_heads}, "
            f"forget_gate={self.forget_gate!r}"
        )

    def recurrent(self, h: Tensor) -> Tensor:
        """R h_{t-1}: h (B, H) -> (B, 4H) in the layout of ``weight_ih``'s rows."""
        B, NH, DH = h.shape[0], self.num_heads, self.head_size
        per_head = torch.einsum("bkd,kgd->bkg", h.view(B, NH, DH), self.weight_hh)  # (B, NH, 4DH)
        return per_head.view(B, NH, 4, DH).transpose(1, 2).reshape(B, 4 * NH * DH)  # (B, 4H)

    def pointwise(self, gates: Tensor, state: SLSTMState) -> tuple[SLSTMState, dict[str, Tensor]]:
        """Everything after the matrix products: pre-activations (B, 4H) and the previous state
        -> the new state and the gates (i', f' as used, z, o)."""
        _, c_prev, n_prev, m_prev = state
        i_tilde, f_tilde, z_tilde, o_tilde = gates.chunk(4, dim=-1)  # (B, H) each
        log_i = i_tilde
        log_f = f_tilde if self.forget_gate == "exp" else F.logsigmoid(f_tilde)
        fresh = n_prev == 0  # (B, H): no history yet
        m = torch.where(fresh, log_i, torch.maximum(log_f + m_prev, log_i))  # (B, H)
        i = gate_exp(log_i - m)  # (B, H), <= 1
        # f' = 0 where there is no history: exp(-inf), so neither it nor its gradient is inf * 0
        f = gate_exp(torch.where(fresh, -torch.inf, log_f + m_prev - m))  # (B, H), <= 1
        z, o = torch.tanh(z_tilde), torch.sigmoid(o_tilde)  # (B, H) each
        c = f * c_prev + i * z  # (B, H)
        n = f * n_prev + i  # (B, H)
        h = o * c / n  # (B, H)
        return SLSTMState(h, c, n, m), {"i": i, "f": f, "z": z, "o": o, "c": c, "n": n, "m": m}

    def forward(
        self, x: Tensor, state: SLSTMState, return_gates: bool = False
    ) -> SLSTMState | tuple[SLSTMState, dict[str, Tensor]]:
        """One step: x (B, I), state (h, c, n, m) each (B, H) -> new state, plus the gates."""
        gates = x @ self.weight_ih.T + self.recurrent(state.h) + self.bias  # (B, 4H)
        new, records = self.pointwise(gates, state)
        return (new, {**records, "h": new.h}) if return_gates else new


class MLSTMState(NamedTuple):
    """State of an mLSTM: the last output ``h`` (..., B, H), the matrix memory ``C``
    (..., B, NH, DH, DH), the normaliser ``n`` (..., B, NH, DH) and the stabiliser ``m``
    (..., B, NH). All zeros is the state before the first step. ``h`` is not read by the next
    step (no gate reads h_{t-1}); it is kept so that a final state gives the last output, as
    an LSTM's does."""

    h: Tensor
    C: Tensor
    n: Tensor
    m: Tensor


class MLSTMCell(nn.Module):
    r"""mLSTM cell (Beck et al. 2024, section 2.3, equations 19-27), with NH heads of DH units.

    .. math::
        q_t &= W_q x_t + b_q, \quad k_t = (W_k x_t + b_k) / \sqrt{DH}, \quad v_t = W_v x_t + b_v
               \quad\text{(per head)}\\
        \log i_t &= \tilde\imath_t = w_i^T x_t + b_i, \qquad
        \log f_t = \log\sigma(\tilde f_t), \ \tilde f_t = w_f^T x_t + b_f
               \quad\text{(one scalar per head)}\\
        o_t &= \sigma(W_o x_t + b_o)\\
        m_t &= \max(\log f_t + m_{t-1}, \log i_t), \quad
        i'_t = \exp(\log i_t - m_t), \quad f'_t = \exp(\log f_t + m_{t-1} - m_t)\\
        C_t &= f'_t C_{t-1} + i'_t \, v_t k_t^T     \quad\text{(DH x DH per head)}\\
        n_t &= f'_t n_{t-1} + i'_t k_t\\
        h_t &= o_t \odot \frac{C_t q_t}{\max(|n_t^T q_t|, \exp(-m_t))}

    The stabiliser m scales C and n by the same exp(-m_t), so the unstabilised lower bound 1 of
    the paper's denominator becomes exp(-m_t); the output does not depend on m. No gate reads
    h_{t-1}, so the whole sequence can also be computed at once
    (:mod:`rnnlab.nn.backends.mlstm`, the parallel form).

    Weight layout: ``weight_ih`` (4H + 2NH, I) and ``bias`` (4H + 2NH): rows ``[0:H]`` = q,
    ``[H:2H]`` = k, ``[2H:3H]`` = v, ``[3H:4H]`` = o (each head-major: unit ``k * DH + j`` is
    unit j of head k), then NH rows of ĩ and NH rows of f̃. (4H + 2NH)(I + 1) parameters.
    Initialisation: Glorot-uniform ``weight_ih``, zero bias except f̃'s, ``forget_bias``.
    """

    gates = 4
    gate_names = ("i", "f", "o", "C_norm", "n_norm", "h")

    def __init__(
        self, input_size: int, hidden_size: int, num_heads: int = 1, forget_bias: float = 1.0
    ) -> None:
        super().__init__()
        name = type(self).__name__
        _check_sizes(name, input_size, hidden_size)
        if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads < 1:
            raise ValueError(f"{name} expected num_heads to be a positive int, got {num_heads!r}")
        if hidden_size % num_heads:
            raise ValueError(
                f"{name} expected hidden_size divisible by num_heads, got {hidden_size} and "
                f"{num_heads}"
            )
        self.input_size, self.hidden_size = input_size, hidden_size
        self.num_heads, self.head_size = num_heads, hidden_size // num_heads
        self.forget_bias = float(forget_bias)
        rows = 4 * hidden_size + 2 * num_heads
        self.weight_ih = nn.Parameter(torch.empty(rows, input_size))  # (4H + 2NH, I)
        self.bias = nn.Parameter(torch.empty(rows))  # (4H + 2NH,)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        _glorot_uniform_(self.weight_ih.data)
        nn.init.zeros_(self.bias)
        with torch.no_grad():
            self.bias[-self.num_heads :].fill_(self.forget_bias)

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, num_heads={self.num_heads}"

    def projections(self, k: Tensor) -> tuple[Tensor, ...]:
        """Pre-activations k = W x + b (..., 4H + 2NH) -> q, k, v (..., NH, DH), o (..., H),
        log i and log f (..., NH)."""
        H, NH, DH = self.hidden_size, self.num_heads, self.head_size
        q, key, v, o = (k[..., j * H : (j + 1) * H] for j in range(4))  # (..., H) each
        heads = k.shape[:-1] + (NH, DH)
        log_i = k[..., 4 * H : 4 * H + NH]  # (..., NH)
        log_f = F.logsigmoid(k[..., 4 * H + NH :])  # (..., NH)
        q, key, v = q.reshape(heads), key.reshape(heads) / DH**0.5, v.reshape(heads)
        return q, key, v, torch.sigmoid(o), log_i, log_f

    def forward(
        self, x: Tensor, state: MLSTMState, return_gates: bool = False
    ) -> MLSTMState | tuple[MLSTMState, dict[str, Tensor]]:
        """One step: x (B, I), state (h, C, n, m) -> new state, plus the gates if asked."""
        _, C_prev, n_prev, m_prev = state
        q, k, v, o, log_i, log_f = self.projections(x @ self.weight_ih.T + self.bias)
        m = torch.maximum(log_f + m_prev, log_i)  # (B, NH)
        i = torch.exp(log_i - m)  # (B, NH), <= 1
        f = torch.exp(log_f + m_prev - m)  # (B, NH), <= 1
        outer = v[..., :, None] * k[..., None, :]  # (B, NH, DH, DH): v_t k_t^T
        C = f[..., None, None] * C_prev + i[..., None, None] * outer  # (B, NH, DH, DH)
        n = f[..., None] * n_prev + i[..., None] * k  # (B, NH, DH)
        numerator = torch.einsum("bhij,bhj->bhi", C, q)  # (B, NH, DH): C_t q_t
        denominator = torch.maximum((n * q).sum(-1).abs(), torch.exp(-m))  # (B, NH)
        h = o * (numerator / denominator[..., None]).flatten(-2)  # (B, H)
        new = MLSTMState(h, C, n, m)
        if not return_gates:
            return new
        norms = {"C_norm": C.flatten(-2).norm(dim=-1), "n_norm": n.norm(dim=-1)}  # (B, NH)
        return new, {"i": i, "f": f, "o": o, **norms, "h": h}
