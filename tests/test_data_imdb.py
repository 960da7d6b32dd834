"""IMDB: tokeniser, Keras semantics, encode/decode, cache, full-data acceptance and bad archives."""

import gzip
import io
import os
import shutil
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

import rnnlab.data.imdb as imdb_module
from rnnlab.data import (
    DataError,
    decode,
    encode_text,
    get_word_index,
    load_imdb,
    load_imdb_texts,
    sample_dir,
    tokenize,
)
from rnnlab.data.imdb_corpus import cache_path

SHARED = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data").resolve()
needs_shared = pytest.mark.skipif(
    not (SHARED / "imdb").is_dir(), reason=f"full data not found at {SHARED}"
)
SAMPLE = sample_dir() / "aclImdb_sample.tar.gz"


def test_tokenize_rules():
    text = "A <br /><br />GREAT film,<BR>isn't it?! Director's cut:\"wow\" 9/10"
    assert tokenize(text) == [
        "a",
        "great",
        "film",
        ",",
        "isn't",
        "it",
        "?",
        "!",
        "director's",
        "cut",
        ":",
        '"',
        "wow",
        '"',
        "9",
        "/",
        "10",
    ]
    assert tokenize("'quoted' Ünïcode") == ["'", "quoted", "'", "ünïcode"]
    with pytest.raises(TypeError, match="expected str, got bytes"):
        tokenize(b"bytes")


def test_word_ranks_follow_training_counts():
    reviews = load_imdb_texts("train", sample=True)
    counts = Counter(token for text in reviews.texts for token in tokenize(text))
    index = get_word_index(sample=True)
    assert sorted(index.values()) == list(range(1, len(counts) + 1))
    by_rank = sorted(index, key=index.get)
    assert [counts[w] for w in by_rank] == sorted(counts.values(), reverse=True)
    assert by_rank[0] == counts.most_common(1)[0][0]


@pytest.fixture(scope="module")
def keras_npz(tmp_path_factory) -> Path:
    """The sample as Keras' imdb.npz: rank lists in our canonical order (independent path)."""
    index = get_word_index(sample=True)
    arrays = {}
    for split in ("train", "test"):
        reviews = load_imdb_texts(split, sample=True)
        seqs = np.empty(len(reviews.texts), dtype=object)
        for i, text in enumerate(reviews.texts):
            seqs[i] = [index[t] for t in tokenize(text) if t in index]
        arrays[f"x_{split}"], arrays[f"y_{split}"] = seqs, reviews.labels
    path = tmp_path_factory.mktemp("keras") / "imdb.npz"
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    "options",
    [
        {"num_words": 5000},
        {"num_words": 2000, "skip_top": 20, "seed": 7},
        {"num_words": 10**9, "maxlen": 150},
        {"num_words": 300, "oov_char": None, "maxlen": 80},
        {"num_words": 1000, "start_char": None, "index_from": 0, "oov_char": 1},
        {"num_words": 1000, "skip_top": 3, "start_char": 1, "index_from": 5, "seed": 0},
    ],
)
def test_load_imdb_matches_keras_load_data(keras_npz, monkeypatch, options):
    os.environ["KERAS_BACKEND"] = "torch"
    pytest.importorskip("keras")
    import keras.src.datasets.imdb as keras_imdb

    monkeypatch.setattr(keras_imdb, "get_file", lambda **kwargs: str(keras_npz))
    (kx, ky), (kxt, kyt) = keras_imdb.load_data(**options)
    (x, y), (xt, yt) = load_imdb(sample=True, **options)
    for ours, theirs in ((x, kx), (xt, kxt)):
        assert ours.dtype == object and ours.shape == (len(theirs),)
        assert all(a == list(b) for a, b in zip(ours, theirs, strict=True))
    np.testing.assert_array_equal(y, ky)
    np.testing.assert_array_equal(yt, kyt)
    assert y.dtype == np.int64


def test_num_words_none_keeps_every_word():
    (x, _), (xt, _) = load_imdb(sample=True)
    index = get_word_index(sample=True)
    assert max(max(s) for s in x) == len(index) + 3  # the rarest word keeps its id
    assert all(s[0] == 1 for s in x) and 2 not in {i for s in xt for i in s}


def test_maxlen_filters_like_keras_and_empty_result_raises():
    (x, y), (xt, yt) = load_imdb(sample=True, maxlen=100)
    assert all(len(s) < 100 for s in x) and len(x) == len(y) < 2500 and len(xt) == len(yt)
    with pytest.raises(ValueError, match="expected some train reviews shorter than maxlen=1"):
        load_imdb(sample=True, maxlen=1)


def test_encode_text_matches_load_imdb():
    options = {"num_words": 1000, "skip_top": 4, "index_from": 3}
    (x, _), (xt, yt) = load_imdb(sample=True, seed=5, **options)
    texts = load_imdb_texts("test", sample=True)
    order = np.arange(2500)
    rng = np.random.RandomState(5)
    rng.shuffle(np.arange(2500))  # the train shuffle comes first
    rng.shuffle(order)
    index = get_word_index(sample=True)
    for j in range(0, 2500, 97):
        assert encode_text(texts.texts[order[j]], index, **options) == xt[j]
        assert yt[j] == texts.labels[order[j]]


def test_encode_and_decode_new_text():
    index = {"the": 1, "film": 2, "was": 3, "great": 4, "!": 5}
    ids = encode_text("The film was <br />GREAT!! zzzunknown", index)
    assert ids == [1, 4, 5, 6, 7, 8, 8]  # start, ranks + 3, unknown word dropped
    assert decode(ids, index) == "[START] the film was great ! !"
    assert encode_text("the great film", index, num_words=6) == [1, 4, 2, 5]
    assert encode_text("the great film", index, num_words=6, oov_char=None) == [1, 4, 5]
    assert decode([0, 0, 1, 2, 99], index) == "[START] [OOV] [UNK]"


def test_texts_labels_ratings():
    reviews = load_imdb_texts("train", sample=True)
    assert len(reviews.texts) == 2500 and np.bincount(reviews.labels).tolist() == [1250, 1250]
    assert set(reviews.ratings[reviews.labels == 1]) <= {7, 8, 9, 10}
    assert set(reviews.ratings[reviews.labels == 0]) <= {1, 2, 3, 4}
    assert any("<br />" in text for text in reviews.texts)  # raw, untouched
    with pytest.raises(DataError, match="expected train or test, got 'unsup'"):
        load_imdb_texts("unsup", sample=True)
    with pytest.raises(ValueError, match="expected splits among"):
        load_imdb_texts("validation", sample=True)


@pytest.fixture(scope="module")
def full_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("imdb-cache")


@needs_shared
def test_full_imdb_acceptance_and_cache(full_cache, monkeypatch):
    kwargs = {"num_words": 1000, "data_dir": SHARED / "imdb", "cache_dir": full_cache}
    (x, y), (xt, yt) = load_imdb(**kwargs)  # encodes the archive and writes the cache
    assert len(x) == len(y) == 25000 and len(xt) == len(yt) == 25000
    assert np.bincount(y).tolist() == [12500, 12500] and np.bincount(yt).tolist() == [12500, 12500]
    assert max(max(s) for s in x) < 1000 and max(max(s) for s in xt) < 1000
    assert min(min(s) for s in x) >= 1 and all(s[0] == 1 for s in xt)
    assert [p.name for p in (full_cache / "imdb").iterdir()] == [
        "encoded-f1-t1-f487007c06228671.npz"
    ]  # keyed on the archive's sha256 (data README)

    def no_rebuild(*args):
        raise AssertionError("the cache was not used")

    monkeypatch.setattr(imdb_module, "build_corpus", no_rebuild)
    (x2, y2), (xt2, yt2) = load_imdb(**kwargs)
    assert list(x2) == list(x) and list(xt2) == list(xt)
    np.testing.assert_array_equal(y2, y)
    index = get_word_index(data_dir=SHARED, cache_dir=full_cache)  # data_dir as the root
    assert index["the"] == 1 and len(index) > 80000


@needs_shared
def test_full_imdb_unwritable_cache_fails_before_encoding(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    message = rf"cache directory {blocker / 'imdb'}: expected a writable directory"
    with pytest.raises(DataError, match=message):
        load_imdb(data_dir=SHARED / "imdb", cache_dir=blocker)


@needs_shared
def test_full_unsup_texts():
    reviews = load_imdb_texts("unsup", data_dir=SHARED / "imdb")
    assert len(reviews.texts) == 50000 and set(reviews.labels) == {-1}


def _tar(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(buffer.getvalue())


@pytest.mark.parametrize("damage", ["truncate", "flip", "not-gzip"])
def test_corrupt_archive_is_rejected_and_nothing_cached(tmp_path, damage):
    data = bytearray(SAMPLE.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 3]
    elif damage == "flip":
        data[len(data) // 2] ^= 0xFF
    else:
        data = bytearray(b"<html>404</html>" * 100)
    (tmp_path / "imdb").mkdir()
    archive = tmp_path / "imdb" / "aclImdb_v1.tar.gz"
    archive.write_bytes(bytes(data))
    with pytest.raises(DataError, match=rf"{archive}: expected a complete tar archive"):
        load_imdb(data_dir=tmp_path, cache_dir=tmp_path / "cache")
    assert list((tmp_path / "cache" / "imdb").iterdir()) == []


def test_wrong_review_counts_are_rejected(tmp_path):
    shutil.copy(SAMPLE, tmp_path / "aclImdb_v1.tar.gz")  # valid, but 1,250 per label
    with pytest.raises(DataError, match=r"expected 12500 reviews in aclImdb/train/neg, got 1250"):
        load_imdb(data_dir=tmp_path, cache_dir=tmp_path / "cache")
    review = {"aclImdb/train/pos/0_9.txt": b"fine"}
    (tmp_path / "aclImdb_v1.tar.gz").write_bytes(_tar(review))
    with pytest.raises(DataError, match=r"expected 12500 reviews in aclImdb/train/neg, got 0"):
        load_imdb_texts("train", data_dir=tmp_path)
    (tmp_path / "aclImdb_v1.tar.gz").write_bytes(_tar({"aclImdb/test/neg/0_1.txt": b"\xff\xfe"}))
    with pytest.raises(DataError, match="expected UTF-8 review text"):
        load_imdb_texts("test", data_dir=tmp_path)


def test_missing_archive_without_download(tmp_path):
    with pytest.raises(
        DataError,
        match=rf"{tmp_path / 'imdb' / 'aclImdb_v1.tar.gz'}: expected "
        "the IMDB archive, got no such file and download=False",
    ):
        load_imdb(data_dir=tmp_path, download=False)


def test_cache_is_keyed_on_the_archive_and_rebuilt_when_corrupt(tmp_path, monkeypatch):
    monkeypatch.setattr(imdb_module, "PER_LABEL", 1250)  # let the sample stand in for the full
    (tmp_path / "imdb").mkdir()
    archive = tmp_path / "imdb" / "aclImdb_v1.tar.gz"
    shutil.copy(SAMPLE, archive)
    cache = tmp_path / "cache"
    first = get_word_index(data_dir=tmp_path, cache_dir=cache)
    cached = cache_path(cache / "imdb", archive)
    assert cached.is_file()

    with tarfile.open(SAMPLE) as src:  # same reviews, one of them rewritten
        files = {m.name: src.extractfile(m).read() for m in src.getmembers() if m.isfile()}
    name = next(n for n in sorted(files) if "/train/pos/" in n)
    files[name] = b"zyzzyva " * 50
    archive.write_bytes(_tar(files))
    second = get_word_index(data_dir=tmp_path, cache_dir=cache)
    assert "zyzzyva" in second and "zyzzyva" not in first
    assert len(list((cache / "imdb").iterdir())) == 2  # a new key, a new file

    cache_path(cache / "imdb", archive).write_bytes(b"PK\x03\x04 truncated")
    assert get_word_index(data_dir=tmp_path, cache_dir=cache) == second  # rebuilt, not misread
