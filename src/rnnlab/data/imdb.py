"""IMDB movie reviews (Maas et al. 2011) with the interface of ``keras.datasets.imdb``.

The loaders read the original ``aclImdb_v1.tar.gz`` (see :mod:`rnnlab.data.imdb_archive`),
tokenise it (:mod:`rnnlab.data.text`), rank words over the training reviews and cache the
encoded corpus in ``<cache root>/imdb/`` (:mod:`rnnlab.data.imdb_corpus`), so only the first
load pays for tokenising. ``sample=True`` uses the 2,500 / 2,500 review sample shipped in the
package instead (ranked over the sample's own training reviews, encoded in memory, never cached).

How a review becomes ids (``load_imdb`` and ``encode_text`` agree):
``[start_char] + [rank + index_from for each token with a rank]``, then every id outside
``skip_top <= id < num_words`` (the start marker included, as in Keras) becomes ``oov_char``,
or is dropped when ``oov_char`` is None. Tokens without a rank (never seen in training) are
dropped, as in Keras. One deliberate difference: ``num_words=None`` keeps every word, whereas
Keras turns the single highest id into ``oov_char``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from rnnlab.data.download import download_file
from rnnlab.data.errors import DataError
from rnnlab.data.imdb_archive import Reviews, read_reviews
from rnnlab.data.imdb_corpus import (
    EncodedCorpus,
    EncodedSplit,
    build_corpus,
    cache_path,
    load_corpus,
    save_corpus,
)
from rnnlab.data.paths import cache_root, ensure_writable_dir, resolve_dataset_dir, sample_dir
from rnnlab.data.text import tokenize

ARCHIVE = "aclImdb_v1.tar.gz"
IMDB_MIRRORS: tuple[str, ...] = ("https://ai.stanford.edu/~amaas/data/sentiment/",)
IMDB_MD5 = "7c2ac02c03563afcf9b574c7e56c153a"  # of the upstream archive only
PER_LABEL = 12_500
SAMPLE_ARCHIVE = "aclImdb_sample.tar.gz"
SAMPLE_PER_LABEL = 1_250
PathLike = str | os.PathLike[str]


def _archive(
    data_dir: PathLike | None,
    sample: bool,
    download: bool,
    progress: bool,
    mirrors: Sequence[str] | None,
) -> tuple[Path, int]:
    """The archive to read and its expected reviews per split and label; downloads if needed."""
    if sample:
        return sample_dir() / SAMPLE_ARCHIVE, SAMPLE_PER_LABEL
    path = resolve_dataset_dir("imdb", data_dir, (ARCHIVE,)) / ARCHIVE
    if not path.is_file():
        if not download:
            raise DataError(
                f"{path}: expected the IMDB archive, got no such file and download=False "
                "(pass download=True, point data_dir at the archive's folder, or use sample=True)"
            )
        urls = [base.rstrip("/") + "/" + ARCHIVE for base in (mirrors or IMDB_MIRRORS)]
        download_file(urls, path, md5=IMDB_MD5, progress=progress)
    return path, PER_LABEL


def _corpus(
    archive: Path, per_label: int, sample: bool, cache_dir: PathLike | None
) -> EncodedCorpus:
    """The encoded corpus of ``archive``: from the cache, or built (and cached unless sample)."""
    if sample:
        return build_corpus(*read_reviews(archive, ("train", "test"), per_label).values())
    folder = cache_root(cache_dir) / "imdb"
    path = cache_path(folder, archive)
    if path.is_file():
        corpus = load_corpus(path)
        if corpus is not None:
            return corpus
    ensure_writable_dir(folder)  # fail before the slow encoding, not after
    reviews = read_reviews(archive, ("train", "test"), per_label)
    corpus = build_corpus(reviews["train"], reviews["test"])
    save_corpus(corpus, path)
    return corpus


def _keras_ids(
    split: EncodedSplit, *, start_char: int | None, index_from: int
) -> tuple[np.ndarray, np.ndarray]:
    """Ranks -> ids with the index offset and start marker: (flat int64 ids, offsets (N + 1,))."""
    ids = split.tokens.astype(np.int64) + index_from
    offsets = split.offsets
    if start_char is not None:
        ids = np.insert(ids, offsets[:-1], start_char)
        offsets = offsets + np.arange(len(offsets))  # one more id before every review
    return ids, offsets


def _oov(
    ids: np.ndarray,
    offsets: np.ndarray,
    *,
    num_words: int | None,
    skip_top: int,
    oov_char: int | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Replace (or drop, when ``oov_char`` is None) ids outside ``skip_top <= id < num_words``."""
    keep = ids >= skip_top
    if num_words:
        keep &= ids < num_words
    if oov_char is not None:
        return np.where(keep, ids, oov_char), offsets
    kept_before = np.concatenate([[0], np.cumsum(keep)])
    return ids[keep], kept_before[offsets]


def _to_lists(ids: np.ndarray, offsets: np.ndarray, order: np.ndarray) -> np.ndarray:
    """An object array whose item j is the list of ids of review ``order[j]``."""
    out = np.empty(len(order), dtype=object)
    for j, i in enumerate(order):
        out[j] = ids[offsets[i] : offsets[i + 1]].tolist()
    return out


def load_imdb(
    num_words: int | None = None,
    skip_top: int = 0,
    maxlen: int | None = None,
    seed: int = 113,
    start_char: int | None = 1,
    oov_char: int | None = 2,
    index_from: int = 3,
    data_dir: PathLike | None = None,
    sample: bool = False,
    download: bool = True,
    progress: bool = False,
    *,
    cache_dir: PathLike | None = None,
    mirrors: Sequence[str] | None = None,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Load IMDB like ``keras.datasets.imdb.load_data``, built from the original archive.

    Args:
        num_words: keep ids below this (the ``num_words - index_from`` most frequent words);
            the rest become ``oov_char``. None keeps all.
        skip_top: ids below this (the most frequent words, and the markers) become ``oov_char``.
        maxlen: keep only reviews with fewer than ``maxlen`` ids, start marker included (Keras
            filters, it does not truncate; use :func:`pad_sequences` to truncate).
        seed: the reviews are shuffled with ``np.random.RandomState(seed)``, train then test.
        start_char: id put before every review (None: no marker).
        oov_char: id of out-of-vocabulary words (None: drop them).
        index_from: the word of rank r gets id ``r + index_from``.
        data_dir: the folder holding ``aclImdb_v1.tar.gz`` or a root holding ``imdb/``; may be
            read-only (see :mod:`rnnlab.data.paths`).
        sample: use the embedded 2,500 / 2,500 review sample (no files, no network).
        download: download the archive from ``mirrors`` when it is missing.
        progress: show a download progress bar (stderr); silent otherwise.
        cache_dir: cache root for the encoded corpus, default ``$RNNLAB_DATA`` or
            ``~/.cache/rnnlab`` (written to ``<cache_dir>/imdb/``).
        mirrors: base URLs to download from, default :data:`IMDB_MIRRORS` (md5-checked).

    Returns:
        ``((x_train, y_train), (x_test, y_test))``: x are 1-d object arrays of lists of int ids,
        y int64 arrays (1 positive, 0 negative); 25,000 reviews per split without ``maxlen``.

    Raises:
        DataError: missing archive with ``download=False``, failed download, corrupt archive,
            wrong review counts, or an unwritable cache folder.
        ValueError: ``maxlen`` leaves no review in a split.
    """
    archive, per_label = _archive(data_dir, sample, download, progress, mirrors)
    corpus = _corpus(archive, per_label, sample, cache_dir)
    rng = np.random.RandomState(seed)
    result = []
    for name, split in (("train", corpus.train), ("test", corpus.test)):
        order = np.arange(len(split.labels))
        rng.shuffle(order)  # exactly Keras' shuffle: train first, then test, one generator
        ids, offsets = _keras_ids(split, start_char=start_char, index_from=index_from)
        if maxlen:
            order = order[np.diff(offsets)[order] < maxlen]
            if len(order) == 0:
                raise ValueError(
                    f"load_imdb expected some {name} reviews shorter than maxlen={maxlen}, got none"
                )
        ids, offsets = _oov(ids, offsets, num_words=num_words, skip_top=skip_top, oov_char=oov_char)
        result.append((_to_lists(ids, offsets, order), split.labels[order]))
    return result[0], result[1]


def get_word_index(
    data_dir: PathLike | None = None,
    sample: bool = False,
    download: bool = True,
    progress: bool = False,
    *,
    cache_dir: PathLike | None = None,
    mirrors: Sequence[str] | None = None,
) -> dict[str, int]:
    """``{word: rank}`` of the training reviews, 1 = most frequent (ids are rank + index_from).

    Arguments as in :func:`load_imdb`; the index of ``sample=True`` is the sample's own.
    """
    archive, per_label = _archive(data_dir, sample, download, progress, mirrors)
    return _corpus(archive, per_label, sample, cache_dir).word_index()


def encode_text(
    text: str,
    word_index: dict[str, int],
    *,
    num_words: int | None = None,
    skip_top: int = 0,
    start_char: int | None = 1,
    oov_char: int | None = 2,
    index_from: int = 3,
) -> list[int]:
    """Encode a new review exactly as :func:`load_imdb` encodes the corpus, with its options.

    ``word_index`` comes from :func:`get_word_index` (the same data the model was trained on).
    Words missing from it are dropped, as :func:`load_imdb` drops test words never seen in
    training.
    """
    ids = [word_index[token] + index_from for token in tokenize(text) if token in word_index]
    if start_char is not None:
        ids.insert(0, start_char)
    upper = num_words or float("inf")
    if oov_char is None:
        return [i for i in ids if skip_top <= i < upper]
    return [i if skip_top <= i < upper else oov_char for i in ids]


def decode(
    ids: Iterable[int],
    word_index: dict[str, int],
    *,
    start_char: int | None = 1,
    oov_char: int | None = 2,
    index_from: int = 3,
) -> str:
    """Ids -> text: words joined by spaces, ``[START]`` / ``[OOV]`` for the markers, ``[UNK]`` for
    ids without a word; padding (0) is skipped."""
    words = {rank + index_from: word for word, rank in word_index.items()}
    out = []
    for i in map(int, ids):
        if i == 0:
            continue
        if i == start_char:
            out.append("[START]")
        elif i == oov_char:
            out.append("[OOV]")
        else:
            out.append(words.get(i, "[UNK]"))
    return " ".join(out)


def load_imdb_texts(
    split: str = "train",
    data_dir: PathLike | None = None,
    sample: bool = False,
    download: bool = True,
    progress: bool = False,
    *,
    mirrors: Sequence[str] | None = None,
) -> Reviews:
    """The raw reviews of ``split`` ("train", "test" or "unsup"): texts, labels, ratings, ids.

    Texts are exactly the files' UTF-8 content (``<br />`` included); the order is negative
    reviews then positive, each by file id. ``unsup`` (50,000 unlabelled training reviews, label
    -1, rating 0) exists in the full archive only.
    """
    if sample and split == "unsup":
        raise DataError(
            f"{sample_dir() / SAMPLE_ARCHIVE}: expected train or test, got 'unsup' "
            "(the embedded sample has no unlabelled reviews)"
        )
    archive, per_label = _archive(data_dir, sample, download, progress, mirrors)
    return read_reviews(archive, (split,), per_label)[split]
