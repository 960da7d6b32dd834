"""``rnnlab inspect RUN_DIR ...``: arguments in, file list and prediction out (printing lives
here; :func:`rnnlab.inspect.inspect_run` is silent)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rnnlab import argtypes

__all__ = ["build_parser", "inspect_command", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rnnlab inspect",
        description="Run RUN_DIR's model on one review (--text) or image (--image / --index) "
        "with its gates recorded, and write gate heatmaps, gate-saturation "
        "statistics, and a token page (text) or a row-by-row prediction (images).",
    )
    p.add_argument("run_dir", help="a trained run directory (rnnlab train --out ...)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--text", help="a review, for text models")
    src.add_argument("--image", help="a 28x28 PNG or .npy image, for image models")
    src.add_argument("--wav", help="a WAV recording, for spoken-digit and CTC runs that read audio")
    src.add_argument(
        "--index",
        type=argtypes.nonnegative_int,
        help="an example of the test split, for image, audio and CTC models",
    )
    p.add_argument(
        "--out",
        help="output folder (default RUN_DIR/inspect): new or empty, or an earlier inspect "
        "output with --force; never inside a run's checkpoints/",
    )
    p.add_argument("--force", action="store_true", help="replace an earlier inspect output")
    p.add_argument(
        "--units",
        type=argtypes.nonnegative_int,
        nargs="+",
        help="units to draw (default: the most active, see --top)",
    )
    p.add_argument(
        "--top",
        type=argtypes.positive_int,
        default=16,
        help="how many of the most active units to draw by default (16)",
    )
    p.add_argument(
        "--layer", type=argtypes.nonnegative_int, default=0, help="recurrent layer, 0-based (0)"
    )
    p.add_argument(
        "--direction",
        type=argtypes.int_range(0, 1, "a direction"),
        default=0,
        help="0 forwards, 1 backwards (0)",
    )
    p.add_argument(
        "--mode",
        choices=["c", "h", "f", "z"],
        help="what the token page colours first (default c, or h without a cell "
        "state); the page's picker switches",
    )
    p.add_argument(
        "--stats-examples",
        type=argtypes.nonnegative_int,
        default=0,
        metavar="N",
        help="gate saturation over the first N test examples instead of the input "
        "alone (Karpathy et al. 2015 use the test set)",
    )
    p.add_argument(
        "--find-units",
        action="store_true",
        help="language models: rank units by their correlation with text features (inside "
        "quotes, brackets, an HTML tag or a /* comment */, position in the line) over --text",
    )
    p.add_argument("--checkpoint", choices=["best", "last"], default="best")
    p.add_argument("--data-dir", help="data root for --index (default: the run's own)")
    p.add_argument(
        "--threads", type=argtypes.threads, help="torch CPU threads (default: torch's choice)"
    )
    p.set_defaults(func=inspect_command)
    return p


def inspect_command(args: argparse.Namespace) -> int:
    """Hand the arguments to the run's kind: its task names the command that draws it
    (``task.floors.inspect``; classifiers: :func:`rnnlab.inspect.classifier.command`, language
    models: :func:`rnnlab.inspect.language.command`)."""
    from rnnlab.runs import read_config
    from rnnlab.tasks import get_task

    return get_task(read_config(args.run_dir)).floor("inspect")(args)


def main(argv: Sequence[str] | None = None) -> int:
    """The ``inspect`` verb: parse ``argv`` (everything after ``rnnlab inspect``)."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    argtypes.set_threads(args.threads)
    try:
        return args.func(args)
    except (ValueError, OSError) as exc:  # RunError, CheckpointError, PredictError, DataError...
        print(f"rnnlab inspect: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rnnlab inspect: interrupted", file=sys.stderr)
        return 130
