"""Fit a language model's width and dropout to its corpus and its time budget
(``model.autosize``, issue 24).

A time-budgeted language model reads ``rate x budget`` tokens, where ``rate`` (tokens per
second) falls as the model grows. On a large corpus that is less than one pass: every token is
new, and a small model that reads more text beats a large one that reads little (the ``charlm``
preset's 2 x 256 against the char-rnn peer's 2 x 512 on the IMDB reviews, RESULTS.md). On a
small corpus the same small model reads it many times over and starts to memorise it
(validation rises after a few passes), while a wider model with dropout would still have
learned from each pass. The rule below turns that into a choice made before training, from two
numbers: the training split's size N (tokens) and each candidate's measured rate on this host,
with this precision and batch shape.

The rule (its constants and the runs that set them are in RESULTS.md, "speed turned into
quality"):

* ``passes(H) = rate(H) * budget / N``: how often a model of width H would read the corpus.
* Keep the configured width H0 (``model.hidden_sizes``) while ``passes(H0) <= MAX_PASSES``: the
  corpus is large for the budget, so speed is what pays.
* Otherwise take the widest H of :data:`LADDER` (at least H0) with ``passes(H) >= MIN_PASSES``
  (H0 if none), and dropout :data:`DROPOUT` between layers when that width still reads the
  corpus more than :data:`DROPOUT_FROM_PASSES` times.

The rates come from a short probe (:func:`measure_rate`): a few training steps of each
candidate on random ids, a few seconds in all, not counted in the budget. They depend on the
host and its load, so two runs of one preset may choose differently; the choice, the rates and
the passes are kept in the run directory (``sizing.json``) and the resolved sizes in its
``config.json``, from which the run resumes and is read.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from rnnlab.config import Config

__all__ = ["LADDER", "Sizing", "choose", "measure_rate", "settle"]

LADDER = (256, 512, 1024)  # widths tried, per layer (384 trained unstably in bf16, see RESULTS.md)
MAX_PASSES = 2.0  # keep the configured width while it reads the corpus at most this often
MIN_PASSES = 1.0  # a wider model must still read the whole corpus at least once
DROPOUT = 0.25  # between layers, when the chosen width repeats the corpus
DROPOUT_FROM_PASSES = 1.0
PROBE_STEPS = 3  # timed steps per candidate, after one warm-up step

Rate = Callable[[int], float]  # width -> training tokens per second


@dataclass(frozen=True)
class Sizing:
    """What :func:`choose` decided and why (written to the run's ``sizing.json``)."""

    hidden: int
    dropout: float
    corpus_tokens: int
    budget_s: float
    rates: dict[int, float]  # width -> tokens/s measured
    reason: str

    @property
    def passes(self) -> dict[int, float]:
        """Width -> how often it would read the corpus: rate * budget / corpus_tokens."""
        return {w: r * self.budget_s / self.corpus_tokens for w, r in self.rates.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "hidden": self.hidden,
            "dropout": self.dropout,
            "corpus_tokens": self.corpus_tokens,
            "budget_s": self.budget_s,
            "tokens_per_second": {str(k): round(v, 1) for k, v in self.rates.items()},
            "passes": {str(k): round(v, 3) for k, v in self.passes.items()},
            "reason": self.reason,
            "rule": {
                "ladder": list(LADDER),
                "max_passes": MAX_PASSES,
                "min_passes": MIN_PASSES,
                "dropout": DROPOUT,
                "dropout_from_passes": DROPOUT_FROM_PASSES,
            },
        }


def choose(
    base: int, base_dropout: float, corpus_tokens: int, budget_s: float, rate: Rate
) -> Sizing:
    """Apply the rule of the module docstring. ``rate(H)`` is called for ``base`` first, then
    for wider candidates only when the base would read the corpus more than MAX_PASSES times,
    widest first, so the probe stops at the first width that qualifies."""
    if corpus_tokens < 1 or budget_s <= 0:
        raise ValueError(
            f"choose expected corpus_tokens >= 1 and budget_s > 0, got {corpus_tokens} and "
            f"{budget_s}"
        )
    rates: dict[int, float] = {}

    def passes_of(width: int) -> float:  # measured once per width
        rates[width] = rate(width)
        return rates[width] * budget_s / corpus_tokens

    passes = {base: passes_of(base)}
    if passes[base] <= MAX_PASSES:
        why = f"width {base} reads the corpus {passes[base]:.2f} times (<= {MAX_PASSES}): kept"
        return Sizing(base, base_dropout, corpus_tokens, budget_s, rates, why)
    hidden = base
    for width in sorted((w for w in LADDER if w > base), reverse=True):
        passes[width] = passes_of(width)
        if passes[width] >= MIN_PASSES:
            hidden = width
            break
    dropout = DROPOUT if passes[hidden] > DROPOUT_FROM_PASSES else base_dropout
    why = (
        f"width {base} would read the corpus {passes[base]:.2f} times (> {MAX_PASSES}); width "
        f"{hidden} reads it {passes[hidden]:.2f} times"
        + (
            f" (the widest with >= {MIN_PASSES})"
            if hidden != base
            else f" (none wider reaches {MIN_PASSES})"
        )
        + f", dropout {dropout}"
    )
    return Sizing(hidden, dropout, corpus_tokens, budget_s, rates, why)


def measure_rate(
    build: Callable[[], nn.Module],
    optimizer: Callable[[nn.Module], torch.optim.Optimizer],
    vocab: int,
    batch: int,
    bptt: int,
) -> float:
    """Training tokens per second of the model ``build()`` makes: one warm-up step (lazy kernel
    builds, allocator), then PROBE_STEPS timed steps of forward with the fused loss, backward and
    the step of ``optimizer(model)`` (the run's own, :func:`rnnlab.train.make_optimizer`) on
    random ids, as the trainer runs them. Leaves the global RNG as it found it."""
    rng = torch.get_rng_state()
    try:
        model = build()
        model.train()
        opt = optimizer(model)
        ids = torch.randint(0, vocab, (batch, bptt + 1))
        x, y = ids[:, :-1], ids[:, 1:]

        def step() -> None:
            loss, _ = model(x, targets=y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        step()
        start = time.perf_counter()
        for _ in range(PROBE_STEPS):
            step()
        return PROBE_STEPS * batch * bptt / (time.perf_counter() - start)
    finally:
        torch.set_rng_state(rng)


def settle(
    config: Config, corpus_tokens: int, rate_of: Callable[[Config], float]
) -> tuple[Config, Sizing]:
    """``config`` with ``model.hidden_sizes`` and ``model.dropout`` chosen by :func:`choose`
    (every layer the chosen width, and ``embedding_dim`` too when the decoder is tied to the
    embedding); ``rate_of(candidate_config)`` measures a candidate."""
    m = config.model
    layers = len(m.hidden_sizes)

    def sized(width: int, **more: Any) -> Config:
        # a tied decoder is the embedding: its width follows the layers'
        emb = width if m.tie_weights else m.embedding_dim
        return replace(
            config, model=replace(m, hidden_sizes=(width,) * layers, embedding_dim=emb, **more)
        )

    sizing = choose(
        m.hidden_sizes[0],
        m.dropout,
        corpus_tokens,
        config.train.time_limit,
        lambda width: rate_of(sized(width)),
    )
    return sized(sizing.hidden, dropout=sizing.dropout), sizing
