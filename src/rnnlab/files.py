"""Atomic file writes: a reader sees the old file or the whole new one, never a part.

The data goes to a hidden temporary file in the destination's folder, is fsynced, then renamed
over the destination (``os.replace`` is atomic on POSIX and Windows). On any exception the
temporary file is removed. The file gets the mode any new file gets (``0o666`` less the
user's umask), as ``open`` would give it, not ``tempfile``'s 0600. Run directories,
checkpoints, plots and the data caches all write through here.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

__all__ = [
    "OutputRefusedError",
    "atomic_output",
    "atomic_write",
    "check_output",
    "inside_run_checkpoints",
]


def _new_temporary(dest: Path) -> Path:
    """A new empty hidden file beside ``dest``, created with ``0o666`` less the umask."""
    while True:
        tmp = dest.parent / f".{dest.name}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:  # another writer's temporary: draw another name
            continue
        os.close(fd)  # reopened by name, so that handle.name is the path
        return tmp


@contextmanager
def atomic_output(dest: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
    """Yield a binary file that becomes ``dest`` only if the ``with`` block succeeds
    (``handle.name`` is the temporary file's path, so the block may verify what it wrote)."""
    dest = Path(dest)
    tmp = _new_temporary(dest)
    try:
        with open(tmp, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_output`)."""
    with atomic_output(path) as handle:
        handle.write(data)


class OutputRefusedError(OSError):
    """An output path that a command will not write: an existing file (without ``force``) or a
    place inside a run's ``checkpoints/`` folder. An ``OSError``, so every command reports it
    as a user's error (exit status 2)."""


RUN_MARKERS = ("config.json", "run.json", ".rnnlab.lock")  # what makes a folder a run directory


def inside_run_checkpoints(path: str | os.PathLike[str]) -> Path | None:
    """The run ``checkpoints/`` folder that ``path`` is in (or is), else None: a folder named
    ``checkpoints`` whose parent holds a run's ``config.json``, ``run.json`` or claim."""
    resolved = Path(path).resolve()
    for folder in (resolved, *resolved.parents):
        if folder.name == "checkpoints" and any(
            (folder.parent / name).is_file() for name in RUN_MARKERS
        ):
            return folder
    return None


def check_output(path: str | os.PathLike[str], force: bool = False, flag: str = "--out") -> None:
    """Refuse to write ``path`` when it is inside a run's ``checkpoints/`` (always: a
    checkpoint's tensors are checked against their sha256 before every use, so one overwritten
    file loses the run) or already exists and ``force`` is false."""
    path = Path(path)
    checkpoints = inside_run_checkpoints(path)
    if checkpoints is not None:
        raise OutputRefusedError(
            f"{flag} {path}: expected a place outside a run's checkpoints/ folder, got one "
            f"inside {checkpoints} (not even with --force: the run's checkpoints would be lost)"
        )
    if path.exists() and not force:
        what = "folder" if path.is_dir() else "file"
        raise OutputRefusedError(
            f"{flag} {path}: expected a new file, got an existing {what} (add --force to "
            "replace it, or choose another path)"
        )
