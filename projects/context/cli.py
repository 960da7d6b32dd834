"""``python -m projects.context``: the command-line side of the context experiment (it prints;
the functions it calls do not). Flags and defaults are those of the former
``rnnlab experiment context``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from projects.common import add_run_arguments, machine, prepare, run_command
from projects.context.experiment import ContextConfig, run_context
from projects.context.report import format_table, write_results

__all__ = ["build_parser", "context_command", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m projects.context",
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
    p.add_argument("--force", action="store_true", help="replace earlier results in --out")
    add_run_arguments(
        p,
        seeds="default 0",
        threads="on a busy machine a second thread spins in barriers; measured 0.4 s a step "
        "with 1 thread, 2-7 s with 2, at load 12 on 2 cores",
    )
    return p


def _print_progress(event: dict[str, Any]) -> None:
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
    """Run, print the tables, write the files."""
    changes: dict[str, Any] = {
        k: tuple(v) for k, v in (("seeds", args.seeds), ("cells", args.cells)) if v
    }
    if args.steps is not None:
        changes["steps"] = args.steps
    changes["sample"] = args.sample
    changes["data_dir"] = args.data_dir
    config = ContextConfig.quick(**changes) if args.quick else ContextConfig(**changes)
    out = Path(args.out or ("runs/context-quick" if args.quick else "runs/context"))
    prepare(out, args.threads, args.force)
    runs = len(config.seeds) * len(config.cells)
    print(
        f"Context use: {runs} word-level language models ({config.steps} steps of "
        f"{config.batch_size} x {config.bptt} words, H={config.hidden_size}, torch threads "
        f"{torch.get_num_threads()})",
        flush=True,
    )
    results = run_context(config, progress=_print_progress)
    paths = write_results(results, out, extra=machine(load_average=True))
    print()
    print(format_table(results))
    print(
        f"\n{runs} models in {results.wall_seconds:.0f} s. Wrote {paths['json']}, "
        f"{paths['context_png']}, {paths['cloze_png']} and {paths['table']}"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: the command line) and run the experiment."""
    return run_command(build_parser(), context_command, argv)
