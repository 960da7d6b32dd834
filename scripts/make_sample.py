"""Build the real-data sample shipped in ``src/rnnlab/data/sample/`` from the full datasets.

    python scripts/make_sample.py [--data ../shared/data] [--out src/rnnlab/data/sample]

* MNIST: a stratified random subset, 10,000 train / 2,000 test images, each digit in the same
  proportion as in the full split (largest-remainder rounding), kept in the original order and
  written as the four canonical IDX files (gzip with zero timestamps).
* IMDB: 1,250 random reviews per label and split (2,500 train / 2,500 test), byte-identical to
  the originals, in the original layout ``aclImdb/{train,test}/{pos,neg}/<id>_<rating>.txt``
  inside ``aclImdb_sample.tar.gz`` (fixed metadata and timestamps).

The output is a pure function of the input data and ``--seed``: running it twice gives
byte-identical files.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import sys
import tarfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from rnnlab.data.idx import write_idx  # noqa: E402
from rnnlab.data.imdb import ARCHIVE, PER_LABEL, SAMPLE_ARCHIVE, SAMPLE_PER_LABEL  # noqa: E402
from rnnlab.data.imdb_archive import read_reviews  # noqa: E402
from rnnlab.data.mnist import MNIST_FILES, load_mnist  # noqa: E402

MNIST_SIZES = {"train": 10_000, "test": 2_000}


def stratified_indices(labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` indices drawn without replacement, each class in its share of ``labels``."""
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * size / len(labels)
    quota = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - quota), kind="stable")[: size - quota.sum()]:
        quota[i] += 1  # largest remainder
    chosen = [
        rng.choice(np.flatnonzero(labels == c), n, replace=False)
        for c, n in zip(classes, quota, strict=True)
    ]
    return np.sort(np.concatenate(chosen))


def make_mnist(data: Path, out: Path, rng: np.random.Generator) -> None:
    """Write the four IDX files of the stratified MNIST subset into ``out``."""
    splits = dict(zip(("train", "test"), load_mnist(data / "mnist", download=False), strict=True))
    for split, (x, y) in splits.items():
        keep = stratified_indices(y, MNIST_SIZES[split], rng)
        write_idx(x[keep], out / (MNIST_FILES[f"{split}_images"][0] + ".gz"))
        write_idx(y[keep].astype(np.uint8), out / (MNIST_FILES[f"{split}_labels"][0] + ".gz"))


def make_imdb(data: Path, out: Path, rng: np.random.Generator) -> None:
    """Write the balanced IMDB review subset as a deterministic tar.gz into ``out``."""
    reviews = read_reviews(data / "imdb" / ARCHIVE, ("train", "test"), PER_LABEL)
    files: dict[str, bytes] = {}
    for split, rev in reviews.items():
        for label, folder in ((0, "neg"), (1, "pos")):
            pool = np.flatnonzero(rev.labels == label)
            for i in np.sort(rng.choice(pool, SAMPLE_PER_LABEL, replace=False)):
                name = f"aclImdb/{split}/{folder}/{rev.ids[i]}_{rev.ratings[i]}.txt"
                files[name] = rev.texts[i].encode("utf-8")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(files[name]), 0, 0o644
            tar.addfile(info, io.BytesIO(files[name]))
    (out / SAMPLE_ARCHIVE).write_bytes(gzip.compress(buffer.getvalue(), 9, mtime=0))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=REPO / "src" / "rnnlab" / "data" / "sample")
    parser.add_argument("--seed", type=int, default=20240607)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    make_mnist(args.data, args.out, rng)
    make_imdb(args.data, args.out, rng)
    for path in sorted(args.out.iterdir()):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        print(f"{path.stat().st_size:>10,d}  {digest[:16]}  {path.name}")


if __name__ == "__main__":
    main()
