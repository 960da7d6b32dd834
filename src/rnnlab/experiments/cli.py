"""``rnnlab experiment VERB ...``: the command-line side of the experiments (it prints; the
library functions it calls do not)."""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["build_parser", "long_range_command", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rnnlab experiment", description="Experiments from the tutorial, measured."
    )
    sub = parser.add_subparsers(dest="experiment", metavar="EXPERIMENT", required=True)
    p = sub.add_parser(
        "long-range",
        help="RNN vs LSTM vs GRU: recall a symbol across a gap of noise",
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
    p.add_argument("--gaps", type=int, nargs="+", help="gaps to run (default 10 20 50 100 200)")
    p.add_argument("--seeds", type=int, nargs="+", help="seeds (default 0 1 2)")
    p.add_argument("--cells", nargs="+", choices=["rnn", "lstm", "gru"], help="cells to compare")
    p.add_argument("--steps", type=int, help="training steps per model (default 3000)")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: these models are tiny, a second thread "
        "only adds contention on a busy machine)",
    )
    p.set_defaults(func=long_range_command)
    return parser


def _check_writable(out: Path) -> None:
    """Fail before minutes of training, not after: ``out`` must be a folder we can write."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise OSError(
            f"--out {out}: expected a writable folder, got {exc.strerror or exc}"
        ) from exc


def _print_progress(event: dict[str, Any]) -> None:
    if event["event"] != "run":
        return
    print(
        f"[{event['index']}/{event['total']}] gap {event['gap']:>4d} {event['cell']:>4s} "
        f"seed {event['seed']}: accuracy {event['accuracy']:.3f} ({event['seconds']:.1f} s)",
        flush=True,
    )


def long_range_command(args: argparse.Namespace) -> int:
    """``rnnlab experiment long-range``: run, print the table, write the files."""
    import torch

    from rnnlab.experiments.long_range import LongRangeConfig, run_long_range
    from rnnlab.experiments.report import format_table, write_results

    changes = {
        k: tuple(v)
        for k, v in (("gaps", args.gaps), ("seeds", args.seeds), ("cells", args.cells))
        if v
    }
    if args.steps is not None:
        changes["steps"] = args.steps
    config = LongRangeConfig.quick(**changes) if args.quick else LongRangeConfig(**changes)
    out = Path(args.out or ("runs/long-range-quick" if args.quick else "runs/long-range"))
    _check_writable(out)
    if args.threads < 1:
        raise ValueError(f"--threads expected a positive int, got {args.threads}")
    torch.set_num_threads(args.threads)
    runs = len(config.gaps) * len(config.seeds) * len(config.cells)
    print(
        f"Noisy recall: {runs} models (gaps {list(config.gaps)}, seeds {list(config.seeds)}, "
        f"{config.steps} steps each, torch threads {torch.get_num_threads()})",
        flush=True,
    )
    results = run_long_range(config, progress=_print_progress)
    machine = {
        "machine": {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
        }
    }
    paths = write_results(results, out, extra=machine)
    print()
    print(format_table(results))
    print(
        f"\n{runs} models in {results.wall_seconds:.0f} s. Wrote {paths['json']}, "
        f"{paths['png']} and {paths['table']}"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The ``experiment`` verb: parse ``argv`` (everything after ``rnnlab experiment``)."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        return args.func(args)
    except (ValueError, OSError) as exc:
        print(f"rnnlab experiment {args.experiment}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rnnlab experiment {args.experiment}: interrupted", file=sys.stderr)
        return 130
