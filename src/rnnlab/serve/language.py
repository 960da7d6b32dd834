"""Language-model analyses of ``rnnlab serve``: generation stepped one token at a time and
scoring, for :class:`rnnlab.serve.lm.LanguageRun`.

Shape legend: L layers, H hidden units, V vocabulary.

Generation reuses the library's pieces: the run's task encodes the prompt
(:meth:`rnnlab.tasks.LanguageModelTask.encode`, after its ``start_context``), the
:class:`rnnlab.LanguageModel` reads it once and then each drawn token alone with the carried
state (as :meth:`rnnlab.LanguageModel.generate` does), and
:func:`rnnlab.nn.language_model.sample_next` draws.
The steps are taken here rather than through ``LanguageModel.generate`` because the page wants,
per token, what that iterator does not give: the token's probability, the five likeliest
alternatives and one unit's state after it. Each step takes its own ``torch.no_grad`` (a stream
is resumed from different worker threads, and grad mode is per-thread), so several streams can
interleave on one model.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from rnnlab.nn.cells import LSTMState
from rnnlab.nn.language_model import LanguageModel, State, check_sampling, sample_next
from rnnlab.tasks import LanguageModelTask, PredictError

__all__ = [
    "TOP",
    "LanguageInputError",
    "check_generation",
    "generate_tokens",
    "prompt_ids",
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


def prompt_ids(task: LanguageModelTask, prompt: str) -> list[int]:
    """The ids the model reads before generating: the start context, then the prompt's."""
    ids: list[int] = list(task.start_context())
    if prompt:
        try:
            ids += task.encode(prompt, "prompt")[0].tolist()
        except PredictError as exc:
            raise LanguageInputError("prompt", str(exc)) from exc
    if not ids:
        raise LanguageInputError(
            "prompt",
            "expected some text (this character vocabulary has no newline to start from), "
            "got an empty prompt",
        )
    return ids


def generate_tokens(
    task: LanguageModelTask,
    model: LanguageModel,
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
    :func:`prompt_ids`)."""
    vocab = task.vocab
    assert vocab is not None, "read_artifacts binds the vocabulary"
    device = model.decoder.weight.device
    generator = None if seed is None else torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        logits, carried = model(torch.tensor([ids], device=device))  # (1, P, V): once
    for _ in range(max_tokens):
        with torch.no_grad():
            last = logits[0, -1]  # (V,)
            token = sample_next(last, temperature, top_k or None, None, generator)
            probs = torch.softmax(last.double(), dim=-1)  # (V,)
            best = torch.topk(probs, min(TOP, probs.shape[0]))
            logits, carried = model(torch.tensor([[token]], device=device), carried)  # (1, 1, V)
            values = _layer_values(carried, layer, state).double()  # (H,)
        item: dict[str, Any] = {
            "token": task.piece(token),
            "id": token,
            "probability": round(float(probs[token]), 6),
            "top": [
                {"token": task.piece(int(i)), "probability": round(float(p), 6)}
                for p, i in zip(best.values, best.indices, strict=True)
            ],
            "value": round(float(values[unit]), 5),
        }
        if every_unit:
            item["values"] = np.round(values.numpy(), 4).tolist()
        yield item


def score_text(task: LanguageModelTask, model: LanguageModel, text: str) -> dict[str, Any]:
    """``text`` scored by :meth:`rnnlab.tasks.LanguageModelTask.predict`: ``tokens``,
    ``log_probs`` (natural log, each given the text before it), ``loss``, ``bpc`` or
    ``perplexity``, ``count`` and the ``unknown`` tokens."""
    try:
        prepared = task.prepare([text], {})
    except PredictError as exc:
        raise LanguageInputError("text", str(exc)) from exc
    (out,) = task.predict(model, prepared)
    out["log_probs"] = np.round(np.asarray(out["log_probs"]), 6).tolist()
    out.pop("input", None)  # the caller has it; up to 100 kB not echoed back
    return {"figure": task.figure, **out}


def warm_up(model: LanguageModel) -> None:
    """One step, so the first request does not pay for building the compiled kernels."""
    with torch.no_grad():
        model(torch.zeros(1, 1, dtype=torch.long, device=model.decoder.weight.device))
