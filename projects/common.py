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

import rnnlab.argtypes as argtypes
from rnnlab.allocator import retain_freed_memory, retention_wanted
from rnnlab.cli.kernels import ensure_kernels
from rnnlab.denormals import flush_denormals, flush_wanted
from rnnlab.files import OutputRefusedError, inside_run_checkpoints
from rnnlab.nn.registry import CELL_NAMES

__all__ = ["add_run_arguments", "machine", "prepare", "run_command"]


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


def check_new_results(out: Path, force: bool) -> None:
    """``out`` may not be inside a run's ``checkpoints/``, nor hold earlier results
    (``results.json``) unless ``force``: rnnlab's rule for every command that writes."""
    checkpoints = inside_run_checkpoints(out)
    if checkpoints is not None:
        raise OutputRefusedError(
            f"--out {out}: expected a folder outside a run's checkpoints/, got one inside "
            f"{checkpoints}"
        )
    if (out / "results.json").exists() and not force:
        raise OutputRefusedError(
            f"--out {out}: expected a folder without earlier results, got {out / 'results.json'}"
            " (add --force to replace them, or choose another --out)"
        )


def prepare(out: Path, threads: int, force: bool = False) -> None:
    """Refuse an unwritable ``--out``, a place inside a run's ``checkpoints/``, earlier results
    (without ``force``) or a bad ``--threads`` before any slow work, then use ``threads`` torch
    threads."""
    check_new_results(out, force)
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
    built first, announced on stderr, so no model's time includes the compiler; subnormal
    floats are flushed to zero unless ``RNNLAB_FLUSH_DENORMALS=0``, see
    :mod:`rnnlab.denormals`). A user error
    (a bad value, an unwritable folder, a missing data file: ValueError, OSError) is one line
    on stderr and exit status 2."""
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    if retention_wanted():
        retain_freed_memory()
    ensure_kernels(sys.stderr)
    if flush_wanted():
        flush_denormals()  # after the build: every thread of the pool (rnnlab.denormals)
    try:
        return command(args)
    except (ValueError, OSError) as exc:  # rnnlab's DataError is a ValueError
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130


def add_run_arguments(p: argparse.ArgumentParser, *, seeds: str, threads: str) -> None:
    """The flags both projects take for what they train: ``--seeds``, ``--cells`` (any cell of
    the registry), ``--steps`` and ``--threads`` (default 1; ``threads`` says why)."""
    p.add_argument("--seeds", type=argtypes.nonnegative_int, nargs="+", help=f"seeds ({seeds})")
    p.add_argument("--cells", nargs="+", choices=CELL_NAMES, help="cells to compare")
    p.add_argument(
        "--steps", type=argtypes.positive_int, help="training steps per model (default 3000)"
    )
    p.add_argument(
        "--threads",
        type=argtypes.threads,
        default=1,
        help=f"torch CPU threads (default 1: {threads})",
    )
