"""One writer per run directory.

A process that writes a run (``train``, ``train --resume``) holds an exclusive ``fcntl.flock``
on ``RUN_DIR/.rnnlab.lock`` for its whole life, with its PID written inside. The OS releases the
lock when the process ends, however it ends (``kill -9`` included), so a lock is never stale; a
second writer is refused with the holder's PID. A fresh ``--out`` is claimed the same way: the
directory is made (or found empty), then locked, then checked under the lock, so of two
``rnnlab train --out X`` started together exactly one wins.

A directory whose run was killed before its first checkpoint (``checkpoints/last.json``) holds
only what such a run writes (the lock file, ``config.json``, ``run.json``, ``metrics.jsonl``, the
task's artifacts, a tensor file or temporary files): nothing there can be resumed, so a later
``--out`` of the same directory clears it and claims it again once its lock is free.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from rnnlab.runs.layout import RunError

__all__ = ["LOCK_NAME", "RunLock", "claim_new_run_dir"]

LOCK_NAME = ".rnnlab.lock"
# what a run writes before its first checkpoint (the task's artifacts are added)
_EARLY_FILES = ("config.json", "run.json", "metrics.jsonl", "learning_curve.png", "checkpoints")


def _holder(path: Path) -> str:
    try:
        return path.read_text("utf-8").strip() or "unknown"
    except OSError:
        return "unknown"


class RunLock:
    """An exclusive flock on a run directory's lock file; :meth:`release` or process exit
    frees it."""

    def __init__(self, fd: int, path: Path) -> None:
        self.fd, self.path = fd, path

    @classmethod
    def acquire(cls, run_dir: Path) -> RunLock:
        """Lock ``run_dir`` or raise RunError naming the process that holds it."""
        path = (Path(run_dir) / LOCK_NAME).absolute()
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise RunError(
                f"{run_dir}: expected a writable run directory, got {type(exc).__name__}: {exc}"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = _holder(path)
            raise RunError(
                f"{Path(run_dir).absolute()}: expected no other process writing this run, got "
                f"PID {holder} holding {path} (wait for it to finish, or stop it with "
                f"`kill {holder}` and then resume with `rnnlab train --resume {run_dir}`)"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(fd, path)

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # releases the flock
            self.fd = -1


def _abandoned(run_dir: Path, entries: list[Path], artifact_names: Iterable[str]) -> bool:
    """Whether ``entries`` are only what a run writes before its first checkpoint."""
    known = {*_EARLY_FILES, *artifact_names}
    if (run_dir / "checkpoints" / "last.json").exists() or (run_dir / "report.json").exists():
        return False
    for entry in entries:
        temporary = entry.name.startswith(".") and entry.name.endswith(".tmp")
        if entry.name not in known and not temporary:
            return False
    checkpoints = run_dir / "checkpoints"
    return not checkpoints.is_dir() or all(
        p.suffix in (".safetensors", ".tmp") for p in checkpoints.iterdir()
    )


def claim_new_run_dir(out: Path, artifact_names: Iterable[str] = ()) -> RunLock:
    """Make ``out`` (or take it empty, or as an abandoned claim: see the module docstring) and
    lock it for a fresh run; RunError if it holds anything else or another process has it."""
    if out.exists() and not out.is_dir():
        raise RunError(
            f"--out {out}: expected a new or empty directory, got an existing file "
            "(choose another --out)"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunError(
            f"--out {out}: expected a writable directory, got {type(exc).__name__}: {exc}"
        ) from exc
    lock = RunLock.acquire(out)
    entries = [p for p in out.iterdir() if p.name != LOCK_NAME]
    if entries:
        if not _abandoned(out, entries, artifact_names):
            lock.release()
            raise RunError(
                f"--out {out}: expected a new or empty directory, got an existing non-empty "
                "directory (resume a run with --resume, or choose another --out)"
            )
        for entry in entries:  # a claim whose run died before its first checkpoint
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    return lock
