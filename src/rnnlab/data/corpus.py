"""Text corpora for language models: train / valid / test token streams and their vocabulary.

Sources (:func:`load_corpus`):

* ``"imdb"``, the Large Movie Review Dataset (Maas et al. 2011) read from its archive with
  :func:`rnnlab.data.imdb_archive.read_reviews` (``sample=True``: the sample shipped in the
  package, which has no unlabelled reviews). Training text is the train and unsup reviews
  (75,000; the sample's 2,500 train reviews), in an order shuffled with seed
  :data:`IMDB_SPLIT_SEED`. The 25,000 test reviews are permuted with that seed too: the first
  half (12,500) is the validation split, the second half the test split. Each review is one
  line: at character level its ``<br />`` tags (with the spaces around them) become one space,
  case is kept and a newline ends the review; at word level it is tokenised by
  :func:`rnnlab.data.text.tokenize` (lower-cased, punctuation split off) and ends with ``<eos>``.
* A folder with ``train.txt``, ``valid.txt`` and ``test.txt`` (the layout of PyTorch's
  ``word_language_model`` example; ``wiki.{train,valid,test}.tokens`` of WikiText and
  ``ptb.{train,valid,test}.txt`` of PTB are recognised too): its own splits. Words are split on
  whitespace and every line ends with ``<eos>``, as in that example; characters are the text.
* Any other UTF-8 text file (``.gz`` compressed or not) or folder of such files (all files below
  it that are not hidden, in sorted path order, each ending with a newline): one stream split
  contiguously, the first 90% of its tokens for training, the next 5% for validation, the last
  5% for test (:data:`SPLIT_FRACTIONS`).

The vocabulary is built from the training split only (:class:`rnnlab.data.vocab.Vocabulary`),
unless one is given (a run's saved vocabulary); validation and test tokens outside it become
``<unk>`` and are counted in :attr:`Corpus.unknown`.
"""

from __future__ import annotations

import gzip
import os
import re
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rnnlab.data.errors import DataError
from rnnlab.data.imdb import _archive
from rnnlab.data.imdb_archive import read_reviews
from rnnlab.data.vocab import EOS, LEVELS, UNK, Vocabulary, tokenize_text

PathLike = str | os.PathLike[str]
SPLITS = ("train", "valid", "test")
SPLIT_FRACTIONS = (0.90, 0.05, 0.05)
IMDB_SPLIT_SEED = 20111  # fixed: changing it changes every IMDB language-model result
LAYOUTS = (
    ("train.txt", "valid.txt", "test.txt"),
    ("wiki.train.tokens", "wiki.valid.tokens", "wiki.test.tokens"),
    ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"),
)
_BREAKS = re.compile(r"\s*(?:<br\s*/?\s*>\s*)+", re.IGNORECASE)


@dataclass(frozen=True)
class Corpus:
    """Three token streams and the vocabulary that encodes them.

    ``train``, ``valid`` and ``test`` are 1-d integer arrays of ids (uint8, int16 or int32,
    the smallest that holds the vocabulary: the IMDB streams run to 10^8 characters).
    ``unknown[split]`` counts the tokens of that split that became ``<unk>``.
    """

    vocab: Vocabulary
    train: np.ndarray  # (N_train,)
    valid: np.ndarray  # (N_valid,)
    test: np.ndarray  # (N_test,)
    unknown: dict[str, int]
    source: str  # what was read, for logs and run records

    def split(self, name: str) -> np.ndarray:
        """The stream of ``name``: "train", "valid" or "test"."""
        if name not in SPLITS:
            raise ValueError(f"Corpus.split expected one of {SPLITS}, got {name!r}")
        return getattr(self, name)


def load_corpus(
    source: PathLike,
    level: str = "char",
    *,
    vocab: Vocabulary | None = None,
    max_vocab: int | None = None,
    min_count: int = 1,
    data_dir: PathLike | None = None,
    sample: bool = False,
    download: bool = False,
) -> Corpus:
    """Read ``source`` as a language-model corpus; see the module docstring for the sources.

    Args:
        source: ``"imdb"`` (the string; write ``./imdb`` for a path of that name), or the path
            of a text file, ``.gz`` file or folder.
        level: ``"char"`` or ``"word"``.
        vocab: encode with this vocabulary instead of building one (its level must match).
        max_vocab: at most this many ids, specials included (None: every training token).
        min_count: keep only tokens seen this often in training.
        data_dir, sample, download: where the IMDB archive is, as :func:`rnnlab.data.load_imdb`.

    Raises:
        DataError: a missing, empty, binary or non-UTF-8 file, an empty folder, an incomplete
            ``train/valid/test`` layout, an empty split, or ``vocab`` of the other level.
    """
    if level not in ("char", "word"):
        raise ValueError(f"load_corpus expected level 'char' or 'word', got {level!r}")
    if vocab is not None and vocab.level != level:
        raise DataError(
            f"vocabulary: expected a {level} vocabulary for this corpus, got a {vocab.level} one"
        )
    if str(source) == "imdb":
        tokenizer = "chars" if level == "char" else "imdb"
        docs, name = _imdb_documents(level, data_dir, sample, download), "imdb"
        if sample:
            name = "imdb (sample)"
    else:
        tokenizer = "chars" if level == "char" else "whitespace"
        docs, name = _file_documents(Path(source)), str(source)
    if vocab is not None:
        tokenizer = vocab.tokenizer
    streams, names = _provisional(docs, tokenizer)
    if "all" in streams:
        streams = _split_contiguous(streams.pop("all"), name)
    for split in SPLITS:
        if len(streams[split]) == 0:
            raise DataError(f"{name}: expected some text in the {split} split, got none")
    if vocab is None:
        counts = np.bincount(streams["train"], minlength=len(names))
        vocab = Vocabulary.build(
            Counter({names[i]: int(counts[i]) for i in np.flatnonzero(counts)}),
            tokenizer,
            max_size=max_vocab,
            min_count=min_count,
        )
    dtype = np.uint8 if len(vocab) <= 256 else np.int16 if len(vocab) <= 32768 else np.int32
    table = vocab.lookup(names).astype(dtype)  # provisional id -> final id
    literal_unk = np.array([t == UNK for t in names], dtype=bool)
    ids, unknown = {}, {}
    for split in SPLITS:
        provisional = streams[split]
        ids[split] = table[provisional]
        unknown[split] = int(np.count_nonzero((ids[split] == 0) & ~literal_unk[provisional]))
    return Corpus(vocab, ids["train"], ids["valid"], ids["test"], unknown, name)


# -- reading ------------------------------------------------------------------------------------
def read_text(path: Path) -> str:
    """The UTF-8 text of ``path`` (gunzipped if it is gzip; a leading BOM dropped).

    Raises:
        DataError: missing, empty, binary (a NUL byte), not UTF-8, or a corrupt gzip stream.
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
    except FileNotFoundError as exc:
        raise DataError(f"{path}: expected a text file, got no such file") from exc
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: expected a readable text or gzip file, got {exc}") from exc
    if not data.strip():
        raise DataError(f"{path}: expected UTF-8 text, got an empty file")
    nul = data.find(b"\x00")
    if nul >= 0:
        raise DataError(f"{path}: expected UTF-8 text, got a NUL byte at offset {nul} (binary?)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}: expected UTF-8 text, got byte {data[exc.start]:#04x} at offset {exc.start} "
            "that is not UTF-8 (binary, or another encoding?)"
        ) from exc
    return text.removeprefix("\ufeff")


def _file_documents(path: Path) -> dict[str, list[str]]:
    """The texts of ``path`` by split (train/valid/test), or ``{"all": [...]}`` without a layout."""
    if not path.exists():
        raise DataError(f"{path}: expected a text file or folder, got nothing there")
    if path.is_file():
        return {"all": [read_text(path)]}
    for layout in LAYOUTS:
        present = [n for n in layout if (path / n).is_file()]
        if len(present) == len(layout):
            return {split: [read_text(path / n)] for split, n in zip(SPLITS, layout, strict=True)}
        if present:
            raise DataError(
                f"{path}: expected {', '.join(layout)} together, got only {', '.join(present)}"
            )
    files = sorted(
        p
        for p in path.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )
    if not files:
        raise DataError(f"{path}: expected text files in the folder, got none")
    return {"all": [read_text(p) for p in files]}


def _imdb_documents(
    level: str, data_dir: PathLike | None, sample: bool, download: bool
) -> dict[str, list[str]]:
    """The IMDB reviews, one string per review, split as the module docstring says."""
    archive, per_label = _archive(data_dir, sample, download, False, None)
    wanted = ("train", "test") if sample else ("train", "unsup", "test")
    reviews = read_reviews(archive, wanted, per_label)
    rng = np.random.default_rng(IMDB_SPLIT_SEED)
    train = [text for split in wanted[:-1] for text in reviews[split].texts]
    train = [train[i] for i in rng.permutation(len(train))]
    test = reviews["test"].texts
    order = rng.permutation(len(test))
    half = len(test) // 2
    split_docs = {
        "train": train,
        "valid": [test[i] for i in order[:half]],
        "test": [test[i] for i in order[half:]],
    }
    end = "\n" if level == "char" else ""  # word level: one line, so one <eos>
    return {k: [imdb_line(t) + end for t in v] for k, v in split_docs.items()}


def imdb_line(review: str) -> str:
    """A review as one line of text: ``<br />`` tags and newlines become single spaces.

    >>> imdb_line("Great.<br /><br />Really great.")
    'Great. Really great.'
    """
    return _BREAKS.sub(" ", review).replace("\n", " ").strip()


# -- tokens -> provisional ids ------------------------------------------------------------------
def _provisional(
    docs: dict[str, list[str]], tokenizer: str
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Every split as ids into a table of the distinct tokens seen (``names``), so each text is
    tokenised once; the vocabulary maps ``names`` to final ids later.

    Characters: the provisional id is the code point (``names`` covers 0..max). Words: ids in
    order of first appearance, every line of a document ending with ``<eos>`` (an IMDB review
    is one line).
    """
    if LEVELS[tokenizer] == "char":
        streams = {
            split: np.concatenate(
                [np.frombuffer(t.encode("utf-32-le"), dtype=np.uint32) for t in texts]
            )
            for split, texts in docs.items()
        }
        top = max(int(s.max()) for s in streams.values() if len(s))
        return streams, [chr(c) for c in range(top + 1)]
    index: dict[str, int] = {UNK: 0, EOS: 1}
    streams = {}
    for split, texts in docs.items():
        parts = []
        for text in texts:
            tokens = tokenize_text(text, tokenizer, end_lines=True)
            parts.append(np.fromiter((index.setdefault(t, len(index)) for t in tokens), np.int32))
        streams[split] = np.concatenate(parts)
    return streams, list(index)


def _split_contiguous(stream: np.ndarray, name: str) -> dict[str, np.ndarray]:
    """First 90% / next 5% / last 5% of one stream."""
    n = len(stream)
    a = int(n * SPLIT_FRACTIONS[0])
    b = a + int(n * SPLIT_FRACTIONS[1])
    if b >= n or a == 0 or b == a:
        raise DataError(
            f"{name}: expected enough text to split 90/5/5 into train, valid and test, "
            f"got {n} tokens"
        )
    return {"train": stream[:a], "valid": stream[a:b], "test": stream[b:]}


UNKNOWN_WARNING = 0.05  # above this fraction of <unk> training tokens, training warns


def unknown_warning(corpus: Corpus) -> str | None:
    """A warning when more than :data:`UNKNOWN_WARNING` of the training tokens are ``<unk>``
    (a ``data.max_vocab`` too small for the text: ``max_vocab=5`` on IMDB leaves 86%), else
    None."""
    total = len(corpus.train)
    share = corpus.unknown.get("train", 0) / total if total else 0.0
    if share <= UNKNOWN_WARNING:
        return None
    return (
        f"{share:.0%} of the {total} training tokens are <unk> (expected at most "
        f"{UNKNOWN_WARNING:.0%}): the vocabulary of {len(corpus.vocab)} is too small for "
        "this text; raise data.max_vocab (0: every token seen in training)"
    )


def corpus_summary(corpus: Corpus) -> dict[str, object]:
    """Sizes and unknown counts, JSON-ready, for run records."""
    out: dict[str, object] = {"source": corpus.source, "level": corpus.vocab.level}
    out["vocab_size"] = len(corpus.vocab)
    out["tokenizer"] = corpus.vocab.tokenizer
    for split in SPLITS:
        out[f"{split}_tokens"] = len(corpus.split(split))
    out["unknown"] = dict(corpus.unknown)
    return out


__all__: Sequence[str] = (
    "Corpus",
    "IMDB_SPLIT_SEED",
    "SPLITS",
    "SPLIT_FRACTIONS",
    "corpus_summary",
    "unknown_warning",
    "UNKNOWN_WARNING",
    "imdb_line",
    "load_corpus",
    "read_text",
)
