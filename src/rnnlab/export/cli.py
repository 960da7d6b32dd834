"""The ``rnnlab export`` command."""

from __future__ import annotations

import argparse
import sys

from rnnlab import argtypes

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    from rnnlab.export.api import DEFAULT_OPSET

    p = argparse.ArgumentParser(
        prog="rnnlab export",
        description="Write a trained run's model as an ONNX file with dynamic batch and length "
        "axes (and a sidecar FILE.json with the versions and opset).",
    )
    p.add_argument("run_dir")
    p.add_argument("--format", choices=["onnx"], default="onnx", dest="fmt")
    p.add_argument(
        "--out",
        help="file to write (default RUN_DIR/model.onnx); never inside a run's checkpoints/",
    )
    p.add_argument(
        "--force", action="store_true", help="replace an existing file (and its sidecar)"
    )
    p.add_argument("--checkpoint", choices=["best", "last"], default="best")
    p.add_argument(
        "--opset",
        type=argtypes.positive_int,
        default=DEFAULT_OPSET,
        help=f"default {DEFAULT_OPSET}",
    )
    p.add_argument(
        "--threads", type=argtypes.threads, help="torch CPU threads (default: torch's choice)"
    )
    return p


def main(argv: list[str]) -> int:
    """``rnnlab export RUN --format onnx [--out FILE] [--force] [--checkpoint best|last]``."""
    args = build_parser().parse_args(argv)
    argtypes.set_threads(args.threads)
    from rnnlab.checkpoint import CheckpointError
    from rnnlab.config import ConfigError
    from rnnlab.export.api import ExportError, export_run
    from rnnlab.runs import RunError

    try:
        import onnx  # noqa: F401
    except ModuleNotFoundError:
        print(
            "rnnlab export: error: expected the onnx package, got none installed "
            "(pip install 'rnnlab[export]')",
            file=sys.stderr,
        )
        return 2
    try:
        result = export_run(
            args.run_dir, args.fmt, args.out, args.checkpoint, args.opset, args.force
        )
    except (ExportError, RunError, CheckpointError, ConfigError, OSError) as exc:
        print(f"rnnlab export: error: {exc}", file=sys.stderr)
        return 2
    inputs = result.metadata["inputs"]
    print(f"wrote {result.path} (opset {result.metadata['opset']}, inputs {inputs})")
    return 0
