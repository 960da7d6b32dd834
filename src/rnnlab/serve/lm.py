"""The language models' part of ``rnnlab serve`` (the ``lm`` page): generation streamed token by
token as server-sent events, and scoring a text. The steps themselves are in
:mod:`rnnlab.serve.language`.

Shape legend: L layers, H hidden units, V vocabulary.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from fastapi import HTTPException
from fastapi.responses import StreamingResponse

from rnnlab.serve import language
from rnnlab.serve.models import InputError, Lookup, ServedRun, check_analysis
from rnnlab.serve.schemas import GenerateRequest, ScoreRequest, check_text

__all__ = ["LanguageRun"]

_END = object()


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
        top_k: int,
        unit: int,
        *,
        layer: int = 0,
        state: str | None = None,
        seed: int | None = None,
        every_unit: bool = False,
    ) -> Iterator[dict[str, Any]]:
        """An iterator of one dict per generated token ``{"token", "id", "probability", "top":
        [{"token", "probability"}] (the 5 likeliest), "value": the ``state`` ("c", the default
        for LSTMs, or "h") of ``unit`` in ``layer`` after it}``, stepping the carried state
        (never re-reading the prompt). ``top_k`` 0 samples from the whole vocabulary; ``seed``
        makes the draw repeatable; ``every_unit`` adds ``values``, every unit's value of
        ``layer`` (H,). Everything is checked here, before the first token
        (:class:`InputError` naming the field)."""
        model = self.model
        state = state or ("c" if model.cell == "lstm" else "h")
        try:
            language.check_generation(model, temperature, top_k, layer, unit, state)
            ids = language.prompt_ids(self.task, prompt)
        except language.LanguageInputError as exc:
            raise InputError(exc.field, str(exc)) from exc
        return language.generate_tokens(
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
        )

    def score(self, text: str) -> dict[str, Any]:
        """``text``'s ``tokens`` and their natural-log probabilities (``log_probs``, each given
        the text before it and the start of a line), the mean ``loss``, ``bpc`` (characters) or
        ``perplexity`` (words) (``figure`` says which), ``count`` and the ``unknown`` tokens."""
        try:
            return language.score_text(self.task, self.model, text)
        except language.LanguageInputError as exc:
            raise InputError(exc.field, str(exc)) from exc

    def warm_up(self) -> None:
        language.warm_up(self.model)

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
