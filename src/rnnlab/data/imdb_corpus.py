"""The IMDB corpus encoded as word ranks, and its on-disk cache.

Ranks follow ``keras.datasets.imdb``: words are ranked by their number of occurrences over the
*training* reviews, 1 = most frequent; ties are broken alphabetically so the ranking is
deterministic. Test words never seen in training have no rank and are dropped (Keras does the
same). Each split is stored flat: ``tokens[offsets[i]:offsets[i + 1]]`` is review ``i``.

The cache is one ``.npz`` (no pickles) per archive content: its name holds the format version,
the tokeniser version and the first 16 hex digits of the archive's sha256, so a changed archive
or tokeniser is re-encoded and an old cache file is never misread.
"""

from __future__ import annotations

import hashlib
import itertools
import zipfile
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import numpy as np

from rnnlab.data.imdb_archive import Reviews
from rnnlab.data.paths import ensure_writable_dir
from rnnlab.data.text import TOKENIZER_VERSION, tokenize
from rnnlab.files import atomic_output

FORMAT_VERSION = 1


class EncodedSplit(NamedTuple):
    """One split as word ranks, in the canonical order of :class:`Reviews`."""

    tokens: np.ndarray  # int32 (total,): word ranks of all reviews, concatenated
    offsets: np.ndarray  # int64 (N + 1,): review i is tokens[offsets[i]:offsets[i + 1]]
    labels: np.ndarray  # int64 (N,)


class EncodedCorpus(NamedTuple):
    """The train and test splits plus the vocabulary; ``words[r - 1]`` has rank ``r``."""

    words: list[str]
    train: EncodedSplit
    test: EncodedSplit

    def word_index(self) -> dict[str, int]:
        """``{word: rank}`` with rank 1 for the most frequent training word."""
        return {word: rank for rank, word in enumerate(self.words, start=1)}


def rank_words(token_lists: list[list[str]]) -> list[str]:
    """Words ordered by falling count over ``token_lists``, ties alphabetical."""
    counts = Counter(itertools.chain.from_iterable(token_lists))
    return sorted(counts, key=lambda word: (-counts[word], word))


def _encode_split(
    token_lists: list[list[str]], ranks: dict[str, int], labels: np.ndarray
) -> EncodedSplit:
    """Map tokens to ranks (unranked tokens dropped) and flatten."""
    rank = ranks.get
    encoded = [[r for r in map(rank, tokens) if r is not None] for tokens in token_lists]
    lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    flat = np.fromiter(
        itertools.chain.from_iterable(encoded), dtype=np.int32, count=int(offsets[-1])
    )
    return EncodedSplit(tokens=flat, offsets=offsets, labels=labels.astype(np.int64))


def build_corpus(train: Reviews, test: Reviews) -> EncodedCorpus:
    """Tokenise both splits, rank the training words and encode both splits."""
    train_tokens = [tokenize(text) for text in train.texts]
    words = rank_words(train_tokens)
    ranks = {word: rank for rank, word in enumerate(words, start=1)}
    encoded_train = _encode_split(train_tokens, ranks, train.labels)
    del train_tokens  # peak memory: one split's token lists at a time
    test_tokens = [tokenize(text) for text in test.texts]
    return EncodedCorpus(words, encoded_train, _encode_split(test_tokens, ranks, test.labels))


def archive_key(archive: Path) -> str:
    """First 16 hex digits of the archive's sha256 (its identity for the cache)."""
    digest = hashlib.sha256()
    with open(archive, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def cache_path(cache_folder: Path, archive: Path) -> Path:
    """The cache file for ``archive`` inside ``cache_folder``."""
    name = f"encoded-f{FORMAT_VERSION}-t{TOKENIZER_VERSION}-{archive_key(archive)}.npz"
    return cache_folder / name


def save_corpus(corpus: EncodedCorpus, path: Path) -> None:
    """Write ``corpus`` to ``path`` atomically as an uncompressed .npz (fast to load)."""
    words = np.frombuffer("\n".join(corpus.words).encode("utf-8"), dtype=np.uint8)
    arrays = {"words": words}
    for name, split in (("train", corpus.train), ("test", corpus.test)):
        for field, array in split._asdict().items():
            arrays[f"{name}_{field}"] = array
    ensure_writable_dir(path.parent)
    with atomic_output(path) as handle:
        np.savez(handle, **arrays)


def load_corpus(path: Path) -> EncodedCorpus | None:
    """Read a cache file; None if it is unreadable or inconsistent (it is then rebuilt)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            words = data["words"].tobytes().decode("utf-8").split("\n")
            splits = [
                EncodedSplit(*(data[f"{name}_{field}"] for field in EncodedSplit._fields))
                for name in ("train", "test")
            ]
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile, UnicodeDecodeError):
        return None
    for split in splits:
        if len(split.offsets) != len(split.labels) + 1 or split.offsets[-1] != len(split.tokens):
            return None
        if split.tokens.size and not 1 <= split.tokens.min() <= split.tokens.max() <= len(words):
            return None
    return EncodedCorpus(words, *splits)
