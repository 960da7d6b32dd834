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

__all__ = ["build_parser", "context_command", "long_range_command", "main"]


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
    _add_context_parser(sub)
    return parser


def _add_context_parser(sub: Any) -> None:
    p = sub.add_parser(
        "context",
        help="RNN vs LSTM vs GRU language models: how far back do they look on real text?",
        description="Train a vanilla RNN, an LSTM and a GRU word-level language model (same "
        "data, size, optimiser, steps and seeds) on IMDB reviews; measure the test loss when "
        "each sees only the last k tokens, and the cloze probe 'I grew up in France ... [n "
        "words] ... I speak fluent ___' against n; print the tables and write results.json, "
        "loss_vs_context.png, cloze_vs_distance.png and table.md.",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="small models (128 units, 5,000 words), 1,200 steps, 1,000 test targets: under 10 "
        "minutes on 2 idle CPU cores",
    )
    p.add_argument("--sample", action="store_true", help="the IMDB sample shipped with rnnlab")
    p.add_argument("--data-dir", help="folder holding aclImdb_v1.tar.gz (default: rnnlab's)")
    p.add_argument("--out", help="folder for the results (default runs/context[-quick])")
    p.add_argument("--seeds", type=int, nargs="+", help="seeds (default 0)")
    p.add_argument("--cells", nargs="+", choices=["rnn", "lstm", "gru"], help="cells to compare")
    p.add_argument("--steps", type=int, help="training steps per model (default 3000)")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: on a busy machine a second thread spins in "
        "barriers; measured 0.4 s a step with 1 thread, 2-7 s with 2, at load 12 on 2 cores)",
    )
    p.set_defaults(func=context_command)


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
    _prepare(out, args.threads)
    runs = len(config.gaps) * len(config.seeds) * len(config.cells)
    print(
        f"Noisy recall: {runs} models (gaps {list(config.gaps)}, seeds {list(config.seeds)}, "
        f"{config.steps} steps each, torch threads {torch.get_num_threads()})",
        flush=True,
    )
    results = run_long_range(config, progress=_print_progress)
    machine = _machine()
    paths = write_results(results, out, extra=machine)
    print()
    print(format_table(results))
    print(
        f"\n{runs} models in {results.wall_seconds:.0f} s. Wrote {paths['json']}, "
        f"{paths['png']} and {paths['table']}"
    )
    return 0


def _print_context_progress(event: dict[str, Any]) -> None:
    if event["event"] == "data":
        print(
            f"{event['source']}: {event['train_tokens']:,} training words, vocabulary "
            f"{event['vocab_size']:,}, {event['test_tokens_used']:,} test words; cloze "
            f"languages: {', '.join(lang for _, lang in event['probe']['pairs'])}",
            flush=True,
        )
    elif event["event"] == "train":
        print(
            f"  {event['cell']} seed {event['seed']} step {event['step']}: "
            f"train loss {event['loss']:.3f}",
            flush=True,
        )
    elif event["event"] == "run":
        print(
            f"[{event['index']}/{event['total']}] {event['cell']} seed {event['seed']}: "
            f"test loss {event['test_loss']:.3f} (train {event['train_seconds']:.0f} s, "
            f"eval {event['eval_seconds']:.0f} s)",
            flush=True,
        )


def context_command(args: argparse.Namespace) -> int:
    """``rnnlab experiment context``: run, print the tables, write the files."""
    import torch

    from rnnlab.experiments.context import ContextConfig, run_context
    from rnnlab.experiments.context_report import format_table, write_results

    changes: dict[str, Any] = {
        k: tuple(v) for k, v in (("seeds", args.seeds), ("cells", args.cells)) if v
    }
    if args.steps is not None:
        changes["steps"] = args.steps
    changes["sample"] = args.sample
    changes["data_dir"] = args.data_dir
    config = ContextConfig.quick(**changes) if args.quick else ContextConfig(**changes)
    out = Path(args.out or ("runs/context-quick" if args.quick else "runs/context"))
    _prepare(out, args.threads)
    runs = len(config.seeds) * len(config.cells)
    print(
        f"Context use: {runs} word-level language models ({config.steps} steps of "
        f"{config.batch_size} x {config.bptt} words, H={config.hidden_size}, torch threads "
        f"{torch.get_num_threads()})",
        flush=True,
    )
    results = run_context(config, progress=_print_context_progress)
    machine = _machine(load_average=True)
    paths = write_results(results, out, extra=machine)
    print()
    print(format_table(results))
    print(
        f"\n{runs} models in {results.wall_seconds:.0f} s. Wrote {paths['json']}, "
        f"{paths['context_png']}, {paths['cloze_png']} and {paths['table']}"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The ``experiment`` verb: parse ``argv`` (everything after ``rnnlab experiment``)."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        return args.func(args)
    except (ValueError, OSError) as exc:  # DataError is a ValueError
        print(f"rnnlab experiment {args.experiment}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rnnlab experiment {args.experiment}: interrupted", file=sys.stderr)
        return 130


def _prepare(out: Path, threads: int) -> None:
    """Refuse an unwritable ``--out`` or a bad ``--threads`` before any slow work, then use
    ``threads`` torch threads."""
    import torch

    _check_writable(out)
    if threads < 1:
        raise ValueError(f"--threads expected a positive int, got {threads}")
    torch.set_num_threads(threads)


def _machine(load_average: bool = False) -> dict[str, dict[str, object]]:
    """Where an experiment ran, for its results.json (with the load average if asked)."""
    import torch

    machine: dict[str, object] = {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if load_average:
        machine["load_average"] = os.getloadavg()
    return {"machine": machine}
