"""The sequence-to-sequence part of ``rnnlab serve`` (the ``translate`` page): a source in, its
n-best translations out, each with its log-probability and its attention matrix.

Decoding is the library's (:meth:`rnnlab.tasks.Seq2SeqTask.translate`, greedy or batched beam
search stepping the decoder's carried state); this module only checks the request and mounts
``POST /api/runs/{run}/translate``. The model is in eval mode and read-only, so requests need no
lock (:mod:`rnnlab.serve.models`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from rnnlab.nn.beam import MAX_BEAM
from rnnlab.serve.models import InputError, Lookup, ServedRun, check_analysis
from rnnlab.serve.schemas import check_text
from rnnlab.tasks import PredictError

__all__ = ["TranslateRequest", "TranslationRun"]


class TranslateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(..., description="the source: a word or a sentence")
    beam: int = Field(5, ge=1, le=MAX_BEAM, description="beam width (1: greedy)")
    n_best: int = Field(3, ge=1, le=MAX_BEAM, description="outputs to return, at most beam")
    length_penalty: float = Field(0.0, ge=0.0, le=10.0, description="Wu et al. 2016's alpha")


class TranslationRun(ServedRun):
    """An encoder-decoder with attention: ``translate``."""

    title = "sequence-to-sequence model"
    page = "translate"
    analyses = ("translate",)

    def details(self) -> dict[str, Any]:
        vocab, m = self.artifacts["vocab.json"], self.config.model
        return {
            "classes": [],
            "source_level": vocab["source"]["level"],
            "target_level": vocab["target"]["level"],
            "source_vocab": len(vocab["source"]["tokens"]),
            "target_vocab": len(vocab["target"]["tokens"]),
            "attention": m.attention,
            "decoder_cell": m.decoder_cell,
            "max_beam": MAX_BEAM,
        }

    def translate(
        self, text: str, beam: int = 5, n_best: int = 3, length_penalty: float = 0.0
    ) -> dict[str, Any]:
        """``{"source": tokens, "unknown": tokens read as <unk>, "outputs": [{"text", "tokens",
        "log_prob", "ranking", "finished", "attention": (len(tokens) + 1) x S}]}``, best
        first; InputError naming the field for a bad source or n_best above beam."""
        if n_best > beam:
            raise InputError("n_best", f"expected at most beam={beam}, got {n_best}")
        try:
            (out,) = self.task.translate(
                self.model, [text], beam, n_best, None, length_penalty, attention=True
            )
        except PredictError as exc:
            raise InputError("text", str(exc).removeprefix("source 1: ")) from exc
        for o in out["outputs"]:
            o["log_prob"] = round(o["log_prob"], 5)
            o["ranking"] = round(o["ranking"], 5)
            o["attention"] = np.round(np.asarray(o["attention"]), 4).tolist()
        return {"source": out["tokens"], "unknown": out["unknown"], "outputs": out["outputs"]}

    def warm_up(self) -> None:
        vocab = self.artifacts["vocab.json"]["source"]["tokens"]
        sample = vocab[4] if len(vocab) > 4 else "a"
        self.task.translate(self.model, [sample], beam=2, n_best=1, max_length=4)

    @classmethod
    def add_routes(cls, app: Any, lookup: Lookup, work: Callable[..., Any]) -> None:
        @app.post("/api/runs/{run}/translate", tags=["api"])
        async def translate(run: str, body: TranslateRequest) -> dict[str, Any]:
            """The ``n_best`` outputs of beam search (``beam`` 1: greedy) for ``text``, best
            first, each with its log-probability and attention matrix (one row per output
            token and ``</s>``, one column per source token). Other kinds of run answer 400."""
            served = lookup(run)
            check_text("text", body.text)
            check_analysis(served, "translate")
            return await work(
                served.translate, body.text, body.beam, body.n_best, body.length_penalty
            )
