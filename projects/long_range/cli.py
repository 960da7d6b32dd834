"""``python -m projects.long_range``: the command-line side of the long-range experiment (it
prints; the functions it calls do not). Flags and defaults are those of the former
``rnnlab experiment long-range``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

import rnnlab.argtypes as argtypes
from projects.common import add_run_arguments, machine, prepare, run_command
from projects.long_range.experiment import LongRangeConfig, run_long_range
from projects.long_range.report import format_table, write_results

__all__ = ["build_parser", "long_range_command", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m projects.long_range",
        description="Train a vanilla RNN, an LSTM and a GRU (same width, optimiser, steps, "
        "data and seeds) to recall the class symbol shown at step 0 after GAP steps "
        "of noise, for each gap; print the accuracy table and write results.json, "
        "accuracy_vs_gap.png and table.md.",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="one seed, gaps 10 and 100, 1500 steps (a few minutes on 2 CPU cores)",
    )
    p.add_argument("--out", help="folder for the results (default runs/long-range[-quick])")
    p.add_argument("--force", action="store_true", help="replace earlier results in --out")
    p.add_argument(
        "--gaps",
        type=argtypes.positive_int,
        nargs="+",
        help="gaps to run (default 10 20 50 100 200)",
    )
    add_run_arguments(
        p,
        seeds="default 0 1 2",
        threads="these models are tiny, a second thread only adds contention on a busy machine",
    )
    return p


def _print_progress(event: dict[str, Any]) -> None:
    if event["event"] != "run":
        return
    print(
        f"[{event['index']}/{event['total']}] gap {event['gap']:>4d} {event['cell']:>4s} "
        f"seed {event['seed']}: accuracy {event['accuracy']:.3f} ({event['seconds']:.1f} s)",
        flush=True,
    )


def long_range_command(args: argparse.Namespace) -> int:
    """Run, print the table, write the files."""
    changes = {
        k: tuple(v)
        for k, v in (("gaps", args.gaps), ("seeds", args.seeds), ("cells", args.cells))
        if v
    }
    if args.steps is not None:
        changes["steps"] = args.steps
    config = LongRangeConfig.quick(**changes) if args.quick else LongRangeConfig(**changes)
    out = Path(args.out or ("runs/long-range-quick" if args.quick else "runs/long-range"))
    prepare(out, args.threads, args.force)
    runs = len(config.gaps) * len(config.seeds) * len(config.cells)
    print(
        f"Noisy recall: {runs} models (gaps {list(config.gaps)}, seeds {list(config.seeds)}, "
        f"{config.steps} steps each, torch threads {torch.get_num_threads()})",
        flush=True,
    )
    results = run_long_range(config, progress=_print_progress)
    paths = write_results(results, out, extra=machine())
    print()
    print(format_table(results))
    print(
        f"\n{runs} models in {results.wall_seconds:.0f} s. Wrote {paths['json']}, "
        f"{paths['png']} and {paths['table']}"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: the command line) and run the experiment."""
    return run_command(build_parser(), long_range_command, argv)
