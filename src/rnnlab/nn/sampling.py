"""Drawing the next token, and the shape of one decoding step.

Shape legend: V vocabulary, L layers, H hidden units.

:func:`sample_next` is the one place a token is drawn (temperature, top-k, nucleus) and
:func:`check_sampling` the one validator of its settings. :class:`GenerationStep` is the step
shape every decoder yields (:meth:`rnnlab.LanguageModel.steps`; the sequence-to-sequence and
CTC decoders follow it): the token, its score, the carried state after reading it and, when
asked, the step's gates.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

__all__ = ["GenerationStep", "check_sampling", "sample_next"]


class GenerationStep(NamedTuple):
    """One step of :meth:`rnnlab.LanguageModel.steps`.

    Attributes:
        token: the id drawn (or read, when forced).
        probability: the model's probability of ``token`` at temperature 1, before any top-k or
            top-p filtering, given everything read before it.
        top: the ``top`` likeliest ``(id, probability)`` of that same distribution, most likely
            first (``()`` when ``top=0``).
        state: the carried state after reading ``token``: (L, 1, H), an ``LSTMState`` (h, c) of
            two such for an LSTM.
        gates: with ``record_gates``, per layer a dict name -> (H,) of this step (LSTM: i, f,
            g, o, c, h; GRU: r, z, n, h; RNN: h); otherwise None.
    """

    token: int
    probability: float
    top: tuple[tuple[int, float], ...]
    state: Any  # rnnlab.nn.language_model.State
    gates: tuple[dict[str, Tensor], ...] | None


def check_sampling(temperature: float, top_k: int | None, top_p: float | None) -> None:
    """Raise ValueError, saying what was expected, for sampling settings that cannot work."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise ValueError(f"expected a number temperature, got {temperature!r}")
    if not temperature > 0 or temperature == float("inf"):
        raise ValueError(f"expected temperature > 0 (finite), got {temperature}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"expected top_k >= 1 (an int) or None, got {top_k!r}")
    if top_p is not None and (
        isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1
    ):
        raise ValueError(f"expected top_p in (0, 1] or None, got {top_p!r}")


def sample_next(
    logits: Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> int:
    """Draw one token id from (V,) ``logits``: divided by ``temperature``, then kept to the
    ``top_k`` largest, then to the nucleus of mass ``top_p`` (Holtzman et al. 2020); see
    :meth:`rnnlab.LanguageModel.steps`."""
    wide = logits.to(torch.promote_types(logits.dtype, torch.float32))  # (V,)
    logits = wide / temperature  # (V,)
    if torch.isinf(logits.max()):  # a tiny temperature overflowed the largest logit:
        logits = (wide.double() - wide.max()) / temperature  # the same distribution, max 0
    if top_k is not None and top_k < logits.shape[0]:
        kth = torch.topk(logits, top_k).values[-1]  # the k-th largest logit
        logits = logits.masked_fill(logits < kth, float("-inf"))  # (V,)
    if top_p is not None and top_p < 1:
        probs, order = torch.sort(torch.softmax(logits, dim=-1), descending=True)  # (V,) each
        before = torch.cumsum(probs, dim=0) - probs  # mass of the more likely tokens
        drop = order[before >= top_p]  # the first token always stays (before = 0)
        logits = logits.index_fill(0, drop, float("-inf"))  # (V,)
    probs = torch.softmax(logits, dim=-1)  # (V,)
    return int(torch.multinomial(probs, 1, generator=generator))
