"""The ``rnnlab`` command: one entry point, one verb per task.

Every verb is a function ``<verb>_command(args) -> int`` calling library functions that can be
imported on their own (:func:`rnnlab.runs.train`, :func:`rnnlab.predict.evaluate_run`, ...).
Verbs that other parts of the package provide (``bench``, ``inspect``, ``export``...) are
registered in :data:`PLUGIN_VERBS`: each is a module with ``main(argv: list[str]) -> int``
that parses its own arguments; the command hands it everything after the verb. ``experiment``
left the package for the checkout's ``projects/`` folder: it only says where to find it.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shlex
import sys
import textwrap
import warnings
from collections.abc import Sequence

from rnnlab import argtypes
from rnnlab.allocator import retain_freed_memory, retention_wanted
from rnnlab.config import ConfigError, list_presets, load_preset
from rnnlab.denormals import flush_denormals, flush_wanted

__all__ = ["PLUGIN_VERBS", "build_parser", "main"]

# verb -> (module providing main(argv) -> int, one-line help)
PLUGIN_VERBS: dict[str, tuple[str, str]] = {
    "bench": ("rnnlab.bench", "benchmark rnnlab against torch.nn and Keras"),
    "inspect": ("rnnlab.inspect", "draw a trained LSTM's gates and cell states"),
    "build-kernels": ("rnnlab.cli.kernels", "compile the C++ LSTM/GRU kernels now (once)"),
    "info": ("rnnlab.cli.info", "versions, CPU capabilities and the backend rnnlab picks"),
    "export": ("rnnlab.export", "export a trained run to ONNX"),
    "serve": ("rnnlab.serve", "watch trained runs think, live in the browser"),
}

# Verbs that train or run models, for which glibc keeps freed memory for reuse (rnnlab.allocator;
# RNNLAB_RETAIN_MEMORY=0 turns it off). bench decides with its own --retain-memory flag.
_RETAIN_MEMORY_VERBS = ("train", "evaluate", "predict", "quantize")
# Verbs that run models: the kernels are built before them (rnnlab.cli.kernels), announced, so
# no epoch's time includes the compiler.
_MODEL_VERBS = (
    "train",
    "evaluate",
    "predict",
    "inspect",
    "serve",
    "generate",
    "score",
    "transcribe",
    "translate",
    "quantize",
)


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a preset into a run directory",
        description="Train PRESET (see `rnnlab presets`) into a run directory, or "
        "continue an interrupted run with --resume.",
    )
    p.add_argument("preset", nargs="?", help="preset name (optional with --resume)")
    p.add_argument(
        "--data-dir",
        help="data root holding mnist/ and imdb/, or a dataset folder "
        "(default: the loaders' cache, downloading if needed)",
    )
    p.add_argument("--out", help="run directory to create (default runs/<preset>-<time>)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting, e.g. --set train.epochs=5 or "
        "--set data.path=DIR (any MNIST-layout dataset); repeatable",
    )
    p.add_argument("--resume", metavar="RUN_DIR", help="continue this run from its last checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--threads",
        type=argtypes.threads,
        help="torch CPU threads (default: torch's choice; "
        "1 is often faster on a machine shared with other jobs)",
    )
    p.add_argument(
        "--nproc",
        type=argtypes.positive_int,
        metavar="N",
        help="data-parallel training in N "
        "processes on this machine (for several machines, start `rnnlab train` "
        "under torchrun; see docs/distributed.md)",
    )
    p.add_argument(
        "--dist-timeout",
        type=argtypes.positive_float,
        default=300.0,
        metavar="SECONDS",
        help="data parallelism: how long a rank waits for the others before failing (default 300)",
    )
    p.set_defaults(func=_train)


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="evaluate a run's checkpoint on a split",
        description="Loss and the task's metrics (accuracy; bpc or perplexity for a language "
        "model) of RUN_DIR's checkpoint on a data split.",
    )
    p.add_argument("run_dir")
    p.add_argument("--data-dir", help="data root (default: the one the run was trained on)")
    p.add_argument(
        "--checkpoint",
        choices=["best", "last", "int8"],
        default="best",
        help="int8: the run's int8 model, made by `rnnlab quantize` (default best)",
    )
    p.add_argument("--split", choices=["test", "val", "train"], default="test")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--threads", type=argtypes.threads, help="torch CPU threads (default: torch's choice)"
    )
    p.set_defaults(func=_evaluate)


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="classify reviews or images with a trained run",
        description="Print the label and its probability for each input. An input the "
        "model cannot take is reported (by its line number for --file) and the others are "
        "still answered; the exit status is then 1.",
    )
    p.add_argument("run_dir")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", action="append", help="a review (repeatable)")
    src.add_argument("--file", help="a UTF-8 text file with one review per line")
    src.add_argument("--image", action="append", help="a 28x28 PNG or .npy image (repeatable)")
    src.add_argument("--wav", action="extend", nargs="+", help="WAV recordings (speech runs)")
    p.add_argument(
        "--checkpoint",
        choices=["best", "last", "int8"],
        default="best",
        help="int8: the run's int8 model, made by `rnnlab quantize` (default best)",
    )
    p.add_argument(
        "--invert",
        choices=["auto", "always", "never"],
        default="auto",
        help="--image: make dark-on-light images light on dark like MNIST (auto: when the "
        "image's border is mostly light; default auto)",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per input: label (class index), probabilities, ...",
    )
    p.add_argument(
        "--threads", type=argtypes.threads, help="torch CPU threads (default: torch's choice)"
    )
    p.set_defaults(func=_predict)


def _add_quantize(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "quantize",
        help="write a run's int8 model and measure it against float32",
        description="Quantize RUN_DIR's checkpoint to int8 matrix products (recurrent layers "
        "and Linear layers; torch's dynamic quantization kernels) into RUN_DIR/int8.safetensors "
        "with the sidecar RUN_DIR/int8.json, after evaluating the float32 and the int8 model "
        "on the test split. Use it with `rnnlab evaluate RUN_DIR --checkpoint int8`.",
    )
    p.add_argument("run_dir")
    p.add_argument("--checkpoint", choices=["best", "last"], default="best")
    p.add_argument(
        "--per-tensor",
        action="store_true",
        help="one weight scale per matrix (default: one per output row)",
    )
    p.add_argument("--split", choices=["test", "val", "train"], default="test")
    p.add_argument("--no-measure", action="store_true", help="write the int8 model only")
    p.add_argument("--data-dir", help="data root (default: the one the run was trained on)")
    p.add_argument("--force", action="store_true", help="replace an existing int8 model")
    p.add_argument("--json", action="store_true", help="print int8.json's content")
    p.add_argument(
        "--threads", type=argtypes.threads, help="torch CPU threads (default: torch's choice)"
    )
    p.set_defaults(func=_quantize)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rnnlab",
        description="RNN, LSTM and GRU from their "
        "equations: train, evaluate and use the tutorial's models.",
    )
    from rnnlab import __version__

    parser.add_argument("--version", action="version", version=f"rnnlab {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    _add_train(sub)
    _add_evaluate(sub)
    _add_predict(sub)
    _add_quantize(sub)
    from rnnlab.cli.lm import add_generate, add_score

    add_generate(sub)
    add_score(sub)
    from rnnlab.cli.transcribe import add_transcribe

    add_transcribe(sub)
    from rnnlab.cli.translate import add_translate

    add_translate(sub)
    p = sub.add_parser(
        "summary",
        help="print a preset's model as a Keras-style table",
        description="Layers, output shapes and parameter counts of PRESET's model.",
    )
    p.add_argument("preset")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=_summary)
    p = sub.add_parser("presets", help="list the presets", description="List the presets.")
    p.set_defaults(func=_presets)
    for verb, (_, text) in PLUGIN_VERBS.items():
        sub.add_parser(verb, help=text, add_help=False)
    return parser


def _train(args: argparse.Namespace) -> int:
    from rnnlab.cli.commands import train_command

    return train_command(args)


def _evaluate(args: argparse.Namespace) -> int:
    from rnnlab.cli.progress import progress_bar
    from rnnlab.predict import evaluate_run

    with progress_bar(f"evaluating {args.split}", "batch") as progress:
        result = evaluate_run(args.run_dir, args.data_dir, args.checkpoint, args.split, progress)
    if args.json:
        print(json.dumps(result))
    else:
        unit = result["unit"]  # "examples" or "tokens"
        skip = ("run", "checkpoint", "step", "split", "unit", unit)
        figures = ", ".join(f"{k} {v:.4f}" for k, v in result.items() if k not in skip)
        print(
            f"{result['split']} ({result[unit]} {unit}, checkpoint "
            f"{result['checkpoint']} at step {result['step']}): {figures}"
        )
    return 0


def _predict(args: argparse.Namespace) -> int:
    from rnnlab.cli.commands import predict_command

    return predict_command(args)


def _quantize(args: argparse.Namespace) -> int:
    from rnnlab.cli.commands import quantize_command

    return quantize_command(args)


def _summary(args: argparse.Namespace) -> int:
    from rnnlab.cli.commands import summary_command

    return summary_command(args)


def _presets(args: argparse.Namespace) -> int:
    names = list_presets()
    pad = max(14, *(len(n) + 2 for n in names))  # longer names (digits-speech-sample) still align
    for name in names:
        text = " ".join(load_preset(name).description.split())
        print(
            textwrap.fill(
                text, width=100, initial_indent=name.ljust(pad), subsequent_indent=" " * pad
            )
        )
    return 0


def _plugin(verb: str, argv: list[str]) -> int:
    module_name = PLUGIN_VERBS[verb][0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        print(
            f"rnnlab: error: `rnnlab {verb}` expected the module {module_name}, got none in "
            "this installation",
            file=sys.stderr,
        )
        return 2
    return int(module.main(argv) or 0)


def _moved_experiment(argv: list[str]) -> int:
    """``rnnlab experiment NAME ...``: the experiments are research programs with loops of their
    own, kept in a checkout's ``projects/`` folder since; say the command that replaces it."""
    modules = {"long-range": "projects.long_range", "context": "projects.context"}
    if argv and argv[0] in modules:
        instead = shlex.join(["python", "-m", modules[argv[0]], *argv[1:]])
    else:
        instead = "python -m projects.long_range ... or python -m projects.context ..."
    print(
        "rnnlab: error: `rnnlab experiment` expected nothing since the experiments moved out of "
        f"the package, got {shlex.join(['experiment', *argv])}; from a checkout of rnnlab run "
        f"`{instead}` (same flags; see projects/README.md)",
        file=sys.stderr,
    )
    return 2


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors that are the user's to fix: printed as one line, exit status 2."""
    from rnnlab.checkpoint import CheckpointError
    from rnnlab.data import DataError
    from rnnlab.predict import PredictError
    from rnnlab.runs import RunError

    return ConfigError, DataError, CheckpointError, RunError, PredictError, OSError


def _warning_printer(verb: str):
    """A ``warnings.showwarning`` that prints a run's warnings as one line on stderr."""
    from rnnlab.data import DataWarning
    from rnnlab.runs import RunWarning

    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        if issubclass(category, (RunWarning, DataWarning)):
            print(f"rnnlab {verb}: warning: {message}", file=sys.stderr)
        else:
            default(message, category, filename, lineno, file, line)

    return show


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "experiment":
        return _moved_experiment(argv[1:])
    if argv and argv[0] in _RETAIN_MEMORY_VERBS and retention_wanted():
        retain_freed_memory()  # rnnlab.allocator: no page faults on every step's fresh tensors
    if argv and argv[0] in _MODEL_VERBS and not {"-h", "--help"} & set(argv):
        from rnnlab.cli.kernels import ensure_kernels

        ensure_kernels(sys.stderr)
    if argv and argv[0] in PLUGIN_VERBS:
        with warnings.catch_warnings():
            warnings.showwarning = _warning_printer(argv[0])
            return _plugin(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    argtypes.set_threads(getattr(args, "threads", None))  # every verb that computes takes it
    if argv and argv[0] in _RETAIN_MEMORY_VERBS and flush_wanted():
        flush_denormals()  # rnnlab.denormals: no microcode assists on vanishing gradients
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _warning_printer(args.verb)
            return args.func(args)
    except _user_errors() as exc:
        rank = os.environ.get("RANK", "0") if int(os.environ.get("WORLD_SIZE", "1")) > 1 else "0"
        who = f"rnnlab {args.verb}" + (f" (rank {rank})" if rank != "0" else "")
        print(f"{who}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rnnlab {args.verb}: interrupted", file=sys.stderr)
        return 130
