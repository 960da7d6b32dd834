"""Vocabularies of language models: characters or words, built from training text, kept as JSON.

Ids (the same for both levels):

* id 0 is ``<unk>``: every character or word outside the vocabulary encodes to it.
* word vocabularies have ``<eos>`` at id 1: the end of a line (of a review, for IMDB), as in
  PyTorch's ``word_language_model`` example. Character vocabularies have no ``<eos>``: the
  newline character plays its part.
* then the kept tokens, most frequent first, ties broken by the token's text, so a vocabulary
  depends only on the training counts.

Tokenisers (named in the JSON, so a saved vocabulary encodes new text the way it was built):

* ``"chars"``: every Unicode character is a token (case, spaces and newlines kept).
* ``"whitespace"``: words are split on whitespace, nothing else changes (PyTorch's example;
  right for PTB and WikiText, which come tokenised).
* ``"imdb"``: :func:`rnnlab.data.text.tokenize`: ``<br />`` becomes a space, text is lower-cased,
  punctuation split off (the tokeniser of the IMDB classifier).

For word tokenisers, text becomes tokens line by line, and every line that a newline ends gets an
``<eos>`` (:meth:`Vocabulary.tokenize`).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from rnnlab.data.errors import DataError
from rnnlab.data.text import tokenize as imdb_tokenize
from rnnlab.files import atomic_output

UNK = "<unk>"
EOS = "<eos>"
FORMAT = "rnnlab.vocabulary"
VERSION = 1
TOKENIZERS = ("chars", "whitespace", "imdb")
LEVELS = {"chars": "char", "whitespace": "word", "imdb": "word"}


class Encoded(NamedTuple):
    """Ids of some text, and what fell outside the vocabulary (so a caller can say so once)."""

    ids: np.ndarray  # int64 (N,)
    unknown: int  # how many tokens became <unk> (a literal "<unk>" in the text is not counted)
    unknown_tokens: tuple[str, ...]  # up to 10 distinct ones, in order of first appearance


@dataclass(frozen=True)
class Vocabulary:
    """Token <-> id tables of one language model; see the module docstring for the id layout.

    Build one with :meth:`build` (from training tokens) or :meth:`from_json`; ``tokens[i]`` is
    the token of id ``i``.
    """

    tokenizer: str
    tokens: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.tokenizer not in TOKENIZERS:
            raise DataError(
                f"vocabulary: expected tokenizer in {TOKENIZERS}, got {self.tokenizer!r}"
            )
        specials = self.specials
        if tuple(self.tokens[: len(specials)]) != specials:
            raise DataError(
                f"vocabulary: expected the tokens to start with {list(specials)}, "
                f"got {list(self.tokens[: len(specials)])}"
            )
        if len(set(self.tokens)) != len(self.tokens):
            raise DataError("vocabulary: expected distinct tokens, got duplicates")
        if self.level == "char" and any(len(t) != 1 for t in self.tokens[1:]):
            bad = next(t for t in self.tokens[1:] if len(t) != 1)
            raise DataError(f"character vocabulary: expected single characters, got {bad!r}")
        object.__setattr__(self, "_index", {t: i for i, t in enumerate(self.tokens)})

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        counts: Counter[str] | dict[str, int],
        tokenizer: str,
        max_size: int | None = None,
        min_count: int = 1,
    ) -> Vocabulary:
        """The vocabulary of the tokens counted in training text.

        Args:
            counts: ``{token: occurrences}`` over the training split; specials in it are ignored.
            tokenizer: ``"chars"``, ``"whitespace"`` or ``"imdb"``.
            max_size: at most this many ids in all, specials included (``max_size=10000`` on
                PTB gives its 10,000-word vocabulary); None keeps every token.
            min_count: keep only tokens seen at least this often.
        """
        if tokenizer not in TOKENIZERS:
            raise ValueError(
                f"Vocabulary.build expected tokenizer in {TOKENIZERS}, got {tokenizer!r}"
            )
        specials = (UNK, EOS) if LEVELS[tokenizer] == "word" else (UNK,)
        if max_size is not None and max_size <= len(specials):
            raise ValueError(
                f"Vocabulary.build expected max_size > {len(specials)} (its specials), "
                f"got {max_size}"
            )
        kept = sorted(
            (t for t, n in counts.items() if n >= min_count and t not in specials),
            key=lambda t: (-counts[t], t),
        )
        if max_size is not None:
            kept = kept[: max_size - len(specials)]
        return cls(tokenizer, specials + tuple(kept))

    # -- properties -----------------------------------------------------------------------------
    @property
    def level(self) -> str:
        """``"char"`` or ``"word"``."""
        return LEVELS[self.tokenizer]

    @property
    def specials(self) -> tuple[str, ...]:
        return (UNK, EOS) if self.level == "word" else (UNK,)

    @property
    def unk_id(self) -> int:
        return 0

    @property
    def eos_id(self) -> int | None:
        """Id of ``<eos>`` (word level), None at character level."""
        return 1 if self.level == "word" else None

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: str) -> bool:
        return token in self._index  # type: ignore[attr-defined]

    # -- text <-> tokens <-> ids ----------------------------------------------------------------
    def tokenize(self, text: str, end_lines: bool = True) -> list[str]:
        """``text`` as tokens by this vocabulary's tokenizer; see :func:`tokenize_text`."""
        return tokenize_text(text, self.tokenizer, end_lines)

    def lookup(self, tokens: Sequence[str]) -> np.ndarray:
        """int64 (len(tokens),): the id of each token, 0 (``<unk>``) for those not in here."""
        index: dict[str, int] = self._index  # type: ignore[attr-defined]
        return np.fromiter((index.get(t, 0) for t in tokens), np.int64, len(tokens))

    def encode(self, tokens: Iterable[str]) -> Encoded:
        """Ids of ``tokens``; tokens outside the vocabulary become ``<unk>`` and are counted."""
        index: dict[str, int] = self._index  # type: ignore[attr-defined]
        ids, unknown, seen = [], 0, []
        for token in tokens:
            i = index.get(token)
            if i is None:
                unknown += 1
                if len(seen) < 10 and token not in seen:
                    seen.append(token)
                i = 0
            ids.append(i)
        return Encoded(np.asarray(ids, dtype=np.int64), unknown, tuple(seen))

    def encode_text(self, text: str, end_lines: bool = False) -> Encoded:
        """``encode(tokenize(text, end_lines))``: a prompt or a text to score."""
        return self.encode(self.tokenize(text, end_lines))

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``: characters joined; words joined by spaces, ``<eos>`` as a newline."""
        try:
            tokens = [self.tokens[int(i)] for i in ids]
        except IndexError as exc:
            raise ValueError(f"decode expected ids in [0, {len(self)}), got {exc}") from exc
        if self.level == "char":
            return "".join(tokens)
        lines = " ".join(tokens).split(EOS)  # "a b <eos> c" -> ["a b ", " c"]
        return "\n".join(line.strip(" ") for line in lines)

    # -- checks and storage ---------------------------------------------------------------------
    def check_size(self, expected: int, what: str = "the model") -> None:
        """Raise :class:`DataError` unless this vocabulary has ``expected`` ids (those of
        ``what``, e.g. a checkpoint's embedding)."""
        if len(self) != expected:
            raise DataError(
                f"vocabulary: expected {expected} tokens (the size of {what}), got {len(self)} "
                f"({self.level} vocabulary, tokenizer {self.tokenizer!r})"
            )

    def to_json(self) -> str:
        """The vocabulary as a JSON document (format, version, level, tokenizer, tokens)."""
        doc = {
            "format": FORMAT,
            "version": VERSION,
            "level": self.level,
            "tokenizer": self.tokenizer,
            "size": len(self),
            "tokens": list(self.tokens),
        }
        return json.dumps(doc, ensure_ascii=False, indent=1)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_json` to ``path`` atomically (a reader never sees half a file),
        creating its folder if needed."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(path) as handle:
            handle.write(self.to_json().encode("utf-8") + b"\n")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Vocabulary:
        """The vocabulary saved at ``path``; :class:`DataError` naming it if it is not one."""
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise DataError(f"{path}: expected a vocabulary JSON file, got {exc}") from exc
        return cls.from_json(data, source=str(path))

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "vocabulary JSON") -> Vocabulary:
        """The vocabulary written by :meth:`to_json`; :class:`DataError` naming ``source`` for
        anything else (not JSON, another format or version, a size that does not match)."""
        try:
            doc = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(
                f"{source}: expected a JSON vocabulary, got invalid JSON ({exc})"
            ) from exc
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
            raise DataError(f"{source}: expected format {FORMAT!r}, got {got!r}")
        if doc.get("version") != VERSION:
            raise DataError(f"{source}: expected version {VERSION}, got {doc.get('version')!r}")
        tokens = doc.get("tokens")
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise DataError(f"{source}: expected 'tokens' to be a list of strings")
        if doc.get("size") != len(tokens):
            raise DataError(
                f"{source}: expected {doc.get('size')!r} tokens (its 'size'), got {len(tokens)}"
            )
        vocab = cls(str(doc.get("tokenizer")), tuple(tokens))
        if doc.get("level") != vocab.level:
            raise DataError(f"{source}: expected level {vocab.level!r}, got {doc.get('level')!r}")
        return vocab


def tokenize_text(text: str, tokenizer: str, end_lines: bool = True) -> list[str]:
    """``text`` as tokens. ``"chars"``: its characters. Word tokenizers: the words of each line
    (lines end at ``"\\n"``), each line that a newline ends followed by ``<eos>``; with
    ``end_lines`` a last line without a newline gets one too, as every line of a corpus file
    does in PyTorch's example (a prompt passes ``end_lines=False``). An empty last piece (text
    ending with a newline) adds nothing.

    >>> tokenize_text("the sky\\nis blue", "whitespace")
    ['the', 'sky', '<eos>', 'is', 'blue', '<eos>']
    """
    if tokenizer not in TOKENIZERS:
        raise ValueError(f"tokenize_text expected tokenizer in {TOKENIZERS}, got {tokenizer!r}")
    if tokenizer == "chars":
        return list(text)
    split = str.split if tokenizer == "whitespace" else imdb_tokenize
    lines = text.split("\n")
    out: list[str] = []
    for k, line in enumerate(lines):
        out += split(line)
        if k < len(lines) - 1 or (end_lines and line):
            out.append(EOS)
    return out
