"""The Free Spoken Digit Dataset (FSDD; Jakobovski et al., v1.0.10, CC BY-SA 4.0).

Recordings of the digits 0-9, mono 16-bit PCM at 8 kHz, named ``{digit}_{speaker}_{index}.wav``
with index 0-49 per digit and speaker. :func:`load_fsdd` reads them from

* the upstream archive of tag v1.0.10 (``free-spoken-digit-dataset-1.0.10.tar.gz``, which
  unpacks to ``free-spoken-digit-dataset-1.0.10/recordings/``), downloaded if missing, or
* any folder of ``{digit}_{speaker}_{index}.wav`` files (the ``recordings/`` folder, a subset),
* or the sample shipped in the package (``sample=True``: 3 speakers, 4 recordings per digit).

Every file read is checked against the upstream sha256 of that recording
(:data:`SHA256_FILE`, the list for all 3,000), so a subset verifies too; GitHub's generated
archives are not byte-stable, so the archive's own checksum is never used. A file whose name
is not in the list is refused (it is not an FSDD recording).

:func:`official_split`: indexes 0-4 are the test set, 5-49 training (the dataset's README);
``speakers`` chooses whose recordings train and whose test (``"george,lucas/jackson"``).
:func:`first_takes` picks a validation split that resembles the test: the earliest takes left
in training (indexes 5, 6, ... of every speaker and digit), not a random draw.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rnnlab.data.audio import need
from rnnlab.data.download import download_file
from rnnlab.data.errors import DataError
from rnnlab.data.paths import resolve_dataset_dir, sample_dir

__all__ = [
    "ARCHIVE",
    "FSDD_RATE",
    "Recording",
    "SHA256_FILE",
    "first_takes",
    "load_fsdd",
    "official_split",
    "parse_speakers",
]

FSDD_RATE = 8000
ARCHIVE = "free-spoken-digit-dataset-1.0.10.tar.gz"
URL = "https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/tags/v1.0.10.tar.gz"
SHA256_FILE = Path(__file__).resolve().parent / "fsdd_sha256.txt"  # upstream, all 3,000
NAME = re.compile(r"^(\d)_([a-z]+)_(\d+)\.wav$")
TEST_INDEXES = range(0, 5)  # the official split: 0-4 test, 5-49 train


@dataclass(frozen=True)
class Recording:
    """One FSDD recording: its ``digit``, ``speaker``, ``index`` and float32 ``samples`` (S,)
    at :data:`FSDD_RATE`."""

    digit: int
    speaker: str
    index: int
    samples: np.ndarray

    @property
    def name(self) -> str:
        return f"{self.digit}_{self.speaker}_{self.index}.wav"


def _checksums() -> dict[str, str]:
    sums = {}
    for line in SHA256_FILE.read_text("ascii").splitlines():
        digest, name = line.split()
        sums[name] = digest
    return sums


def _decode(name: str, data: bytes, sums: dict[str, str], where: str) -> Recording:
    soundfile = need("soundfile")
    match = NAME.match(name)
    if match is None or name not in sums:
        raise DataError(
            f"{where}: expected an FSDD recording (digit_speaker_index.wav), got {name}"
        )
    found = hashlib.sha256(data).hexdigest()
    if found != sums[name]:
        raise DataError(f"{where}: expected sha256 {sums[name]}, got {found}")
    samples, rate = soundfile.read(io.BytesIO(data), dtype="float32")
    if rate != FSDD_RATE or samples.ndim != 1:
        raise DataError(f"{where}: expected mono at {FSDD_RATE} Hz, got {samples.shape} at {rate}")
    digit, speaker, index = match.groups()
    return Recording(int(digit), speaker, int(index), samples)


def _from_folder(folder: Path, sums: dict[str, str]) -> list[Recording]:
    paths = sorted(p for p in folder.iterdir() if p.suffix == ".wav")
    return [_decode(p.name, p.read_bytes(), sums, str(p)) for p in paths]


def _from_archive(archive: Path, sums: dict[str, str]) -> list[Recording]:
    out = []
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                if member.isfile() and "/recordings/" in member.name and member.name[-4:] == ".wav":
                    data = tar.extractfile(member).read()  # type: ignore[union-attr]
                    name = member.name.rsplit("/", 1)[1]
                    out.append(_decode(name, data, sums, f"{archive}:{member.name}"))
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"{archive}: expected the FSDD v1.0.10 archive, got {exc}") from None
    return out


def load_fsdd(
    data_dir: str | os.PathLike[str] | None = None,
    sample: bool = False,
    download: bool = True,
    progress: bool = False,
) -> list[Recording]:
    """Every recording found, verified, sorted by (speaker, digit, index).

    ``data_dir``: a folder of recordings, the folder holding :data:`ARCHIVE`, or a root
    holding ``fsdd/`` (see :mod:`rnnlab.data.paths`); ``sample``: the package's sample."""
    sums = _checksums()
    if sample:
        recordings = _from_folder(sample_dir() / "fsdd", sums)
    else:
        folder = resolve_dataset_dir("fsdd", data_dir, [ARCHIVE])
        if data_dir is not None and any(Path(data_dir).expanduser().glob("*.wav")):
            folder = Path(data_dir).expanduser()  # a folder of recordings, named directly
        if folder.is_dir() and any(folder.glob("*.wav")):
            recordings = _from_folder(folder, sums)
        elif folder.is_dir() and (folder / "recordings").is_dir():
            recordings = _from_folder(folder / "recordings", sums)
        else:
            if not (folder / ARCHIVE).is_file():
                if not download:
                    raise DataError(
                        f"{folder}: expected {ARCHIVE} or a folder of FSDD recordings, got "
                        "neither and download=False"
                    )
                download_file([URL], folder / ARCHIVE, progress=progress)
            recordings = _from_archive(folder / ARCHIVE, sums)
        if not recordings:
            raise DataError(f"{folder}: expected FSDD recordings, got none")
    return sorted(recordings, key=lambda r: (r.speaker, r.digit, r.index))


def parse_speakers(spec: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``"a,b/c"`` -> (training speakers (a, b), test speakers (c,)); ``"a,b"`` -> the same
    speakers for both; ``""`` -> ((), ()): everyone."""
    train, _, test = spec.partition("/")
    names = tuple(s.strip() for s in train.split(",") if s.strip())
    tests = tuple(s.strip() for s in test.split(",") if s.strip()) if test else names
    return names, tests


def official_split(
    recordings: list[Recording], speakers: str = ""
) -> tuple[list[Recording], list[Recording]]:
    """``(train, test)``: indexes 5-49 train and 0-4 test, of the speakers ``speakers`` names
    (:func:`parse_speakers`). A test speaker absent from training is tested on all of their
    recordings (0-49): a voice the model never heard."""
    present = sorted({r.speaker for r in recordings})
    train_names, test_names = parse_speakers(speakers)
    for name in (*train_names, *test_names):
        if name not in present:
            raise DataError(f"data.speakers: expected speakers among {present}, got {name!r}")
    train_set = set(train_names or present)
    test_set = set(test_names or present)
    train = [r for r in recordings if r.speaker in train_set and r.index not in TEST_INDEXES]
    test = [
        r
        for r in recordings
        if r.speaker in test_set and (r.index in TEST_INDEXES or r.speaker not in train_set)
    ]
    if not train or not test:
        raise DataError(
            f"data.speakers: expected recordings to train and test on, got {len(train)} "
            f"training and {len(test)} test recordings for {speakers!r}"
        )
    return train, test


def first_takes(recordings: list[Recording], n: int) -> tuple[list[int], list[int]]:
    """``(kept, held)``: positions in ``recordings`` of the ``n`` with the lowest indexes,
    ties broken by (speaker, digit), held out, and of the rest. On training recordings
    (indexes 5-49) of S speakers, ``n = 10 * S * k`` holds out indexes 5 to 4 + k of every
    speaker and digit: each speaker's earliest takes after the test's 0-4, which sound more
    like the test than takes drawn at random from 5-49 (a speaker's first takes of a digit
    are the least practised)."""
    if not 0 < n < len(recordings):
        raise DataError(
            f"data.holdout: expected 1 to {len(recordings) - 1} recordings to hold out of the "
            f"{len(recordings)} training recordings, got {n}"
        )
    order = sorted(
        range(len(recordings)),
        key=lambda k: (recordings[k].index, recordings[k].speaker, recordings[k].digit),
    )
    held = sorted(order[:n])
    return sorted(order[n:]), held
