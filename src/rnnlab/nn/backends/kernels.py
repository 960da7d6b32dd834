"""The kernels of the routing table by name, and the one function that calls them.

Shape legend: B batch, T time, I input features, H hidden units, R = P or H (h's width).

:mod:`rnnlab.nn.backends.dispatch` decides which :data:`Kernel` runs a layer (its routing
table); :func:`run_kernel` calls it on one direction with the arguments every kernel takes.
A new kernel is a name here, a branch of :func:`run_kernel` and a row of the table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from torch import Tensor

from rnnlab.nn.backends import (
    compiled,
    fused,
    gru_variant_compiled,
    mlstm,
    native,
    parallel,
    reference,
    slstm,
    variant_compiled,
    variant_fused,
)
from rnnlab.nn.cells import Cell, LSTMState
from rnnlab.nn.mincells import MinCell
from rnnlab.nn.variants import CellNoise, VariantCell
from rnnlab.nn.xlstm import MLSTMCell, MLSTMState, SLSTMCell, SLSTMState

__all__ = ["AnyCell", "Kernel", "Route", "State", "run_kernel", "check_noise"]

Kernel = Literal[
    "reference",
    "fused.lstm",
    "fused.gru",
    "fused.rnn",
    "compiled.lstm_train",
    "compiled.lstm_forward",
    "compiled.lstm_infer",
    "compiled.lstm_infer_pair",
    "compiled.gru_train",
    "compiled.gru_forward",
    "compiled.gru_infer",
    "compiled.mingru",
    "compiled.minlstm",
    "torch.lstm",
    "torch.gru",
    "torch.rnn",
    "torch.lstm_stack",
    "torch.gru_stack",
    "torch.rnn_stack",
    "parallel.mingru",
    "parallel.minlstm",
    "fused.slstm",
    "parallel.mlstm",
    "fused.lstm_variant",
    "compiled.lstm_variant",
    "fused.gru_variant",
    "compiled.gru_variant",
]

State = Tensor | LSTMState | SLSTMState | MLSTMState
AnyCell = Cell | MinCell | SLSTMCell | MLSTMCell  # the classic cells (and variants), 2024's


@dataclass(frozen=True)
class Route:
    """What runs one layer: ``backend`` resolved from the requested one; ``kernels`` one name
    per direction (forwards, then backwards), or ``("compiled.lstm_infer_pair",)`` when one
    call runs both; ``bf16`` whether the GEMM operands are rounded to bf16; ``return_gates``
    whether the reference loop records the gates."""

    backend: Literal["reference", "fused", "compiled", "torch"]
    kernels: tuple[Kernel, ...]
    bf16: bool = False
    return_gates: bool = False


def run_kernel(
    kernel: Kernel,
    route: Route,
    cell: AnyCell,
    x: Tensor,
    state: State,
    mask: Tensor | None,
    noise: CellNoise | None,
    *,
    reverse: bool,
) -> tuple[Tensor, State, dict[str, Tensor] | None]:
    """Call ``kernel`` on one direction: (output (B, T, H), final state, gates or None)."""
    if kernel == "reference":
        return reference.scan(
            cell, x, state, mask, reverse=reverse, return_gates=route.return_gates, noise=noise
        )
    if kernel == "fused.lstm_variant":
        out, final = variant_fused.lstm_variant(cell, x, state, mask, noise, reverse=reverse)
        return out, final, None
    if kernel == "fused.gru_variant":
        out, final = variant_fused.gru_variant(cell, x, state, mask, noise, reverse=reverse)
        return out, final, None
    if kernel == "compiled.gru_variant":
        out, final = gru_variant_compiled.gru_variant(cell, x, state, mask, noise, reverse=reverse)
        return out, final, None
    if kernel == "compiled.lstm_variant":
        out, final = variant_compiled.lstm_variant(
            cell, x, state, mask, noise, reverse=reverse, bf16=route.bf16
        )
        return out, final, None
    if kernel == "fused.lstm":
        out, final = fused.lstm(cell, x, state, mask, reverse=reverse)
    elif kernel == "fused.gru":
        out, final = fused.gru(cell, x, state, mask, reverse=reverse)
    elif kernel == "fused.rnn":
        out, final = fused.rnn(cell, x, state, mask, reverse=reverse)
    elif kernel == "compiled.lstm_train":
        out, final = compiled.lstm_train(cell, x, state, mask, reverse=reverse, bf16=route.bf16)
    elif kernel == "compiled.lstm_forward":
        out, final = compiled.lstm_forward(cell, x, state, mask, reverse=reverse, bf16=route.bf16)
    elif kernel == "compiled.lstm_infer":
        out, final = compiled.lstm_infer(cell, x, state, reverse=reverse, bf16=route.bf16)
    elif kernel == "compiled.gru_train":
        out, final = compiled.gru_train(cell, x, state, mask, reverse=reverse)
    elif kernel == "compiled.gru_infer":
        out, final = compiled.gru_infer(cell, x, state, reverse=reverse)
    elif kernel == "compiled.gru_forward":
        out, final = compiled.gru_forward(cell, x, state, mask, reverse=reverse)
    elif kernel == "torch.lstm":
        out, final = native.lstm(cell, x, state, reverse=reverse)
    elif kernel == "torch.gru":
        out, final = native.gru(cell, x, state, reverse=reverse)
    elif kernel == "torch.rnn":
        out, final = native.rnn(cell, x, state, reverse=reverse)
    elif kernel == "parallel.mingru":
        out, final = parallel.mingru(cell, x, state, mask, reverse=reverse, bf16=route.bf16)
    elif kernel == "parallel.minlstm":
        out, final = parallel.minlstm(cell, x, state, mask, reverse=reverse, bf16=route.bf16)
    elif kernel == "compiled.mingru":
        out, final = compiled.mingru(cell, x, state, mask, reverse=reverse, bf16=route.bf16)
    elif kernel == "compiled.minlstm":
        out, final = compiled.minlstm(cell, x, state, mask, reverse=reverse, bf16=route.bf16)
    elif kernel == "fused.slstm":
        out, final = slstm.slstm(cell, x, state, mask, reverse=reverse)
    elif kernel == "parallel.mlstm":
        out, final = mlstm.mlstm(cell, x, state, mask, reverse=reverse)
    else:
        raise AssertionError(f"no single-direction kernel named {kernel!r}")
    return out, final, None


def check_noise(cells: Sequence[AnyCell], noise: Sequence, route: Route) -> None:
    """Masks only for variant LSTM and GRU cells, one entry per direction, on a route that
    applies them (torch's ops have no recurrent dropout or zoneout)."""
    if len(noise) != len(cells):
        raise ValueError(f"expected one noise entry per direction ({len(cells)}), got {len(noise)}")
    for cell, masks in zip(cells, noise, strict=True):
        if masks is None:
            continue
        if not isinstance(cell, VariantCell):
            raise ValueError(
                "recurrent dropout and zoneout masks apply to variant LSTM and GRU cells, got "
                f"them for {type(cell).__name__}"
            )
        if route.backend == "torch" and any(m is not None for m in masks):
            raise RuntimeError(
                "backend='torch' has no recurrent dropout or zoneout (torch's op takes no masks). "
                "Use backend='auto' or 'fused'."
            )
