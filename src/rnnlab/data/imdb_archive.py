"""Streaming reader for the Large Movie Review Dataset archive (Maas et al. 2011).

The archive keeps the original layout ``aclImdb/{train,test}/{pos,neg,unsup}/<id>_<rating>.txt``
(positive reviews are rated 7-10, negative 1-4, unlabelled ones 0). It is read in one streaming
pass without extracting anything to disk. An archive is accepted by its contents: every
requested split must hold exactly the expected number of reviews per label.
"""

from __future__ import annotations

import gzip
import re
import tarfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import IO, NamedTuple

import numpy as np

from rnnlab.data.errors import DataError

SPLITS = ("train", "test", "unsup")
_MEMBER = re.compile(r"^(?:\./)?aclImdb/(train|test)/(pos|neg|unsup)/(\d+)_(\d+)\.txt$")
_LABEL = {"neg": 0, "pos": 1, "unsup": -1}


class Reviews(NamedTuple):
    """The reviews of one split, ordered by label (negative first), then by file id."""

    texts: list[str]
    labels: np.ndarray  # int64 (N,): 1 positive, 0 negative, -1 unlabelled
    ratings: np.ndarray  # int64 (N,): 1-4 negative, 7-10 positive, 0 unlabelled
    ids: np.ndarray  # int64 (N,): the <id> in the file name


def _open_maybe_gzip(path: Path) -> IO[bytes]:
    """``path`` opened for reading, through gzip (which checks the CRC at the end) if it is one."""
    with open(path, "rb") as handle:
        magic = handle.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")


def _expected_counts(split: str, per_label: int) -> dict[str, int]:
    """Reviews expected per label folder; ``unsup`` is 4x a labelled folder (50,000 in v1.0)."""
    if split == "unsup":
        return {"unsup": 4 * per_label}
    return {"neg": per_label, "pos": per_label}


def read_reviews(archive: Path, splits: Sequence[str], per_label: int) -> dict[str, Reviews]:
    """Read the requested splits of ``archive`` in one streaming pass.

    Args:
        archive: the ``.tar.gz`` (or uncompressed ``.tar``) file.
        splits: a subset of ``("train", "test", "unsup")``; the key is ``unsup`` for
            ``aclImdb/train/unsup``.
        per_label: the number of reviews expected in each of ``{split}/pos`` and
            ``{split}/neg`` (12,500 in v1.0).

    Raises:
        DataError: unreadable, truncated or corrupt archive, a review that is not UTF-8, or a
            split whose review count differs from the expected one.
    """
    unknown = [s for s in splits if s not in SPLITS]
    if unknown:
        raise ValueError(f"read_reviews expected splits among {SPLITS}, got {unknown}")
    found: dict[tuple[str, str], list[tuple[int, int, str]]] = {}
    try:
        with _open_maybe_gzip(archive) as raw, tarfile.open(fileobj=raw, mode="r|") as stream:
            for member in stream:
                match = _MEMBER.match(member.name)
                if match is None or not member.isfile():
                    continue
                split, folder, file_id, rating = match.groups()
                key = "unsup" if folder == "unsup" else split
                if key not in splits:
                    continue
                handle = stream.extractfile(member)
                assert handle is not None  # a regular file always has content
                text = handle.read().decode("utf-8")
                found.setdefault((key, folder), []).append((int(file_id), int(rating), text))
            # tarfile stops quietly at a garbled header; reading gzip to its end checks its CRC
            while raw.read(1 << 20):
                pass
    except UnicodeDecodeError as exc:
        raise DataError(f"{archive}: expected UTF-8 review text, got {exc}") from exc
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise DataError(
            f"{archive}: expected a complete tar archive of the aclImdb reviews, got "
            f"{type(exc).__name__}: {exc} (truncated or corrupt; delete it to download again)"
        ) from exc
    return {split: _collect(archive, split, found, per_label) for split in splits}


def _collect(
    archive: Path,
    split: str,
    found: dict[tuple[str, str], list[tuple[int, int, str]]],
    per_label: int,
) -> Reviews:
    """Check the counts of one split and assemble its Reviews in canonical order."""
    rows: list[tuple[int, int, int, str]] = []  # (label, id, rating, text)
    for folder, expected in _expected_counts(split, per_label).items():
        entries = found.get((split, folder), [])
        if len(entries) != expected:
            parent = "train" if split == "unsup" else split
            raise DataError(
                f"{archive}: expected {expected} reviews in aclImdb/{parent}/{folder}, "
                f"got {len(entries)}"
            )
        rows.extend((_LABEL[folder], file_id, rating, text) for file_id, rating, text in entries)
    rows.sort(key=lambda row: (row[0], row[1]))
    return Reviews(
        texts=[row[3] for row in rows],
        labels=np.array([row[0] for row in rows], dtype=np.int64),
        ratings=np.array([row[2] for row in rows], dtype=np.int64),
        ids=np.array([row[1] for row in rows], dtype=np.int64),
    )
