"""The one place that decides what runs a recurrent layer: :func:`scan_layer` and its table.

Shape legend: B batch, T time, I input features, H hidden units, D directions (1 or 2).

A layer of the stack (one or two cells, forwards and backwards) goes through
:func:`route_layer`, which returns a :class:`Route` (the backend, the kernel of each direction,
whether the GEMMs take bf16 operands), and :func:`scan_layer` calls the kernels it names. The
code above (:mod:`rnnlab.nn.layers`) validates, masks and stacks; it never picks a kernel.

:data:`Backend` is the one backend vocabulary of rnnlab: the layers' ``backend`` argument and
:class:`rnnlab.config.ModelConfig`'s ``backend`` both take it, and every name is a row of the
table in :func:`scan_layer`. Recording gates, a backend and a precision are per-call arguments
here, never attributes set around a call.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from rnnlab.nn.backends import _ext, compiled, gru_variant_compiled, native, variant_compiled
from rnnlab.nn.backends.kernels import AnyCell, Kernel, Route, State, check_noise, run_kernel
from rnnlab.nn.backends.precision import (
    PRECISIONS,
    Precision,
    autocast_bf16,
    autocast_input,
    needs_backward,
    use_bf16,
)
from rnnlab.nn.cells import GRUCell, LSTMCell, RNNCell
from rnnlab.nn.mincells import MinCell, MinGRUCell, MinLSTMCell
from rnnlab.nn.variant_gru import VariantGRUCell
from rnnlab.nn.variants import CellNoise, VariantCell, VariantLSTMCell
from rnnlab.nn.xlstm import MLSTMCell, SLSTMCell

__all__ = [
    "BACKENDS",
    "Backend",
    "PRECISIONS",
    "Precision",
    "Kernel",
    "Route",
    "LayerScan",
    "scan_layer",
    "route_layer",
    "resolve_backend",
    "use_bf16",
    "needs_backward",
    "autocast_bf16",
    "autocast_input",
]

Backend = Literal["auto", "compiled", "fused", "reference", "torch"]
BACKENDS: tuple[Backend, ...] = ("auto", "compiled", "fused", "reference", "torch")
_NO_NATIVE = (SLSTMCell, MLSTMCell)  # cells with no compiled and no torch kernel
_FUSED: dict[type[AnyCell], Kernel] = {
    VariantLSTMCell: "fused.lstm_variant",
    VariantGRUCell: "fused.gru_variant",
    LSTMCell: "fused.lstm",
    GRUCell: "fused.gru",
    RNNCell: "fused.rnn",
    MinGRUCell: "parallel.mingru",
    MinLSTMCell: "parallel.minlstm",
    SLSTMCell: "fused.slstm",
    MLSTMCell: "parallel.mlstm",
}
_TORCH: dict[type[AnyCell], Kernel] = {
    VariantLSTMCell: "torch.lstm",  # projection only: torch's proj_size
    VariantGRUCell: "torch.gru",  # without LayerNorm, in eval mode
    LSTMCell: "torch.lstm",
    GRUCell: "torch.gru",
    RNNCell: "torch.rnn",
}
_warned_fallback = False
# auto's torch rows: the float32 LSTM widths at which torch's own op (oneDNN) beats the compiled
# kernels on rnnlab's parameters. Set by benchmarks/torch_row_sweep.py (results_torch_row_sweep.txt,
# 2026-12-05, one layer, one thread, Intel Xeon with AVX-512 and AMX): at H >= 256 torch's op
# was faster at all five (B, T) shapes of the bench's workloads, 1.05-1.42x in inference and
# 1.02-1.35x in training (bidirectional: 1.03-2.14x and 1.03-1.31x); at H = 128 the compiled
# kernels were faster or level (0.82-1.04x). The GRU's compiled kernels were faster or level at
# every width (0.62-1.04x), so the GRU has no such row. Rerun at H 128 and 256 on an AMD EPYC
# host without AMX (results_torch_row_sweep_amd.txt, 2026-12-06): H 128 level (0.95-1.03x),
# H 256 torch's op faster or level (0.99-1.17x), the GRU's kernels faster (0.35-0.50x):
# the same rule.
TORCH_LSTM_MIN_HIDDEN = 256


class LayerScan(NamedTuple):
    """What :func:`scan_layer` returns: ``output`` (B, T, D*H), both directions concatenated;
    ``finals`` each direction's final state; ``gates`` per direction the reference loop's
    records (gate name -> (B, T, H)), or None where gates were not asked for."""

    output: Tensor
    finals: list[State]
    gates: list[dict[str, Tensor] | None]


def scan_layer(
    cells: Sequence[AnyCell],
    x: Tensor,
    states: Sequence[State],
    mask: Tensor | None,
    *,
    backend: Backend = "auto",
    precision: Precision = "fp32",
    return_gates: bool = False,
    noise: Sequence[CellNoise | None] | None = None,
) -> LayerScan:
    """Run one layer: ``cells`` (forward cell, then the backward one if bidirectional) over x
    (B, T, I) from ``states`` (each (B, H), an :class:`LSTMState` for LSTM), skipping steps
    where ``mask`` (B, T) is False (None: every step is real). ``noise`` gives each direction of
    a variant LSTM or GRU (:class:`rnnlab.nn.variants.VariantLSTMCell`,
    :class:`rnnlab.nn.variant_gru.VariantGRUCell`) its recurrent-dropout and zoneout masks
    (:class:`~rnnlab.nn.variants.CellNoise`, None: none); every kernel of a variant applies
    them, so the masks never decide the route.

    Routing table. The first row whose conditions hold decides; "grad" means autograd will want
    gradients of the scan (grad mode on and x, a cell's parameter or an initial state requires
    grad; the module's train/eval mode plays no part), "mask" a ``mask`` that is not None (the
    layers pass None when every step is real, e.g. all lengths equal T), "compiled runs" means
    :func:`rnnlab.nn.backends.compiled_unavailable` finds nothing against the cell and x (LSTM
    or GRU, float32/float64 on the CPU, extension built; for a variant LSTM
    :func:`rnnlab.nn.backends.variant_compiled.variant_unavailable`, for a variant GRU
    :func:`rnnlab.nn.backends.gru_variant_compiled.gru_variant_unavailable`)::

        backend      call conditions                                 kernel (each direction)
        -----------  ----------------------------------------------  -------------------------
        any          return_gates (any precision)                    reference.scan (records,
                                                                       float32 GEMMs)
        reference    any                                             reference.scan
        fused        LSTM / GRU / RNN cell                           fused.lstm / .gru / .rnn
        fused        minGRU / minLSTM cell                           parallel.mingru / .minlstm
                                                                       (one GEMM, then a
                                                                       blocked scan over time)
        fused, auto  sLSTM cell                                      fused.slstm (one input
                                                                       GEMM, then the steps)
        fused, auto  mLSTM cell                                      parallel.mlstm (every
                                                                       step at once)
        fused        variant LSTM (LayerNorm, projection, peepholes,  fused.lstm_variant (the
                       recurrent dropout or zoneout)                   input side hoisted, then
                                                                       the cell's step under
                                                                       autograd)
        fused        variant GRU (LayerNorm, recurrent dropout,      fused.gru_variant (the
                       zoneout)                                        same, for the GRU step)
        torch        variant LSTM with LayerNorm or peepholes,       RuntimeError: torch's op
                       variant GRU with LayerNorm                      has none of them
        torch        variant LSTM or GRU, training masks             RuntimeError: torch's op
                       (recurrent dropout, zoneout)                    takes no masks
        compiled,    sLSTM / mLSTM cell                              RuntimeError: no such
          torch                                                        kernel; use 'auto'
        torch        minGRU / minLSTM cell                           RuntimeError: no such
                                                                       kernel; use 'auto'
        torch        mask                                            ValueError: torch's ops
                                                                       cannot skip padding
        torch        dtype not float32/float64                       RuntimeError: the dtype
        torch        LSTM / GRU / RNN cell, variant LSTM with a      torch.lstm / .gru / .rnn
                       projection only, variant GRU without            (torch's own op: oneDNN
                       LayerNorm (its masks off: eval mode)            on CPU, cuDNN on CUDA;
                                                                       proj_size for LSTMP)
        auto         no mask, float32, precision fp32, not under     torch.lstm / .gru / .rnn
                       bf16 autocast, and either a CUDA tensor of an   (where torch's op is the
                       LSTM / GRU / RNN cell, or an LSTM cell with     faster: the threshold
                       H >= TORCH_LSTM_MIN_HIDDEN (256), not in grad   and its run are at
                       mode under torch.compile                        TORCH_LSTM_MIN_HIDDEN)
        torch, auto  a whole stack whose first layer takes the       torch.lstm_stack /
                       torch row above, plain cells, no gates, no      .gru_stack / .rnn_stack
                       dropout between layers in this call             (one call for every
                       (``stack.route_stack``; the layers ask it       layer and direction, as
                       first)                                          torch.nn.LSTM makes it)
        compiled     compiled cannot run                             RuntimeError: the reason
                                                                       and the fix
        auto         compiled cannot run                             fused.lstm / .gru / .rnn,
                                                                       fused.lstm_variant /
                                                                       .gru_variant,
                                                                       parallel.mingru / .minlstm
                                                                       (warns once if the
                                                                       extension failed to build)
        compiled,    LSTM, bidirectional, no grad, no mask, float32  compiled.lstm_infer_pair
          auto                                                         (both in one call)
                     LSTM, grad                                      compiled.lstm_train
                     LSTM, no grad, no mask, float32                 compiled.lstm_infer
                     LSTM, no grad, mask or float64                  compiled.lstm_forward
                     GRU, grad                                       compiled.gru_train
                     GRU, no grad, no mask, float32                  compiled.gru_infer
                     GRU, no grad, mask or float64                   compiled.gru_forward
                     minGRU / minLSTM, grad or not, any mask         compiled.mingru / .minlstm
                                                                       (the parallel path's GEMM,
                                                                       then the time loop in C++)
                     variant LSTM, grad or not, any mask, any        compiled.lstm_variant
                       noise                                           (lstm_variant.cpp: the
                                                                       options' equations, whole
                                                                       time loops in C++)
                     variant GRU, grad or not, any mask, any noise   compiled.gru_variant
                                                                       (gru_variant.cpp; float32
                                                                       and float64, no bf16)

        bf16 GEMM operands (Route.bf16), from the backend chosen above:
        precision    call conditions                                 bf16
        -----------  ----------------------------------------------  -------------------------
        fp32         compiled, LSTM, under                           on
                       torch.autocast("cpu", dtype=torch.bfloat16)
        fp32         fused or compiled, minGRU / minLSTM, under      on
                       autocast
        fp32         anything else                                   off
        bf16         compiled, LSTM, float32                         on
        bf16         fused or compiled, minGRU / minLSTM, float32    on (the input GEMM; the
                                                                       scan stays float32)
        bf16         anything else                                   RuntimeError: the reason
                                                                       and the fix

    bf16 keeps float32 parameters, gates, cell state and outputs (see :func:`use_bf16`). The
    minGRU / minLSTM rows share the input GEMM (:func:`rnnlab.nn.backends.parallel.
    input_projection`); their fused row scans over time in torch ops, their compiled row in one
    C++ pass (``minscan.cpp``, which cannot be differentiated twice: gradgradcheck takes
    ``"fused"``); torch has no kernel for them.

    Recording gates is a per-call request that outranks the layer's configuration: whatever
    ``backend`` and ``precision`` say, ``return_gates=True`` runs the reference loop on the
    same parameters in float32, so a bf16 layer (its GEMMs rounded to bf16 in the compiled
    kernels) or a layer forced to another backend records the gates of its float32 twin.
    ``"auto"`` picks ``"torch"`` only in its own row above, where it was measured faster (and
    on CUDA, where rnnlab has no kernel of its own); ask for it anywhere else (speed comparisons
    against oneDNN/cuDNN on the very same parameters; :mod:`rnnlab.nn.backends.native`).

    Returns a :class:`LayerScan`; :func:`route_layer` gives the decision without running it.
    """
    route = route_layer(
        cells, x, states, mask, backend=backend, precision=precision, return_gates=return_gates
    )
    if route.kernels == ("compiled.lstm_infer_pair",):
        pair_cells, pair_states = (cells[0], cells[1]), (states[0], states[1])
        output, finals = compiled.lstm_infer_pair(pair_cells, x, pair_states, bf16=route.bf16)
        return LayerScan(output, finals, [None, None])
    outputs, finals, gates = [], [], []
    noise = [None] * len(cells) if noise is None else noise
    check_noise(cells, noise, route)
    for direction, (kernel, cell, state, masks) in enumerate(
        zip(route.kernels, cells, states, noise, strict=True)
    ):
        out, final, records = run_kernel(
            kernel, route, cell, x, state, mask, masks, reverse=direction == 1
        )
        outputs.append(out)  # (B, T, H)
        finals.append(final)
        gates.append(records)
    output = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=-1)  # (B, T, D*H)
    return LayerScan(output, finals, gates)


def route_layer(
    cells: Sequence[AnyCell],
    x: Tensor,
    states: Sequence[State],
    mask: Tensor | None,
    *,
    backend: Backend = "auto",
    precision: Precision = "fp32",
    return_gates: bool = False,
) -> Route:
    """The :class:`Route` that :func:`scan_layer` takes for these arguments (its docstring has
    the table); raises where the table says so."""
    if precision not in PRECISIONS:
        raise ValueError(f"expected precision in {PRECISIONS}, got {precision!r}")
    chosen = resolve_backend(cells[0], x, backend, return_gates=return_gates)
    if return_gates:  # the first row: the reference loop in float32, whatever was configured
        return Route("reference", ("reference",) * len(cells), False, True)
    if backend == "auto" and _auto_takes_torch(cells[0], x, mask, precision):
        chosen = "torch"
    bf16 = use_bf16(cells[0], x, backend=chosen, precision=precision)
    if chosen == "reference":
        kernels: tuple[Kernel, ...] = ("reference",) * len(cells)
    elif chosen == "fused":
        kernels = tuple(_cell_kernel(_FUSED, cell) for cell in cells)
    elif chosen == "torch":
        native.check_call(x, mask)
        kernels = tuple(_cell_kernel(_TORCH, cell) for cell in cells)
    elif _pair_applies(cells, x, states, mask):
        kernels = ("compiled.lstm_infer_pair",)
    else:
        kernels = tuple(
            _compiled_kernel(cell, x, state, mask)
            for cell, state in zip(cells, states, strict=True)
        )
    return Route(chosen, kernels, bf16, return_gates)


def _auto_takes_torch(cell: AnyCell, x: Tensor, mask: Tensor | None, precision: str) -> bool:
    """auto's torch rows: unpadded float32 in float32 mode (not under bf16 autocast), either a
    CUDA tensor of an LSTM, GRU or RNN (cuDNN through the same op), or on the CPU an LSTM at
    least :data:`TORCH_LSTM_MIN_HIDDEN` wide."""
    if mask is not None or x.dtype != torch.float32 or precision != "fp32" or autocast_bf16():
        return False
    if cell.weight_ih.dtype != torch.float32:  # a mixed-dtype call: the other rows say why
        return False
    if x.device.type == "cuda":
        return isinstance(cell, (LSTMCell, GRUCell, RNNCell))
    if torch.compiler.is_compiling() and torch.is_grad_enabled():
        # AOTAutograd decomposes torch.lstm into its per-step operations for training: an
        # unrolled graph that took minutes to compile and ran F's training step 1.09x slower
        # than eager, while the compiled kernels stay one operator each
        # (benchmarks/results_compile.txt)
        return False
    return isinstance(cell, LSTMCell) and cell.hidden_size >= TORCH_LSTM_MIN_HIDDEN


def _pair_applies(
    cells: Sequence[AnyCell], x: Tensor, states: Sequence[State], mask: Tensor | None
) -> bool:
    """The bidirectional pair kernel's rows of the table: two LSTM cells, unpadded float32
    inference."""
    return (
        len(cells) == 2
        and all(isinstance(cell, LSTMCell) for cell in cells)
        and mask is None
        and x.dtype == torch.float32
        and not needs_backward(x, cells, states)
    )


def _cell_kernel(table: dict[type[AnyCell], Kernel], cell: AnyCell) -> Kernel:
    """The fused or torch row of the table: the kernel written for the cell's type."""
    for cell_type, kernel in table.items():
        if isinstance(cell, cell_type):
            return kernel
    raise TypeError(f"expected an RNNCell, LSTMCell or GRUCell, got {type(cell).__name__}")


def _compiled_kernel(cell: AnyCell, x: Tensor, state: State, mask: Tensor | None) -> Kernel:
    """The compiled rows of the table for one direction."""
    if isinstance(cell, VariantLSTMCell):
        return "compiled.lstm_variant"
    if isinstance(cell, VariantGRUCell):
        return "compiled.gru_variant"
    if isinstance(cell, MinCell):
        return "compiled.mingru" if isinstance(cell, MinGRUCell) else "compiled.minlstm"
    grad = needs_backward(x, [cell], [state])
    if isinstance(cell, LSTMCell):
        if grad:
            return "compiled.lstm_train"
        if mask is None and x.dtype == torch.float32:
            return "compiled.lstm_infer"
        return "compiled.lstm_forward"
    if grad:
        return "compiled.gru_train"
    return (
        "compiled.gru_infer"
        if mask is None and x.dtype == torch.float32
        else "compiled.gru_forward"
    )


def resolve_backend(
    cell: AnyCell, x: Tensor, requested: Backend, *, return_gates: bool = False
) -> Literal["reference", "fused", "compiled", "torch"]:
    """The backend the table's first rows give ``requested`` for ``cell`` on ``x``: "reference"
    when asked for or when gates are (only it records them, whatever backend the layer has),
    "fused" and "torch" when asked for, else "compiled" where the C++ kernels can run and
    "fused" (pure torch) where they cannot. A forced compiled backend that cannot run raises,
    naming the cause and the fix; "auto" warns once if the extension failed to build, and then
    uses "fused"."""
    global _warned_fallback
    if requested not in BACKENDS:
        raise ValueError(f"expected backend in {BACKENDS}, got {requested!r}")
    if requested == "reference" or return_gates:
        return "reference"
    if isinstance(cell, _NO_NATIVE) or (isinstance(cell, MinCell) and requested == "torch"):
        if requested in ("auto", "fused"):
            return "fused"
        missing = (
            "torch has none"
            if isinstance(cell, MinCell)
            else "neither rnnlab's compiled kernels nor torch have one"
        )
        raise RuntimeError(
            f"backend={requested!r} has no kernel for {type(cell).__name__} ({missing}). Use "
            "backend='auto' or 'fused' (its pure-torch fast path) or 'reference' (the "
            "step-by-step loop)."
        )
    if requested == "torch" and isinstance(cell, VariantCell):
        native.check_variant(cell)
    if requested in ("fused", "torch"):
        return requested
    if isinstance(cell, VariantGRUCell):
        reason = gru_variant_compiled.gru_variant_unavailable(cell, x)
    elif isinstance(cell, VariantLSTMCell):
        reason = variant_compiled.variant_unavailable(cell, x)
    else:
        reason = compiled.compiled_unavailable(cell, x)
    if reason is None:
        return "compiled"
    if requested == "compiled":
        raise RuntimeError(
            f"backend='compiled' cannot run here: {reason}. Use backend='auto' (falls back to "
            "the pure-torch fused path) or backend='fused'."
        )
    if _ext.build_failed() and not _warned_fallback:
        _warned_fallback = True
        warnings.warn(
            f"rnnlab: using the slower pure-torch fused path because {reason}",
            RuntimeWarning,
            stacklevel=2,
        )
    return "fused"
