"""MNIST (LeCun et al. 1998) and any dataset in the same four-IDX-file layout.

``load_mnist`` returns what ``keras.datasets.mnist.load_data`` returns (uint8 images of shape
(N, 28, 28)) except that labels are int64. The tutorial's recurrent models read an image row by
row: 28 time steps of 28 features in [0, 1]; :func:`mnist_to_sequences` makes that view.

Shape legend: N examples, T time steps (image rows), I input features (pixels per row).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from rnnlab.data.download import download_file
from rnnlab.data.errors import DataError
from rnnlab.data.idx import read_idx, read_maybe_gzip
from rnnlab.data.paths import resolve_dataset_dir, sample_dir

# Canonical sources of the four .gz files, tried in order.
MNIST_MIRRORS: tuple[str, ...] = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
# (file stem, sha256 of the decompressed content); these hold for the upstream files.
MNIST_FILES: dict[str, tuple[str, str]] = {
    "train_images": (
        "train-images-idx3-ubyte",
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    ),
    "train_labels": (
        "train-labels-idx1-ubyte",
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    ),
    "test_images": (
        "t10k-images-idx3-ubyte",
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    ),
    "test_labels": (
        "t10k-labels-idx1-ubyte",
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    ),
}
Split = tuple[np.ndarray, np.ndarray]


def _find(folder: Path, stem: str) -> Path | None:
    """The file for ``stem`` in ``folder``: plain or ``.gz``, or None."""
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _pair(images_path: Path, labels_path: Path, images: np.ndarray, labels: np.ndarray) -> Split:
    """Check that an images/labels pair belongs together and return (uint8 images, int64 labels)."""
    if images.ndim != 3:
        raise DataError(f"{images_path}: expected a 3-d image array (N, H, W), got {images.shape}")
    if labels.ndim != 1:
        raise DataError(f"{labels_path}: expected a 1-d label array (N,), got {labels.shape}")
    if len(images) != len(labels):
        raise DataError(
            f"{images_path} and {labels_path}: expected as many labels as images, got "
            f"{len(images)} images and {len(labels)} labels"
        )
    return images, labels.astype(np.int64)


def _load_four(folder: Path, checksums: bool) -> tuple[Split, Split]:
    """Read the four IDX files of ``folder`` (all must exist), verifying MNIST's sha256 if asked."""
    arrays, paths = {}, {}
    for key, (stem, sha) in MNIST_FILES.items():
        path = _find(folder, stem)
        if path is None:
            raise DataError(f"{folder}: expected {stem} or {stem}.gz, got no such file")
        paths[key] = path
        arrays[key] = read_idx(path, sha256=sha if checksums else None)
    train = _pair(
        paths["train_images"], paths["train_labels"], arrays["train_images"], arrays["train_labels"]
    )
    test = _pair(
        paths["test_images"], paths["test_labels"], arrays["test_images"], arrays["test_labels"]
    )
    return train, test


def load_idx_dataset(data_dir: str | os.PathLike[str]) -> tuple[Split, Split]:
    """Load any dataset stored as MNIST's four IDX files (Fashion-MNIST, KMNIST, EMNIST splits).

    ``data_dir`` must hold ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each plain or ``.gz``. No
    checksums are verified; shapes and image/label counts are.

    Returns:
        ``((x_train, y_train), (x_test, y_test))``: images as stored (uint8 (N, H, W) for the
        usual files), labels int64 (N,).
    """
    folder = Path(data_dir).expanduser()
    if not folder.is_dir():
        found = "a file" if folder.exists() else "nothing there"
        raise DataError(f"{folder}: expected a directory of IDX files, got {found}")
    return _load_four(folder, checksums=False)


def load_mnist(
    data_dir: str | os.PathLike[str] | None = None,
    sample: bool = False,
    download: bool = True,
    progress: bool = False,
    *,
    mirrors: Sequence[str] | None = None,
) -> tuple[Split, Split]:
    """Load MNIST like ``keras.datasets.mnist.load_data``, verified by sha256.

    Args:
        data_dir: the MNIST folder itself or a root holding ``mnist/`` (see
            :mod:`rnnlab.data.paths`); default ``$RNNLAB_DATA/mnist`` or ``~/.cache/rnnlab/mnist``.
        sample: load the stratified 10,000 / 2,000 sample shipped in the package instead (no
            files, no network; ``data_dir`` and ``download`` are ignored).
        download: fetch missing files from ``mirrors`` into the dataset folder.
        progress: show a download progress bar (stderr); the loader is silent otherwise.
        mirrors: base URLs to try in order; default :data:`MNIST_MIRRORS`.

    Returns:
        ``((x_train, y_train), (x_test, y_test))``: uint8 (60000, 28, 28) and int64 (60000,),
        uint8 (10000, 28, 28) and int64 (10000,).

    Raises:
        DataError: a file is missing and ``download`` is False, a download failed, or a file is
            corrupt (bad gzip, IDX header or size, sha256 of the decompressed content, counts).
    """
    if sample:
        return _load_four(sample_dir(), checksums=False)
    stems = [stem for stem, _ in MNIST_FILES.values()]
    folder = resolve_dataset_dir("mnist", data_dir, stems + [s + ".gz" for s in stems])
    for stem, sha in MNIST_FILES.values():
        if _find(folder, stem) is not None:
            continue
        if not download:
            raise DataError(
                f"{folder}: expected {stem}.gz (or {stem}), got no such file and download=False "
                "(pass download=True, point data_dir at the files, or use sample=True)"
            )
        _download_idx(stem, sha, folder, mirrors or MNIST_MIRRORS, progress)
    return _load_four(folder, checksums=True)


def _download_idx(
    stem: str, sha256: str, folder: Path, mirrors: Sequence[str], progress: bool
) -> None:
    """Download ``<stem>.gz`` into ``folder``, accepted only if its content has ``sha256``."""

    def verify(tmp: Path) -> None:
        found = hashlib.sha256(read_maybe_gzip(tmp)).hexdigest()
        if found != sha256:
            raise DataError(f"{stem}.gz: expected sha256 {sha256} of the content, got {found}")

    urls = [base.rstrip("/") + "/" + stem + ".gz" for base in mirrors]
    download_file(urls, folder / (stem + ".gz"), verify=verify, progress=progress)


def mnist_to_sequences(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Images (N, H, W) uint8 -> float32 tensor (N, T=H, I=W) in [0, 1], read row by row."""
    if len(x.shape) != 3:
        raise ValueError(f"mnist_to_sequences expected shape (N, H, W), got {tuple(x.shape)}")
    tensor = torch.as_tensor(x)
    if tensor.dtype != torch.uint8:
        raise ValueError(f"mnist_to_sequences expected uint8 pixels in 0..255, got {tensor.dtype}")
    return tensor.to(torch.float32).div_(255.0)  # (N, T, I)


def mnist_dataset(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor) -> TensorDataset:
    """A TensorDataset of (sequence (T, I) float32 in [0, 1], label int64) pairs."""
    sequences = mnist_to_sequences(x)  # (N, T, I)
    labels = torch.as_tensor(np.asarray(y), dtype=torch.int64)  # (N,)
    if labels.shape != (len(sequences),):
        raise ValueError(
            f"mnist_dataset expected labels of shape ({len(sequences)},), got {tuple(labels.shape)}"
        )
    return TensorDataset(sequences, labels)
