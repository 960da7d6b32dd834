"""The cloze probe of ``python -m projects.context``: "I grew up in France ... I speak fluent ___".

Shape legend: N examples (spans x pairs), T tokens, C candidate languages, V vocabulary size.

Each example is ``<eos>`` (the start of a review), a template's first part naming a country
("i grew up in france ."), ``n`` words of real review text (the distractor), a full stop when
``n > 0``, and the template's second part ("i speak fluent"); the model's next-token
log-probabilities of the candidate languages are compared at the blank. An example counts as
right when the country's own language ranks first among the candidates.

* Pairs are kept only when both words are in the vocabulary, and only one pair per language, so
  the candidates are exactly the kept pairs' languages.
* Distractor spans are drawn once from the test reviews (the ``<eos>`` between reviews removed,
  spans that name any candidate country or language redrawn), and each distance ``n`` uses the
  first ``n`` words of the same spans. Every country is paired with every span, so a model that
  ignores the country ranks the same language first for all of them and scores exactly
  ``1 / C`` (``chance``): the accuracy above chance is the model's use of the country. The mean
  probability of the right language renormalised over the candidates (``probability``) has the
  same chance level and is less noisy than the accuracy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from rnnlab.data import Vocabulary

__all__ = ["DEFAULT_PAIRS", "DEFAULT_TEMPLATES", "ClozeProbe"]

DEFAULT_PAIRS: tuple[tuple[str, str], ...] = (
    ("france", "french"),
    ("italy", "italian"),
    ("germany", "german"),
    ("spain", "spanish"),
    ("japan", "japanese"),
    ("china", "chinese"),
    ("russia", "russian"),
    ("england", "english"),
    ("india", "hindi"),
    ("sweden", "swedish"),
    ("greece", "greek"),
    ("korea", "korean"),
    ("turkey", "turkish"),
    ("holland", "dutch"),
    ("denmark", "danish"),
    ("norway", "norwegian"),
    ("vietnam", "vietnamese"),
    ("thailand", "thai"),
)
# (before the distractor, after it); {country} is filled in. The first is the tutorial's; IMDB
# has no "fluent" in a 10,000-word vocabulary, so it reads as <unk> there, and the second
# template is one a movie review would contain.
DEFAULT_TEMPLATES: tuple[tuple[str, str], ...] = (
    ("i grew up in {country} .", "i speak fluent"),
    ("the film was made in {country} .", "the dialogue is in"),
)
MAX_DRAWS = 10_000  # span draws before giving up (a test split that names countries everywhere)


def _ids(vocab: Vocabulary, text: str) -> list[int]:
    return [int(i) for i in vocab.lookup(vocab.tokenize(text, end_lines=False))]


@dataclass(frozen=True)
class ClozeProbe:
    """The examples of the probe, built once (:meth:`build`) and run on each model
    (:meth:`evaluate`)."""

    pairs: tuple[tuple[str, str], ...]  # kept (country, language) pairs
    candidates: Tensor  # (C,) ids of the languages, in pair order
    examples: dict[int, list[Tensor]]  # distance n -> per template (N, T) ids, N = spans x C
    answers: Tensor  # (N,) index of the right language among the candidates
    skipped: tuple[tuple[str, str], ...]  # pairs dropped (a word outside the vocabulary)
    templates: tuple[tuple[str, str], ...]
    spans: int

    @property
    def chance(self) -> float:
        return 1.0 / len(self.pairs)

    @classmethod
    def build(
        cls,
        vocab: Vocabulary,
        test_ids: np.ndarray,
        pairs: Sequence[tuple[str, str]],
        templates: Sequence[tuple[str, str]],
        distances: Sequence[int],
        spans: int,
        seed: int,
    ) -> ClozeProbe:
        """Keep the usable pairs, draw ``spans`` distractor spans of ``max(distances)`` words
        from ``test_ids`` with ``seed``, and lay out every example (see the module docstring).

        Raises:
            ValueError: fewer than two usable pairs, or no span free of the candidate words.
        """
        kept, skipped, languages = [], [], set()
        for country, language in pairs:
            if country in vocab and language in vocab and language not in languages:
                kept.append((country, language))
                languages.add(language)
            else:
                skipped.append((country, language))
        if len(kept) < 2:
            raise ValueError(
                "cloze probe expected at least 2 (country, language) pairs with both words in "
                f"the vocabulary, got {len(kept)} of {len(pairs)} (a larger max_vocab?)"
            )
        words = {w for pair in kept for w in pair}
        banned = np.asarray(vocab.lookup(sorted(words)))
        text = np.asarray(test_ids, dtype=np.int64)
        if vocab.eos_id is not None:
            text = text[text != vocab.eos_id]  # reviews run on into each other
        length = max(distances)
        drawn = cls._draw_spans(text, length, spans, banned, seed)
        C = len(kept)
        candidates = torch.tensor([int(vocab.lookup([lang])[0]) for _, lang in kept])  # (C,)
        bos = [vocab.eos_id] if vocab.eos_id is not None else []
        examples: dict[int, list[Tensor]] = {}
        for n in sorted(set(distances)):
            per_template = []
            for before, after in templates:
                tail = _ids(vocab, (". " if n else "") + after)
                rows = [
                    bos + _ids(vocab, before.format(country=country)) + span[:n] + tail
                    for span in drawn
                    for country, _ in kept
                ]
                per_template.append(torch.tensor(rows, dtype=torch.long))  # (N, T)
            examples[n] = per_template
        answers = torch.arange(C).repeat(len(drawn))  # (N,): span-major, country-minor
        return cls(
            tuple(kept), candidates, examples, answers, tuple(skipped), tuple(templates), spans
        )

    @staticmethod
    def _draw_spans(
        text: np.ndarray, length: int, count: int, banned: np.ndarray, seed: int
    ) -> list[list[int]]:
        """``count`` spans of ``length`` ids from ``text`` containing none of ``banned``."""
        if length == 0:
            return [[] for _ in range(count)]
        if len(text) <= length:
            raise ValueError(
                f"cloze probe expected a test split longer than {length} words, got {len(text)}"
            )
        rng = np.random.default_rng(seed)
        spans: list[list[int]] = []
        for _ in range(MAX_DRAWS):
            start = int(rng.integers(0, len(text) - length))
            span = text[start : start + length]
            if not np.isin(span, banned).any():
                spans.append([int(i) for i in span])
                if len(spans) == count:
                    return spans
        raise ValueError(
            f"cloze probe expected {count} test spans of {length} words free of the candidate "
            f"words, found {len(spans)} in {MAX_DRAWS} draws"
        )

    @torch.no_grad()
    def evaluate(
        self, next_logits: Callable[[Tensor], Tensor], chunk: int = 256
    ) -> dict[str, dict[str, float]]:
        """Per distance n (a string key, for JSON), averaged over every example of every
        template: ``accuracy`` (the right language ranked first among the candidates),
        ``probability`` (its probability renormalised over the candidates; chance 1/C), and
        ``gain``: how much more log-probability (nats) a language gets after its own country
        than after the other countries, with the same distractor (0 for a model that ignores
        the country; it shows a country's pull before it is strong enough to win the ranking).

        ``next_logits`` maps (N, T) ids to the (N, V) logits of the token after each row, run
        from the zero state (e.g. :func:`projects.context.measure.final_logits` of a
        model in eval mode)."""
        C = len(self.pairs)
        out = {}
        for n, per_template in self.examples.items():
            accuracy, probability, gain = [], [], []
            for ids in per_template:
                logp = torch.cat(
                    [
                        torch.log_softmax(next_logits(ids[r0 : r0 + chunk]).float(), dim=-1)
                        for r0 in range(0, len(ids), chunk)
                    ]
                )[:, self.candidates]  # (N, C): log p of each candidate language
                accuracy.append((logp.argmax(-1) == self.answers).float().mean())
                share = torch.softmax(logp, dim=-1)  # over the candidates only
                probability.append(share.gather(1, self.answers[:, None]).mean())
                grid = logp.reshape(-1, C, C)  # (spans, country, language)
                own = grid.diagonal(dim1=1, dim2=2)  # (spans, C): language after its country
                others = (grid.sum(dim=1) - own) / (C - 1)  # after the other countries
                gain.append((own - others).mean())
            out[str(n)] = {
                "accuracy": torch.stack(accuracy).mean().item(),
                "probability": torch.stack(probability).mean().item(),
                "gain": torch.stack(gain).mean().item(),
            }
        return out

    def describe(self) -> dict[str, Any]:
        """JSON-ready: pairs, skipped pairs, templates, spans, chance, one example per n."""
        return {
            "pairs": [list(p) for p in self.pairs],
            "skipped_pairs": [list(p) for p in self.skipped],
            "templates": [list(t) for t in self.templates],
            "spans": self.spans,
            "examples_per_distance": len(self.answers) * len(self.templates),
            "chance": self.chance,
        }
