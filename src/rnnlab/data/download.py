"""Verified, atomic downloads from a list of mirrors.

A download streams into a temporary file next to its destination, is checked (byte count
against ``Content-Length``, then an optional md5 of the raw bytes and an optional ``verify``
callback, e.g. the sha256 of the decompressed content), and only then renamed into place. A
failed, interrupted or mismatching download leaves nothing behind, so the next call starts
cleanly. Each mirror is tried in turn; if all fail, one :class:`DataError` lists every attempt.
"""

from __future__ import annotations

import hashlib
import http.client
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from rnnlab.data.errors import DataError
from rnnlab.data.paths import ensure_writable_dir
from rnnlab.files import atomic_output

CHUNK = 1 << 20
USER_AGENT = "rnnlab-data/0.1"


def _fetch_one(
    url: str,
    dest: Path,
    *,
    md5: str | None,
    verify: Callable[[Path], None] | None,
    progress: bool,
    timeout: float,
) -> None:
    """Download ``url`` to ``dest`` atomically, or raise (DataError / OSError / URLError)."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    digest = hashlib.md5(usedforsecurity=False)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        header = response.headers.get("Content-Length") if response.headers else None
        expected = int(header) if header and header.isdigit() else None
        bar = None
        if progress:  # imported lazily: the library is silent unless asked
            from tqdm.auto import tqdm

            bar = tqdm(total=expected, unit="B", unit_scale=True, desc=dest.name, leave=False)
        try:
            with atomic_output(dest) as handle:
                received = 0
                while chunk := response.read(CHUNK):
                    handle.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
                if expected is not None and received != expected:
                    raise DataError(
                        f"{url}: expected {expected} bytes (Content-Length), got {received}; "
                        "the download was interrupted"
                    )
                if md5 is not None and digest.hexdigest() != md5:
                    raise DataError(f"{url}: expected md5 {md5}, got {digest.hexdigest()}")
                handle.flush()
                if verify is not None:
                    verify(Path(handle.name))
        finally:
            if bar is not None:
                bar.close()


def download_file(
    urls: Sequence[str],
    dest: Path,
    *,
    md5: str | None = None,
    verify: Callable[[Path], None] | None = None,
    progress: bool = False,
    timeout: float = 60.0,
) -> Path:
    """Download the first of ``urls`` that succeeds and passes the checks to ``dest``.

    Args:
        urls: mirrors of the same file, tried in order (``http(s)://`` or ``file://``).
        dest: the final path; its directory is created and must be writable.
        md5: expected md5 hex digest of the downloaded bytes, if known.
        verify: called with the temporary file's path before it is renamed into place; it
            raises :class:`DataError` to reject the file (e.g. a sha256 of decompressed content).
        progress: show a tqdm progress bar on stderr.
        timeout: socket timeout in seconds for each mirror.

    Returns:
        ``dest``.

    Raises:
        DataError: ``urls`` is empty, the directory is unwritable, or every mirror failed; the
            message lists each URL with its error. No partial file is left behind.
    """
    if not urls:
        raise DataError(f"{dest}: expected at least one URL to download from, got none")
    ensure_writable_dir(dest.parent)
    failures = []
    for url in urls:
        try:
            _fetch_one(url, dest, md5=md5, verify=verify, progress=progress, timeout=timeout)
            return dest
        except (OSError, ValueError, http.client.HTTPException) as exc:
            # OSError: socket errors, timeouts, URLError/HTTPError; ValueError: DataError or a
            # malformed URL; HTTPException: a broken HTTP response (e.g. IncompleteRead).
            failures.append(f"  {url}: {type(exc).__name__}: {exc}")
    raise DataError(
        f"{dest}: expected a verified download from one of {len(urls)} mirror(s), got none:\n"
        + "\n".join(failures)
    )
