"""IDX parsing, MNIST loading and verification, and bad input, on real files and real copies."""

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from rnnlab.data import (
    DataError,
    load_idx_dataset,
    load_mnist,
    mnist_dataset,
    mnist_to_sequences,
    read_idx,
    sample_dir,
)
from rnnlab.data.idx import write_idx

SHARED = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data").resolve()
needs_shared = pytest.mark.skipif(
    not (SHARED / "mnist").is_dir(), reason=f"full data not found at {SHARED}"
)
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
STEMS = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
]


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "float32", "float64"])
@pytest.mark.parametrize("compress", [True, False])
def test_idx_round_trip(tmp_path, dtype, compress):
    array = (np.arange(2 * 3 * 5) - 7).reshape(2, 3, 5).astype(dtype)
    write_idx(array, tmp_path / "a.idx", compress=compress)
    got = read_idx(tmp_path / "a.idx")
    assert got.dtype == np.dtype(dtype) and got.flags.writeable
    np.testing.assert_array_equal(got, array)


def test_idx_header_is_big_endian(tmp_path):
    header = bytes([0, 0, 0x0C, 1, 0, 0, 0, 2])  # int32, 1 dim of size 2
    (tmp_path / "x").write_bytes(header + bytes([0, 0, 1, 2, 0, 0, 0, 3]))
    np.testing.assert_array_equal(read_idx(tmp_path / "x"), [258, 3])


def test_wrong_magic_is_rejected(tmp_path):
    path = tmp_path / "train-labels-idx1-ubyte"
    data = bytearray(gzip.decompress((sample_dir() / (path.name + ".gz")).read_bytes()))
    data[2] = 0x07  # no such dtype code
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=rf"{path}: expected IDX magic .* got 00 00 07 01"):
        read_idx(path)


def test_size_not_matching_header_is_rejected(tmp_path):
    path = tmp_path / "t10k-labels-idx1-ubyte"
    path.write_bytes(gzip.decompress((sample_dir() / (path.name + ".gz")).read_bytes())[:-3])
    with pytest.raises(DataError, match=r"expected 2008 bytes .* shape \(2000,\), got 2005"):
        read_idx(path)


def test_truncated_gzip_is_rejected(tmp_path):
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    raw = (sample_dir() / path.name).read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=rf"{path}: expected a complete, valid gzip stream"):
        read_idx(path)


def test_mismatched_image_and_label_counts(tmp_path):
    shutil.copytree(sample_dir(), tmp_path / "d", ignore=shutil.ignore_patterns("*.tar.gz", "*.md"))
    labels = read_idx(tmp_path / "d" / "t10k-labels-idx1-ubyte.gz")
    write_idx(labels[:-1].astype(np.uint8), tmp_path / "d" / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(
        DataError, match="expected as many labels as images, got 2000 images and 1999 labels"
    ):
        load_idx_dataset(tmp_path / "d")


def test_load_idx_dataset_reads_plain_and_gzip(tmp_path):
    for stem in STEMS:  # a Fashion-MNIST-like folder with uncompressed files
        (tmp_path / stem).write_bytes(gzip.decompress((sample_dir() / (stem + ".gz")).read_bytes()))
    (x, y), (xt, yt) = load_idx_dataset(tmp_path)
    assert x.shape == (10000, 28, 28) and xt.shape == (2000, 28, 28)
    assert y.dtype == np.int64 and yt.shape == (2000,)


def test_missing_directory_and_missing_files(tmp_path):
    with pytest.raises(DataError, match=rf"{tmp_path / 'nope'}: expected a directory"):
        load_idx_dataset(tmp_path / "nope")
    with pytest.raises(DataError, match=rf"data_dir {tmp_path / 'nope'}: expected an existing"):
        load_mnist(data_dir=tmp_path / "nope")
    with pytest.raises(
        DataError,
        match=rf"{tmp_path / 'mnist'}: expected train-images-idx3-ubyte"
        r".gz .*download=False",
    ):
        load_mnist(data_dir=tmp_path, download=False)
    assert list(tmp_path.iterdir()) == []  # nothing created when nothing may be downloaded


@needs_shared
def test_full_mnist_shapes_counts_and_checksums():
    (x, y), (xt, yt) = load_mnist(data_dir=SHARED / "mnist", download=False)
    assert x.shape == (60000, 28, 28) and x.dtype == np.uint8
    assert xt.shape == (10000, 28, 28) and xt.dtype == np.uint8
    assert y.shape == (60000,) and y.dtype == np.int64 and yt.dtype == np.int64
    assert np.bincount(y).tolist() == TRAIN_COUNTS
    assert np.bincount(yt).tolist() == TEST_COUNTS
    assert abs(x.mean() / 255 - 0.1307) < 1e-4 and abs((x / 255).std() - 0.3081) < 1e-4


@needs_shared
def test_data_dir_may_be_the_root_or_given_by_env(tmp_path, monkeypatch):
    (xr, _), _ = load_mnist(data_dir=SHARED, download=False)  # the root holding mnist/
    (tmp_path / "mnist").mkdir()
    for stem in STEMS:
        (tmp_path / "mnist" / (stem + ".gz")).symlink_to(SHARED / "mnist" / (stem + ".gz"))
    monkeypatch.setenv("RNNLAB_DATA", str(tmp_path))
    (xe, _), _ = load_mnist(download=False)
    np.testing.assert_array_equal(xr, xe)


def _copy_mnist(dest: Path) -> Path:
    dest.mkdir()
    for stem in STEMS:
        shutil.copy(SHARED / "mnist" / (stem + ".gz"), dest / (stem + ".gz"))
    return dest


@needs_shared
def test_one_flipped_byte_in_the_content_is_rejected(tmp_path):
    folder = _copy_mnist(tmp_path / "mnist")
    path = folder / "train-labels-idx1-ubyte.gz"
    data = bytearray(gzip.decompress(path.read_bytes()))
    data[1000] ^= 0x01  # one label changes by one: header and sizes stay valid
    path.write_bytes(gzip.compress(bytes(data)))
    with pytest.raises(DataError, match=rf"{path}: expected sha256 65a50cbb\w+ .*, got"):
        load_mnist(data_dir=folder, download=False)


@needs_shared
def test_one_flipped_byte_in_the_gzip_stream_is_rejected(tmp_path):
    folder = _copy_mnist(tmp_path / "mnist")
    path = folder / "t10k-images-idx3-ubyte.gz"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=str(path)):  # a gzip CRC/stream error or a sha mismatch
        load_mnist(data_dir=folder, download=False)


def test_mnist_to_sequences_reads_rows():
    x = np.random.default_rng(0).integers(0, 256, size=(4, 28, 28), dtype=np.uint8)
    seq = mnist_to_sequences(x)  # (N, T, I)
    assert seq.shape == (4, 28, 28) and seq.dtype == torch.float32
    torch.testing.assert_close(seq[2, 5], torch.from_numpy(x[2, 5]).float() / 255)
    assert seq.min() >= 0 and seq.max() <= 1
    with pytest.raises(ValueError, match=r"expected shape \(N, H, W\), got \(4, 784\)"):
        mnist_to_sequences(x.reshape(4, 784))
    with pytest.raises(ValueError, match="expected uint8 pixels in 0..255, got torch.float32"):
        mnist_to_sequences(seq)


def test_mnist_dataset_pairs_sequences_and_labels():
    (x, y), _ = load_mnist(sample=True)
    dataset = mnist_dataset(x[:10], y[:10])
    seq, label = dataset[3]
    assert seq.shape == (28, 28) and label.dtype == torch.int64 and int(label) == y[3]
    with pytest.raises(ValueError, match=r"expected labels of shape \(10,\), got \(9,\)"):
        mnist_dataset(x[:10], y[:9])
