"""int8 inference: dynamically quantized matrix products on torch's own kernels.

Shape legend: B batch, T time, I input features, H hidden units, N output features, K input
features of a matrix product.

Every matrix product runs through ``torch.ops.quantized.linear_dynamic``, the kernel under
``torch.ao.nn.quantized.dynamic.Linear`` (fbgemm or oneDNN, whichever packed the weight); no
int8 arithmetic is written here. What that kernel does, per call:

* the weight W (N, K) was quantized once, ahead of time, to int8 with zero point 0 and one
  scale per output row, s_n = max_k |W[n, k]| / 127 (per-channel; or one scale for the whole
  matrix, ``per_channel=False``), so q = round(W / s) lies in [-127, 127];
* the activation x (M, K) is quantized on the fly to uint8 with one scale and zero point
  chosen from its own minimum and maximum: 8 bits with oneDNN on a CPU with VNNI or AMX, which
  accumulate the products in 32 bits (torch's own ``onednn`` qconfig takes 8 bits too), else
  7 (``reduce_range``, what torch's dynamic ``Linear`` always passes), because pairs of 8-bit
  products summed in 16 bits can saturate (:func:`activation_bits`);
* the products accumulate in int32 and come back as float32, scaled, plus the float32 bias.

The recurrent scans (:func:`lstm`, :func:`gru`, :func:`rnn`) follow the fused path's plan
(:mod:`rnnlab.nn.backends.fused`) with int8 products: the input projection of all T steps is
one quantized product over (T*B, I) (in chunks of steps when its output would pass
:data:`XW_CHUNK_BYTES`), then each step's recurrent product h_{t-1} W_hh^T is one quantized
product over (B, H), quantized with that step's own range; the gate arithmetic and the state
stay float32. Padded steps (``mask`` False) carry the state and output zero, as in
the reference loop. Inference only: nothing here records a graph for autograd.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from rnnlab.nn.backends.fused import _time_major
from rnnlab.nn.cells import LSTMState

__all__ = [
    "ENGINES",
    "QuantizationError",
    "Int8Weight",
    "activation_bits",
    "default_engine",
    "packing_engine",
    "LSTMInt8",
    "XW_CHUNK_BYTES",
    "lstm",
    "lstm_weights",
    "gru",
    "rnn",
]

ENGINES = ("onednn", "fbgemm")  # torch's x86 engines; qnnpack (ARM) is not offered
_ENGINE_LOCK = threading.Lock()  # torch's engine is a process-wide setting, read at prepack


class QuantizationError(ValueError):
    """A model, layer or engine that int8 inference cannot take; the message names why."""


def default_engine() -> str:
    """The engine that packs weights: ``"onednn"`` where torch has it, else ``"fbgemm"``.
    oneDNN was 2-4x faster here (one thread, AVX-512 with VNNI and AMX: 0.33 against 0.78 ms
    for a (512, 256) x (256, 1024) product, 26 against 95 ms for (700, 650) x (650, 10000)),
    and with VNNI or AMX it accumulates in 32 bits, so activations keep 8 bits
    (:func:`activation_bits`). Raises QuantizationError where torch has neither (not an x86
    build)."""
    supported = torch.backends.quantized.supported_engines
    for engine in ENGINES:
        if engine in supported:
            return engine
    raise QuantizationError(
        f"int8 inference expected torch's x86 quantized engines {ENGINES}, got "
        f"{supported} in this torch build ({torch.__version__})"
    )


def activation_bits(engine: str) -> int:
    """8 where ``engine`` is oneDNN on a CPU with VNNI or AMX (32-bit accumulation of the 8-bit
    products), else 7 (``reduce_range``), as torch quantizes for fbgemm: without VNNI the
    x86 kernels add pairs of 8-bit products in 16 bits, which 8-bit activations can saturate."""
    cpu = torch.cpu
    try:
        wide = bool(cpu._is_vnni_supported() or cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):  # torch's private CPU checks: absent reads as no
        wide = False
    return 8 if engine == "onednn" and wide else 7


@contextmanager
def packing_engine(engine: str) -> Iterator[None]:
    """Pack weights under ``engine`` inside the block: torch reads its (process-wide) engine
    when a weight is packed, and the packed object then runs its own kernel whatever the
    setting, so the setting is needed while packing only, under a lock, and restored. (The
    bench packs torch's ``quantize_dynamic`` models under rnnlab's engine with it.)"""
    if engine not in torch.backends.quantized.supported_engines or engine not in ENGINES:
        raise QuantizationError(
            f"int8 inference expected an engine in "
            f"{[e for e in ENGINES if e in torch.backends.quantized.supported_engines]}, "
            f"got {engine!r}"
        )
    with _ENGINE_LOCK:
        before = torch.backends.quantized.engine
        torch.backends.quantized.engine = engine
        try:
            yield
        finally:
            torch.backends.quantized.engine = before


@dataclass(frozen=True, eq=False)
class Int8Weight:
    """One quantized matrix product ``x -> x W^T + b`` on int8 weights.

    Attributes:
        q: (N, K) int8, W / scale rounded, in [-127, 127].
        scale: (N,) float32, one per output row (all equal for a per-tensor weight).
        bias: (N,) float32 or None, added in float32.
        per_channel: whether ``scale`` varies by row.
        engine: the engine that packed it (:data:`ENGINES`).
        packed: torch's packed weight, what ``linear_dynamic`` reads.
    """

    q: Tensor
    scale: Tensor
    bias: Tensor | None
    per_channel: bool
    engine: str
    packed: object

    @classmethod
    def quantize(
        cls, weight: Tensor, bias: Tensor | None, per_channel: bool = True, engine: str = ""
    ) -> Int8Weight:
        """Quantize a float (N, K) ``weight`` symmetrically: scale max|W| / 127 per row
        (``per_channel``) or over the whole matrix."""
        if weight.dim() != 2 or not weight.is_floating_point():
            raise QuantizationError(
                f"Int8Weight expected a floating-point (N, K) weight, got {weight.dtype} "
                f"{tuple(weight.shape)}"
            )
        w = weight.detach().float().cpu()
        amax = w.abs().amax(dim=1) if per_channel else w.abs().amax().expand(w.shape[0])  # (N,)
        scale = (amax / 127.0).clamp_min(1e-12)  # (N,); an all-zero row keeps a valid scale
        q = torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8)  # (N, K)
        return cls.from_int8(q, scale, bias, per_channel, engine)

    @classmethod
    def from_int8(
        cls, q: Tensor, scale: Tensor, bias: Tensor | None, per_channel: bool, engine: str = ""
    ) -> Int8Weight:
        """Pack stored int8 values ``q`` (N, K) with their ``scale`` (N,) for ``engine``
        (default: :func:`default_engine`)."""
        engine = engine or default_engine()
        N = q.shape[0] if q.dim() == 2 else -1
        if q.dtype != torch.int8 or q.dim() != 2 or tuple(scale.shape) != (N,):
            raise QuantizationError(
                f"Int8Weight expected int8 values (N, K) and float scales (N,), got "
                f"{q.dtype} {tuple(q.shape)} and {tuple(scale.shape)}"
            )
        if not bool((scale > 0).all()) or not bool(torch.isfinite(scale).all()):
            raise QuantizationError("Int8Weight expected positive finite scales, got others")
        if bias is not None:
            bias = bias.detach().float().cpu().contiguous()
        scale = scale.float().contiguous()
        with warnings.catch_warnings():
            # torch 2.13 marks quantized tensor constructors deprecated; linear_prepack still
            # takes only such a tensor, so this is the one place one is made
            warnings.filterwarnings("ignore", message=r"torch\.quantize_per", category=UserWarning)
            zero = torch.zeros(q.shape[0], dtype=torch.long)
            qw = torch._make_per_channel_quantized_tensor(q, scale.double(), zero, 0)
            with packing_engine(engine):
                packed = torch.ops.quantized.linear_prepack(qw, bias)
        return cls(q.contiguous(), scale, bias, bool(per_channel), engine, packed)

    @property
    def reduce_range(self) -> bool:
        """Whether activations are quantized to 7 bits (see the module docstring)."""
        return activation_bits(self.engine) == 7

    def __call__(self, x: Tensor) -> Tensor:
        """(..., K) float32 -> (..., N) float32 through the int8 kernel."""
        return torch.ops.quantized.linear_dynamic(x, self.packed, self.reduce_range)

    def dequantize(self) -> Tensor:
        """(N, K) float32: the weight the int8 values stand for, q * scale."""
        return self.q.float() * self.scale[:, None]


def _batch_first(out: Tensor, reverse: bool) -> Tensor:
    """(T, B, H) in processing order -> (B, T, H) in time order."""
    return (out.flip(0) if reverse else out).transpose(0, 1)


def _keep_or_step(out: Tensor, t: int, ms: Tensor | None, h_new: Tensor, h: Tensor) -> Tensor:
    """Write step ``t``'s output (h_new, zero where ``ms[t]`` (B, 1) is False) and return the
    carried h: h_new at real steps, the old h at padded ones."""
    if ms is None:
        out[t] = h_new
        return h_new
    m = ms[t]  # (B, 1)
    torch.mul(h_new, m, out=out[t])
    return torch.where(m, h_new, h)


XW_CHUNK_BYTES = 2 << 20  # the most output one input-projection product writes (see below)


def _input_projections(xs: Tensor, w_ih: Int8Weight) -> Iterator[Tensor]:
    """Each step's input projection (B, G*H), in processing order, from int8 products over
    (T, B, I) ``xs``: all T steps in one product when its output fits :data:`XW_CHUNK_BYTES`,
    else as many steps per product as fit (at least one). Each chunk's activations get their
    own quantization range.

    Why a bound: one (T*B, G*H) output of tens of MiB (42 MiB at the bench's workload B, 67 MiB
    at F) is a fresh mmap from glibc on every call, page faults included, and leaves the cache
    before its last steps read it. Measured at workload B (one thread, on a shared core): the
    int8 forward took 130 ms of CPU time with one product and 84 ms in chunks (float32: 146
    ms); in three interleaved bench rounds int8 ran 1.61-1.75x float32 with 2 MiB chunks (one
    step each at B, 10 steps at G) and 1.43-1.60x with 4 MiB."""
    T, B, I = xs.shape
    N = w_ih.q.shape[0]
    steps = max(1, min(T, XW_CHUNK_BYTES // (B * N * xs.element_size())))
    for t0 in range(0, T, steps):
        chunk = xs[t0 : t0 + steps]  # (k, B, I)
        yield from w_ih(chunk.reshape(-1, I)).view(chunk.shape[0], B, N)  # k of (B, G*H)


Int8Pair = tuple["Int8Weight", "Int8Weight"]  # (w_ih, w_hh) of a GRU or RNN cell


class LSTMInt8(NamedTuple):
    """An LSTM cell's int8 products as :func:`lstm` takes them (made by :func:`lstm_weights`):
    ``w_ih`` (4H, I) with the bias, ``w_hh`` (4H, H) without; gate rows i, f, g, o, the g
    block's scales and bias doubled."""

    w_ih: Int8Weight
    w_hh: Int8Weight


def _rows_doubled(w: Int8Weight, rows: slice) -> Int8Weight:
    """``w`` with the outputs of ``rows`` doubled: their scales (and bias) times 2, exactly."""
    scale = w.scale.clone()
    scale[rows] *= 2
    bias = None if w.bias is None else w.bias.clone()
    if bias is not None:
        bias[rows] *= 2
    return Int8Weight.from_int8(w.q, scale, bias, w.per_channel, w.engine)


def lstm_weights(w_ih: Int8Weight, w_hh: Int8Weight) -> LSTMInt8:
    """The kernel's form of an LSTM cell's int8 weights (the same int8 values): the g block's
    outputs doubled, so that one sigmoid over all 4H pre-activations gives i, f, o and
    sigma(2 g), and tanh(g) = 2 sigma(2 g) - 1. One contiguous sigmoid costs less than three
    sigmoids and a tanh over strided column blocks; the identity is exact, its float32
    rounding about 1e-7."""
    H = w_hh.q.shape[1]
    g = slice(2 * H, 3 * H)
    return LSTMInt8(_rows_doubled(w_ih, g), _rows_doubled(w_hh, g))


def lstm(
    x: Tensor, state: LSTMState, mask: Tensor | None, w: LSTMInt8, *, reverse: bool = False
) -> tuple[Tensor, LSTMState]:
    """An LSTM cell (:class:`rnnlab.nn.cells.LSTMCell`) over x (B, T, I) from ``state``
    (h, c) each (B, H), with int8 products (``w`` from :func:`lstm_weights`). Returns (output
    (B, T, H), final state); steps where ``mask`` (B, T) is False keep the state and output
    zero; backwards in time if ``reverse``."""
    xs, ms = _time_major(x, mask, reverse)
    T, B, _ = xs.shape
    h, c = state
    out = xs.new_empty(T, B, h.shape[-1])  # (T, B, H)
    if ms is None:
        c = c.clone()  # updated in place below; the caller's state is left as it was
    for t, xw in enumerate(_input_projections(xs, w.w_ih)):  # xw (B, 4H), bias included
        gates = w.w_hh(h).add_(xw).sigmoid_()  # (B, 4H): i, f, sigma(2 g), o
        i, f, g2, o = gates.chunk(4, dim=1)  # each (B, H)
        if ms is None:  # c = f c + i tanh(g) = f c + 2 i sigma(2 g) - i, in place
            c.mul_(f).addcmul_(i, g2, value=2.0).sub_(i)  # (B, H)
            # h in a tensor of its own, not a view of ``out``: a step's (B, H) slice starts
            # off a 64-byte boundary when B*H is not a multiple of 16, and the next product
            # read such an h about 10% slower (workload G)
            h = torch.tanh(c).mul_(o)  # (B, H)
            out[t] = h
        else:
            c_new = torch.addcmul(f * c, i, g2, value=2.0).sub_(i)  # (B, H)
            m = ms[t]  # (B, 1)
            h_new = torch.tanh(c_new).mul_(o)  # (B, H)
            torch.mul(h_new, m, out=out[t])
            h, c = torch.where(m, h_new, h), torch.where(m, c_new, c)
    return _batch_first(out, reverse), LSTMState(h, c)


def gru(
    x: Tensor, h: Tensor, mask: Tensor | None, w: Int8Pair, *, reverse: bool = False
) -> tuple[Tensor, Tensor]:
    """A GRU cell (torch/cuDNN convention, :class:`rnnlab.nn.cells.GRUCell`) over x (B, T, I)
    from h (B, H), with int8 products ``w`` = (w_ih, w_hh): W_ih (3H, I) with ``bias`` (rows
    r, z, n) and W_hh (3H, H) with the bias (0, 0, b_hn), so its n block is W_hn h + b_hn,
    the term the reset gate multiplies."""
    w_ih, w_hh = w
    xs, ms = _time_major(x, mask, reverse)
    T, B, _ = xs.shape
    H = h.shape[-1]
    out = xs.new_empty(T, B, H)  # (T, B, H)
    for t, xw in enumerate(_input_projections(xs, w_ih)):  # xw (B, 3H), bias included
        gh = w_hh(h)  # (B, 3H), b_hn in the n block
        rz = torch.add(xw[:, : 2 * H], gh[:, : 2 * H]).sigmoid_()  # (B, 2H)
        r, z = rz.chunk(2, dim=1)  # each (B, H)
        n = torch.addcmul(xw[:, 2 * H :], r, gh[:, 2 * H :]).tanh_()  # (B, H)
        h_new = torch.lerp(n, h, z)  # (1 - z) n + z h
        h = _keep_or_step(out, t, ms, h_new, h)
    return _batch_first(out, reverse), h


def rnn(
    x: Tensor, h: Tensor, mask: Tensor | None, w: Int8Pair, *, reverse: bool = False
) -> tuple[Tensor, Tensor]:
    """A vanilla tanh RNN cell over x (B, T, I) from h (B, H), with int8 products ``w`` =
    (w_ih, w_hh): W_ih (H, I) with the bias, W_hh (H, H) without one."""
    w_ih, w_hh = w
    xs, ms = _time_major(x, mask, reverse)
    T, B, _ = xs.shape
    out = xs.new_empty(T, B, h.shape[-1])  # (T, B, H)
    for t, xw in enumerate(_input_projections(xs, w_ih)):  # xw (B, H), bias included
        h_new = w_hh(h).add_(xw).tanh_()  # (B, H)
        h = _keep_or_step(out, t, ms, h_new, h)
    return _batch_first(out, reverse), h
