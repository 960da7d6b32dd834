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

__all__ = ["atomic_output", "atomic_write"]


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
