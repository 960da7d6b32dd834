"""The language models' part of ``rnnlab serve`` (the ``lm`` page): generation streamed token by
token as server-sent events, and scoring a text.

Generation is the library's: the run's task builds the prompt
(:meth:`rnnlab.tasks.LanguageModelTask.prompt_ids`) and :meth:`rnnlab.LanguageModel.steps`,
the one decoding loop, reads it once and then draws and reads each token with the carried state,
giving per step the token's probability, the :data:`TOP` likeliest alternatives and the state
after it; this module only turns a step into the page's dict. Each ``next()`` of a stream runs
in a worker thread with its own ``torch.no_grad`` inside the model (grad mode is per thread), so
several streams interleave on one model; no lock is needed (:mod:`rnnlab.serve.models`).

Shape legend: L layers, H hidden units, V vocabulary.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import numpy as np
import torch
from fastapi import HTTPException
from fastapi.responses import StreamingResponse

from rnnlab.nn.language_model import LanguageModel, State, check_sampling
from rnnlab.serve.models import InputError, Lookup, ServedRun, check_analysis
from rnnlab.serve.schemas import GenerateRequest, ScoreRequest, check_text
from rnnlab.tasks import LanguageModelTask, PredictError

__all__ = ["TOP", "LanguageRun", "check_generation", "generate_tokens", "score_text"]

_END = object()


TOP = 5  # alternatives shown per generated token


def has_cell_state(model: LanguageModel) -> bool:
    """Whether the model's cells carry a cell state ``c`` of (L, B, H) (LSTM, sLSTM)."""
    zeros = model.init_state(1)
    return isinstance(zeros, tuple) and "c" in zeros._fields and zeros.c.dim() == 3


def _layer_values(state: State, layer: int, which: str) -> torch.Tensor:
    """(H,): ``which`` ("c" or "h") of ``layer`` in a batch-of-one state (L, 1, H)."""
    if not isinstance(state, tuple):
        return state[layer, 0]  # RNN, GRU and the min cells carry h only
    return getattr(state, which)[layer, 0]  # a named tuple: LSTMState, SLSTMState, ...


def check_generation(
    model: LanguageModel,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    layer: int,
    unit: int,
    state: str,
) -> None:
    """Raise :class:`InputError` naming the field for settings that cannot work (sampling by
    :func:`~rnnlab.nn.sampling.check_sampling`, the CLI's rule: ``top_k`` None or >= 1)."""
    try:
        check_sampling(temperature, top_k, top_p)
    except ValueError as exc:
        field = next(f for f in ("temperature", "top_k", "top_p") if f in str(exc))
        raise InputError(field, str(exc)) from exc
    if not 0 <= layer < model.num_layers:
        raise InputError("layer", f"expected 0..{model.num_layers - 1}, got {layer}")
    if not 0 <= unit < model.hidden_size:
        raise InputError("unit", f"expected 0..{model.hidden_size - 1}, got {unit}")
    if state == "c" and not has_cell_state(model):
        raise InputError(
            "state", f"expected 'h' (a {model.cell.upper()} has no cell state c), got 'c'"
        )


def generate_tokens(
    task: LanguageModelTask,
    model: LanguageModel,
    ids: list[int],
    max_tokens: int,
    temperature: float,
    top_k: int | None,
    layer: int,
    unit: int,
    state: str,
    seed: int | None,
    every_unit: bool = False,
    top_p: float | None = None,
) -> Iterator[dict[str, Any]]:
    """One dict per drawn token: ``token`` (its text, see
    :meth:`~rnnlab.tasks.LanguageModelTask.piece`), ``id``, ``probability`` (the model's, at
    temperature 1), ``top`` (the :data:`TOP` likeliest ``{"token", "probability"}``) and
    ``value`` (``state`` of ``unit`` in ``layer`` after reading the token) and, with
    ``every_unit``, ``values`` (H,): every unit's, so a page can recolour by another unit
    without generating again. Arguments are checked by the caller (:func:`check_generation`,
    :meth:`~rnnlab.tasks.LanguageModelTask.prompt_ids`)."""
    start = task.start_state(model)  # a new document, as training saw one begin
    steps = model.steps(ids, max_tokens, temperature, top_k, top_p, seed, top=TOP, state=start)
    for step in steps:
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


def score_text(task: LanguageModelTask, model: LanguageModel, text: str) -> dict[str, Any]:
    """``text`` scored by :meth:`rnnlab.tasks.LanguageModelTask.predict`: ``tokens``,
    ``log_probs`` (natural log, each given the text before it), ``loss``, ``bpc`` or
    ``perplexity``, ``count`` and the ``unknown`` tokens."""
    try:
        prepared = task.prepare([text], {})
    except PredictError as exc:
        raise InputError("text", str(exc)) from exc
    (out,) = task.predict(model, prepared)
    out["log_probs"] = np.round(np.asarray(out["log_probs"]), 6).tolist()
    out.pop("input", None)  # the caller has it; up to 100 kB not echoed back
    return {"figure": task.figure, **out}


def warm_up(model: LanguageModel) -> None:
    """One step, so the first request does not pay for building the compiled kernels."""
    with torch.no_grad():
        model(torch.zeros(1, 1, dtype=torch.long, device=model.decoder.weight.device))


class LanguageRun(ServedRun):
    """A character or word language model: ``generate`` and ``score``."""

    title = "language model"
    page = "lm"
    analyses = ("generate", "score")

    def details(self) -> dict[str, Any]:
        vocab = self.artifacts["vocab.json"]
        return {
            "classes": [],
            "level": vocab.level,
            "vocab_size": len(vocab),
            "figure": self.task.figure,
        }

    def generate(
        self,
        prompt: str,
        max_tokens: int,
        temperature: float,
        top_k: int | None,
        unit: int,
        *,
        top_p: float | None = None,
        layer: int = 0,
        state: str | None = None,
        seed: int | None = None,
        every_unit: bool = False,
    ) -> Iterator[dict[str, Any]]:
        """An iterator of one dict per generated token ``{"token", "id", "probability", "top":
        [{"token", "probability"}] (the 5 likeliest), "value": the ``state`` ("c", the default
        for LSTMs, or "h") of ``unit`` in ``layer`` after it}``, stepping the carried state
        (never re-reading the prompt). ``top_k`` and ``top_p`` None sample from the whole
        vocabulary (``top_k`` 0 is refused, as the CLI refuses ``--top-k 0``); ``seed``
        makes the draw repeatable; ``every_unit`` adds ``values``, every unit's value of
        ``layer`` (H,). Everything is checked here, before the first token
        (:class:`InputError` naming the field)."""
        model = self.model
        state = state or ("c" if has_cell_state(model) else "h")
        check_generation(model, temperature, top_k, top_p, layer, unit, state)
        try:
            ids, _, _ = self.task.prompt_ids(prompt, "prompt")
        except PredictError as exc:
            raise InputError("prompt", str(exc)) from exc
        return generate_tokens(
            self.task,
            model,
            ids,
            max_tokens,
            temperature,
            top_k,
            layer,
            unit,
            state,
            seed,
            every_unit,
            top_p,
        )

    def score(self, text: str) -> dict[str, Any]:
        """``text``'s ``tokens`` and their natural-log probabilities (``log_probs``, each given
        the text before it and the start of a line), the mean ``loss``, ``bpc`` (characters) or
        ``perplexity`` (words) (``figure`` says which), ``count`` and the ``unknown`` tokens."""
        return score_text(self.task, self.model, text)

    def warm_up(self) -> None:
        warm_up(self.model)
        self.task.start_state(self.model)  # computed once, before requests share it

    @classmethod
    def add_routes(cls, app: Any, lookup: Lookup, work: Callable[..., Any]) -> None:
        @app.post("/api/runs/{run}/generate", tags=["api"])
        async def generate(run: str, body: GenerateRequest) -> StreamingResponse:
            """A stream of server-sent events, ``event: token`` with ``{"token", "id",
            "probability", "top", "value"}`` per generated token (``top``: the 5 likeliest
            tokens; ``value``: the chosen unit's c or h after it), then ``event: done``. Bad
            settings answer 4xx before the stream starts; other kinds of run answer 400."""
            served = lookup(run)
            check_text("prompt", body.prompt)  # a malformed body answers 4xx before the kind
            check_analysis(served, "generate")
            tokens = await work(
                served.generate,
                body.prompt,
                body.max_tokens,
                body.temperature,
                body.top_k,
                body.unit,
                top_p=body.top_p,
                layer=body.layer,
                state=body.state,
                seed=body.seed,
                every_unit=body.every_unit,
            )
            first = await work(next, tokens, _END)  # errors before the stream starts are 4xx

            async def events() -> AsyncIterator[str]:
                item, count = first, 0
                while item is not _END:
                    count += 1
                    yield f"event: token\ndata: {json.dumps(item)}\n\n"
                    try:
                        item = await work(next, tokens, _END)
                    except HTTPException as exc:
                        yield f"event: error\ndata: {json.dumps({'detail': exc.detail})}\n\n"
                        return
                yield f"event: done\ndata: {json.dumps({'tokens': count})}\n\n"

            return StreamingResponse(
                events(), media_type="text/event-stream", headers={"cache-control": "no-cache"}
            )

        @app.post("/api/runs/{run}/score", tags=["api"])
        async def score(run: str, body: ScoreRequest) -> dict[str, Any]:
            """Per-token log-probabilities of ``text``, the mean loss and bpc or perplexity
            (``figure`` says which). Other kinds of run answer 400."""
            served = lookup(run)
            check_text("text", body.text)
            check_analysis(served, "score")
            return await work(served.score, body.text)
