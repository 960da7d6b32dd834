"""Writing an inspection's files: the output folder appears whole or not at all. Every file is
rendered in memory, written into a temporary folder beside the destination, and the folder is
renamed into place; an earlier inspect output there (marked by :data:`MARKER`) is replaced when
the user says so (``--force``)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

from rnnlab.files import inside_run_checkpoints
from rnnlab.inspect.trace import InspectError

__all__ = ["MARKER", "check_out", "json_bytes", "publish"]

MARKER = "inspect.json"  # names a folder as ours, so a later run may replace it


def check_out(out: Path, force: bool = False) -> None:
    """``out`` must be new, empty, or (with ``force``) an earlier inspect output, and never
    inside a run's ``checkpoints/``; its parent must be writable."""
    checkpoints = inside_run_checkpoints(out)
    if checkpoints is not None:
        raise InspectError(
            f"--out {out}: expected a folder outside a run's checkpoints/, got one inside "
            f"{checkpoints} (not even with --force)"
        )
    if out.exists() and not out.is_dir():
        raise InspectError(f"--out {out}: expected a folder, got a file")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise InspectError(
                f"--out {out}: expected a new or empty folder (or an earlier inspect "
                "output, with --force), got a folder with other files"
            )
        if not force:
            raise InspectError(
                f"--out {out}: expected a new or empty folder, got an earlier inspect output "
                "(add --force to replace it, or choose another --out)"
            )
    ancestor = out.parent  # checked without creating anything: a later error leaves no trace
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InspectError(
            f"--out {out}: expected a writable location, got {ancestor} which is a file"
        )
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise InspectError(
            f"--out {out}: expected a writable location, got no write permission in {ancestor}"
        )


def _sibling(out: Path, what: str) -> Path:
    """A new empty folder beside ``out`` (made with ``mkdir``, so the umask applies)."""
    path = out.parent / f".{out.name}.{what}.{secrets.token_hex(4)}"
    path.mkdir()
    return path


def publish(files: dict[str, bytes], out: Path) -> dict[str, Path]:
    """Write ``files`` into a temporary sibling folder, then rename it to ``out`` (an earlier
    output there is moved aside first and removed after)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(out, "tmp")
    old = None
    try:
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        if out.exists():
            old = _sibling(out, "old")
            os.replace(out, old / "previous")
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and (old / "previous").exists() and not out.exists():
            os.replace(old / "previous", out)  # put the earlier output back
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return {name: out / name for name in files}


def json_bytes(values: Any) -> bytes:
    return (json.dumps(values, indent=1) + "\n").encode("utf-8")
