"""Recording a trained model's gates on one input, and the statistics drawn from them.

Shape legend: T time (image rows or word positions), H hidden units, C classes.

A :class:`Trace` holds, for one layer and direction, every step's gates as numpy arrays
(LSTM: i, f, g, o, c, h; GRU: r, z, n, h; RNN: h), which steps are real (not padding), a label per
step (the word or ``row k``) and the model's class probabilities after each real step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from rnnlab.nn.layers import RecurrentLayer

__all__ = [
    "SIGMOID_GATES",
    "InspectError",
    "Trace",
    "activity",
    "pick_units",
    "record_gates",
    "record_many",
    "saturation",
]

# The gates squashed by a sigmoid, whose saturation Karpathy et al. (2015) measure; g, n, c and h
# are tanh-valued or unbounded and are left out.
SIGMOID_GATES = {"lstm": ("i", "f", "o"), "gru": ("r", "z"), "rnn": ()}
LOW, HIGH = 0.1, 0.9  # "left" and "right" saturation thresholds of Karpathy et al. (2015)


class InspectError(ValueError):
    """Input that cannot be inspected: wrong kind of run or input, a layer, direction or unit
    that does not exist, an output folder that cannot be written."""


@dataclass(frozen=True)
class Trace:
    """One input's recording: ``gates`` name -> (T, H) for ``layer``/``direction``; ``real``
    (T,) bool; ``labels`` one per step; ``probabilities`` (T, C) after each step (NaN at
    padding); ``class_names`` (C,)."""

    kind: str  # "text" or "image"
    cell: str  # "lstm", "gru" or "rnn"
    layer: int
    direction: int
    gates: dict[str, np.ndarray]
    real: np.ndarray
    labels: list[str]
    probabilities: np.ndarray
    class_names: list[str]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def hidden_size(self) -> int:
        return (self.gates["c"] if "c" in self.gates else self.gates["h"]).shape[1]

    @property
    def final_probabilities(self) -> np.ndarray:
        return self.probabilities[np.flatnonzero(self.real)[-1]]  # (C,)


def recurrent_layers(model: nn.Module) -> list[RecurrentLayer]:
    """The rnnlab recurrent layers of a run's model, in order (one per stacked layer)."""
    stack = getattr(model, "stack", None)
    layers = list(getattr(stack, "layers", []))
    if not layers or not all(isinstance(layer, RecurrentLayer) for layer in layers):
        kinds = sorted({type(layer).__name__ for layer in layers}) or ["none"]
        raise InspectError(
            f"inspect expected a model of rnnlab RNN/LSTM/GRU layers, got {', '.join(kinds)}"
        )
    return layers


@torch.no_grad()
def record_gates(
    model: nn.Module, inputs: tuple[Tensor, ...], layer: int, direction: int
) -> dict[str, np.ndarray]:
    """Run ``model(*inputs, return_gates=True)`` on one example (batch of 1) and return
    ``layer``'s gates in ``direction``: name -> (T, H) numpy."""
    gates = _record(model, inputs, layer, direction)
    return {name: value[0].numpy() for name, value in gates.items()}  # name -> (T, H)


@torch.no_grad()
def record_many(
    model: nn.Module,
    inputs: tuple[Tensor, ...],
    real: Tensor,
    layer: int,
    direction: int,
    chunk: int = 100,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Gates of N examples (``inputs`` with N rows, ``real`` (N, T) bool) run in chunks, every
    example's steps laid end to end: ``(name -> (N*T, H), real (N*T,))``, for statistics."""
    parts: dict[str, list[np.ndarray]] = {}
    for k in range(0, len(real), chunk):
        gates = _record(model, tuple(t[k : k + chunk] for t in inputs), layer, direction)
        for name, value in gates.items():  # (b, T, H)
            parts.setdefault(name, []).append(value.reshape(-1, value.shape[-1]).numpy())
    return ({name: np.concatenate(v) for name, v in parts.items()}, real.reshape(-1).numpy())


def _record(
    model: nn.Module, inputs: tuple[Tensor, ...], layer: int, direction: int
) -> dict[str, Tensor]:
    layers = recurrent_layers(model)
    if not 0 <= layer < len(layers):
        raise InspectError(f"--layer expected 0..{len(layers) - 1}, got {layer}")
    D = layers[layer].num_directions
    if not 0 <= direction < D:
        raise InspectError(
            f"--direction expected 0..{D - 1} (0 forwards"
            f"{', 1 backwards' if D == 2 else ''}), got {direction}"
        )
    # Recording is a per-call argument: the dispatcher runs the reference loop on the same
    # parameters in float32, whatever each layer's backend and precision (a bf16 model's gates
    # are those of its float32 twin). Nothing on the model changes, so concurrent calls are safe.
    _, traces = model(*inputs, return_gates=True)
    return traces[layer][0][direction]  # each stacked layer is a one-layer rnnlab layer


def activity(gates: dict[str, np.ndarray], real: np.ndarray) -> np.ndarray:
    """(H,) how much each unit moves: the standard deviation over real steps of its cell state
    (LSTM) or hidden state (GRU, RNN). Units that never change carry nothing to look at."""
    values = gates["c"] if "c" in gates else gates["h"]  # (T, H)
    return values[real].std(axis=0)


def pick_units(
    gates: dict[str, np.ndarray], real: np.ndarray, units: list[int] | None, count: int
) -> list[int]:
    """``units`` checked against H, or by default the ``count`` most active (see
    :func:`activity`), most active first."""
    H = (gates["c"] if "c" in gates else gates["h"]).shape[1]  # per-head records are narrower
    if units is not None:
        if not units:
            raise InspectError("--units expected at least one unit index, got none")
        bad = [u for u in units if not 0 <= u < H]
        if bad:
            raise InspectError(f"--units expected indices in 0..{H - 1}, got {bad}")
        return list(dict.fromkeys(units))
    order = np.argsort(-activity(gates, real), kind="stable")
    return [int(u) for u in order[: min(count, H)]]


def saturation(gates: dict[str, np.ndarray], real: np.ndarray, cell: str) -> dict[str, Any]:
    """Karpathy et al. (2015), section 4.2: per unit, the fraction of real steps each sigmoid
    gate spends left-saturated (< 0.1) and right-saturated (> 0.9).

    Returns ``{"thresholds": [0.1, 0.9], "steps": n, "gates": {name: {"left": [H floats],
    "right": [H floats]}}}``; no gates for a vanilla RNN, which has none.
    """
    steps = int(real.sum())
    out: dict[str, Any] = {"thresholds": [LOW, HIGH], "steps": steps, "gates": {}}
    for name in SIGMOID_GATES[cell]:
        values = gates[name][real]  # (n, H)
        out["gates"][name] = {
            "left": (values < LOW).mean(axis=0).tolist(),
            "right": (values > HIGH).mean(axis=0).tolist(),
        }
    return out
