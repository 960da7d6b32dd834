"""Language-model analyses of ``rnnlab serve``: generation stepped one token at a time and
scoring, for :class:`rnnlab.serve.models.ServedRun` runs of ``model.kind = "lm"``.

Shape legend: L layers, H hidden units, V vocabulary.

Generation is the library's: the run's task builds the prompt
(:meth:`rnnlab.tasks.LanguageModelTask.prompt_ids`) and :meth:`rnnlab.LanguageModel.steps`,
the one decoding loop, reads it once and then draws and reads each token with the carried
state, giving per step the token's probability, the :data:`TOP` likeliest alternatives and the
state after it; this module only turns a step into the page's dict. The run's lock is held
around each ``next()`` of that iterator, one step at a time (the first also reads the prompt),
so several streams interleave on one model; each step runs its own ``torch.no_grad`` inside
the model (a stream is resumed from different worker threads, and grad mode is per-thread).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from rnnlab.nn.cells import LSTMState
from rnnlab.nn.language_model import LanguageModel, State, check_sampling
from rnnlab.tasks import LanguageModelTask, PredictError

__all__ = [
    "TOP",
    "LanguageInputError",
    "check_generation",
    "generate_tokens",
    "score_text",
    "warm_up",
]

TOP = 5  # alternatives shown per generated token


class LanguageInputError(ValueError):
    """A request the language model cannot read; ``field`` names the request field at fault
    (the serving layer turns it into its own ``InputError``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _layer_values(state: State, layer: int, which: str) -> torch.Tensor:
    """(H,): ``which`` ("c" or "h") of ``layer`` in a batch-of-one state (L, 1, H)."""
    if not isinstance(state, LSTMState):
        return state[layer, 0]  # GRU and RNN carry h only
    return (state.c if which == "c" else state.h)[layer, 0]


def check_generation(
    model: LanguageModel, temperature: float, top_k: int, layer: int, unit: int, state: str
) -> None:
    """Raise :class:`LanguageInputError` naming the field for settings that cannot work."""
    try:
        check_sampling(temperature, top_k or None, None)
    except ValueError as exc:
        field = "temperature" if "temperature" in str(exc) else "top_k"
        raise LanguageInputError(field, str(exc)) from exc
    if not 0 <= layer < model.num_layers:
        raise LanguageInputError("layer", f"expected 0..{model.num_layers - 1}, got {layer}")
    if not 0 <= unit < model.hidden_size:
        raise LanguageInputError("unit", f"expected 0..{model.hidden_size - 1}, got {unit}")
    if state == "c" and model.cell != "lstm":
        raise LanguageInputError(
            "state", f"expected 'h' (a {model.cell.upper()} has no cell state c), got 'c'"
        )


def generate_tokens(
    task: LanguageModelTask,
    model: LanguageModel,
    lock: threading.Lock,
    ids: list[int],
    max_tokens: int,
    temperature: float,
    top_k: int,
    layer: int,
    unit: int,
    state: str,
    seed: int | None,
    every_unit: bool = False,
) -> Iterator[dict[str, Any]]:
    """One dict per drawn token: ``token`` (its text, see
    :meth:`~rnnlab.tasks.LanguageModelTask.piece`), ``id``, ``probability`` (the model's, at
    temperature 1), ``top`` (the :data:`TOP` likeliest ``{"token", "probability"}``) and
    ``value`` (``state`` of ``unit`` in ``layer`` after reading the token) and, with
    ``every_unit``, ``values`` (H,): every unit's, so a page can recolour by another unit
    without generating again. Arguments are checked by the caller (:func:`check_generation`,
    :meth:`~rnnlab.tasks.LanguageModelTask.prompt_ids`)."""
    steps = model.steps(ids, max_tokens, temperature, top_k or None, None, seed, top=TOP)
    while True:
        with lock:  # per step, as the module docstring says; the state read while held
            step = next(steps, None)
            if step is None:
                return
            values = _layer_values(step.state, layer, state).double()  # (H,)
        item: dict[str, Any] = {
            "token": task.piece(step.token),
            "id": step.token,
            "probability": round(step.probability, 6),
            "top": [{"token": task.piece(i), "probability": round(p, 6)} for i, p in step.top],
            "value": round(float(values[unit]), 5),
        }
        if every_unit:
            item["values"] = np.round(values.numpy(), 4).tolist()
        yield item


def score_text(
    task: LanguageModelTask, model: LanguageModel, lock: threading.Lock, text: str
) -> dict[str, Any]:
    """``text`` scored by :meth:`rnnlab.tasks.LanguageModelTask.predict`: ``tokens``,
    ``log_probs`` (natural log, each given the text before it), ``loss``, ``bpc`` or
    ``perplexity``, ``count`` and the ``unknown`` tokens."""
    try:
        prepared = task.prepare([text], {})
    except PredictError as exc:
        raise LanguageInputError("text", str(exc)) from exc
    with lock:
        (out,) = task.predict(model, prepared)
    out["log_probs"] = np.round(np.asarray(out["log_probs"]), 6).tolist()
    out.pop("input", None)  # the caller has it; up to 100 kB not echoed back
    return {"figure": task.figure, **out}


def warm_up(model: LanguageModel, lock: threading.Lock) -> None:
    """One step, so the first request does not pay for building the compiled kernels."""
    with lock, torch.no_grad():
        model(torch.zeros(1, 1, dtype=torch.long, device=model.decoder.weight.device))
