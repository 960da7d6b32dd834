"""The embedded sample: loads with no data directory and no network, is small, real and current."""

import hashlib
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from rnnlab.data import (
    DataError,
    load_imdb,
    load_imdb_texts,
    load_mnist,
    mnist_dataset,
    sample_dir,
)

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO / ".." / "shared" / "data").resolve()
needs_shared = pytest.mark.skipif(
    not (SHARED / "mnist").is_dir(), reason=f"full data not found at {SHARED}"
)


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No network, an empty cache root and an empty home: nothing to find anywhere."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setenv("RNNLAB_DATA", str(tmp_path / "cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path


def test_mnist_sample_offline_and_stratified(offline):
    (x, y), (xt, yt) = load_mnist(sample=True)
    assert x.shape == (10000, 28, 28) and xt.shape == (2000, 28, 28) and x.dtype == np.uint8
    full_train = np.array([5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949])
    full_test = np.array([980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])
    assert np.abs(np.bincount(y) - full_train / 6).max() < 1  # each digit in its full share
    assert np.abs(np.bincount(yt) - full_test / 5).max() < 1
    assert len(mnist_dataset(xt, yt)) == 2000
    assert list(offline.iterdir()) == []  # nothing written


def test_imdb_sample_offline_and_balanced(offline):
    (x, y), (xt, yt) = load_imdb(num_words=2000, sample=True)
    assert len(x) == len(xt) == 2500
    assert np.bincount(y).tolist() == np.bincount(yt).tolist() == [1250, 1250]
    assert max(max(s) for s in x) < 2000
    assert len(load_imdb_texts("test", sample=True).texts) == 2500
    assert list(offline.iterdir()) == []  # encoded in memory, never cached


def test_no_data_and_no_download_names_where_it_looked(offline):
    with pytest.raises(DataError, match=rf"{offline / 'cache' / 'mnist'}: expected .*sample=True"):
        load_mnist(download=False)
    with pytest.raises(DataError, match=rf"{offline / 'cache' / 'imdb' / 'aclImdb_v1.tar.gz'}"):
        load_imdb(download=False)


def test_sample_is_small():
    files = [p for p in sample_dir().iterdir() if p.is_file()]
    assert {p.name for p in files} >= {"aclImdb_sample.tar.gz", "train-images-idx3-ubyte.gz"}
    assert sum(p.stat().st_size for p in files) <= 5_000_000


@needs_shared
def test_mnist_sample_images_come_from_the_full_set():
    (x, y), (xt, yt) = load_mnist(data_dir=SHARED / "mnist", download=False)
    (sx, sy), (sxt, syt) = load_mnist(sample=True)
    for full_x, full_y, part_x, part_y in ((x, y, sx, sy), (xt, yt, sxt, syt)):
        known = {img.tobytes(): label for img, label in zip(full_x, full_y, strict=True)}
        assert all(
            known.get(img.tobytes()) == label for img, label in zip(part_x, part_y, strict=True)
        )


@needs_shared
def test_make_sample_reproduces_the_shipped_files(tmp_path):
    subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "make_sample.py"),
            "--data",
            str(SHARED),
            "--out",
            str(tmp_path),
        ],
        check=True,
        capture_output=True,
    )
    for made in tmp_path.iterdir():
        shipped = sample_dir() / made.name
        assert (
            hashlib.sha256(made.read_bytes()).digest()
            == hashlib.sha256(shipped.read_bytes()).digest()
        ), made.name
