"""A reader for the IDX format of MNIST and its relatives (LeCun et al. 1998).

An IDX file is a 4-byte magic number ``0x00 0x00 <dtype code> <ndim>``, then ``ndim``
big-endian uint32 dimension sizes, then the array in C order, big-endian. Files may be
gzip-compressed; compression is detected from the content (the gzip magic ``1f 8b``), not from
the file name.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from pathlib import Path

import numpy as np

from rnnlab.data.errors import DataError

# dtype code -> numpy dtype (big-endian where it matters), from the IDX specification.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
GZIP_MAGIC = b"\x1f\x8b"


def read_maybe_gzip(path: str | os.PathLike[str]) -> bytes:
    """The content of ``path``, decompressed if it is gzip; corrupt gzip raises DataError."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        found = f"{type(exc).__name__}: {exc}"
        raise DataError(f"{path}: expected a readable file, got {found}") from exc
    if not raw.startswith(GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
        raise DataError(
            f"{path}: expected a complete, valid gzip stream, got {type(exc).__name__}: {exc} "
            "(truncated or corrupt file; delete it to download it again)"
        ) from exc


def parse_idx(data: bytes, source: str = "<bytes>") -> np.ndarray:
    """Parse IDX bytes into a writable native-endian array; ``source`` names it in errors."""
    if len(data) < 4:
        raise DataError(f"{source}: expected an IDX header of at least 4 bytes, got {len(data)}")
    zero, code, ndim = data[:2], data[2], data[3]
    if zero != b"\x00\x00" or code not in IDX_DTYPES or ndim == 0:
        codes = "/".join(f"0x{c:02x}" for c in IDX_DTYPES)
        raise DataError(
            f"{source}: expected IDX magic 00 00 <{codes}> <ndim >= 1>, got {data[:4].hex(' ')}"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(
            f"{source}: expected a {header}-byte header for {ndim} dims, got {len(data)} bytes"
        )
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = IDX_DTYPES[code]
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise DataError(
            f"{source}: expected {expected} bytes for a {dtype.name} array of shape {shape}, "
            f"got {len(data)}"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))  # copies: writable and native-endian


def read_idx(path: str | os.PathLike[str], sha256: str | None = None) -> np.ndarray:
    """Read an IDX file (gzip or plain) into a numpy array.

    Args:
        path: the file.
        sha256: if given, the expected sha256 hex digest of the *decompressed* content.

    Raises:
        DataError: unreadable file, corrupt gzip, bad magic number, size that does not match the
            header's dimensions, or checksum mismatch; the message names the file.
    """
    data = read_maybe_gzip(path)
    if sha256 is not None:
        found = hashlib.sha256(data).hexdigest()
        if found != sha256:
            raise DataError(
                f"{path}: expected sha256 {sha256} of the decompressed content, got {found} "
                "(corrupt or different file; delete it to download it again)"
            )
    return parse_idx(data, str(path))


def write_idx(array: np.ndarray, path: str | os.PathLike[str], compress: bool = True) -> None:
    """Write ``array`` as an IDX file (gzip with a zero timestamp when ``compress``: deterministic).

    Used by ``scripts/make_sample.py`` and the tests; not atomic (callers write fresh paths).
    """
    codes = {dtype.newbyteorder("="): code for code, dtype in IDX_DTYPES.items()}
    native = array.dtype.newbyteorder("=")
    if native not in codes:
        raise ValueError(f"write_idx expected one of {sorted(map(str, codes))}, got {array.dtype}")
    big = IDX_DTYPES[codes[native]]
    header = bytes([0, 0, codes[native], array.ndim])
    header += b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    data = header + np.ascontiguousarray(array, dtype=big).tobytes()
    if compress:
        data = gzip.compress(data, compresslevel=9, mtime=0)
    Path(path).write_bytes(data)
