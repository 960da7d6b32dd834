"""What both projects' command lines share: checking ``--out`` and ``--threads`` before any
slow work, and describing the machine in results.json."""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from rnnlab.allocator import retain_freed_memory, retention_wanted
from rnnlab.cli.kernels import ensure_kernels

__all__ = ["machine", "prepare", "run_command"]


def check_writable(out: Path) -> None:
    """Fail before minutes of training, not after: ``out`` must be a folder we can write."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise OSError(
            f"--out {out}: expected a writable folder, got {exc.strerror or exc}"
        ) from exc


def prepare(out: Path, threads: int) -> None:
    """Refuse an unwritable ``--out`` or a bad ``--threads`` before any slow work, then use
    ``threads`` torch threads."""
    check_writable(out)
    if threads < 1:
        raise ValueError(f"--threads expected a positive int, got {threads}")
    torch.set_num_threads(threads)


def machine(load_average: bool = False) -> dict[str, dict[str, object]]:
    """Where an experiment ran, for its results.json (with the load average if asked)."""
    values: dict[str, object] = {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if load_average:
        values["load_average"] = os.getloadavg()
    return {"machine": values}


def run_command(
    parser: argparse.ArgumentParser,
    command: Callable[[argparse.Namespace], int],
    argv: Sequence[str] | None,
) -> int:
    """Parse ``argv`` and run ``command`` as ``rnnlab train`` runs (glibc keeps freed memory
    unless ``RNNLAB_RETAIN_MEMORY=0``, see :mod:`rnnlab.allocator`; the compiled kernels are
    built first, announced on stderr, so no model's time includes the compiler). A user error
    (a bad value, an unwritable folder, a missing data file: ValueError, OSError) is one line
    on stderr and exit status 2."""
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if retention_wanted():
        retain_freed_memory()
    ensure_kernels(sys.stderr)
    try:
        return command(args)
    except (ValueError, OSError) as exc:  # rnnlab's DataError is a ValueError
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130
