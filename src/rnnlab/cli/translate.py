"""``rnnlab translate RUN``: a sequence-to-sequence run's outputs for ``--text`` sources or a
``--file`` of one source per line (streamed: each batch of lines is printed as it is done)."""

from __future__ import annotations

import argparse
import gzip
import io
import json
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from rnnlab import argtypes

__all__ = ["add_translate", "translate_command"]

BATCH = 64  # --file lines decoded together


def add_translate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "translate",
        help="translate with a sequence-to-sequence run",
        description="Decode sources with a trained sequence-to-sequence run (greedy, or beam "
        "search with --beam): one line per source, or its --n-best outputs with their "
        "log-probabilities.",
    )
    p.add_argument("run_dir")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", action="append", help="a source (repeatable)")
    src.add_argument("--file", help="UTF-8 text (or .gz), one source per line; - for stdin")
    p.add_argument(
        "--beam",
        type=argtypes.int_range(1, 64, "a beam width"),
        default=1,
        help="beam width, 1..64 (1: greedy)",
    )
    p.add_argument(
        "--n-best",
        type=argtypes.int_range(1, 64, "a count"),
        default=1,
        help="outputs per source, 1..beam (1)",
    )
    p.add_argument(
        "--threads", type=argtypes.threads, help="torch CPU threads (default: torch's choice)"
    )
    p.add_argument(
        "--max-length",
        type=argtypes.int_range(1, None, "a length"),
        help="output tokens at most (the run's data.max_length)",
    )
    p.add_argument(
        "--length-penalty",
        type=argtypes.float_range(0.0, 10.0, low_open=False, what="a length penalty"),
        default=0.0,
        help="alpha of Wu et al. 2016, 0..10 (0)",
    )
    p.add_argument("--json", action="store_true", help="one JSON object per source")
    p.add_argument(
        "--checkpoint",
        choices=["best", "last", "int8"],
        default="best",
        help="int8: the int8 model of `rnnlab quantize` (default best)",
    )
    p.set_defaults(func=translate_command)


def _lines(path: str) -> Iterator[tuple[int, str]]:
    """(line number, text) of the non-blank lines of ``path``, read as they are needed."""
    from rnnlab.tasks import PredictError

    with ExitStack() as stack:
        if path == "-":
            handle: Any = sys.stdin
        else:
            file = Path(path)
            if not file.is_file():
                raise PredictError(f"--file {path}: expected a text file, got no such file")
            raw = stack.enter_context(open(file, "rb"))
            if raw.read(2) == b"\x1f\x8b":
                raw.seek(0)
                raw = stack.enter_context(gzip.GzipFile(fileobj=raw))
            raw.seek(0)
            handle = stack.enter_context(io.TextIOWrapper(raw, encoding="utf-8"))
        try:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    yield number, line.rstrip("\n")
        except UnicodeDecodeError as exc:
            raise PredictError(
                f"--file {path}: expected UTF-8 text, got byte {exc.object[exc.start]:#04x} "
                "that is not UTF-8 (binary, or another encoding?)"
            ) from exc


def _batches(args: argparse.Namespace) -> Iterator[list[tuple[str, str]]]:
    """Batches of (where, source): ``--text k`` or ``line n``."""
    if args.text is not None:
        yield [(f"--text {k + 1}", t) for k, t in enumerate(args.text)]
        return
    batch: list[tuple[str, str]] = []
    for number, line in _lines(args.file):
        batch.append((f"{args.file}, line {number}", line))
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def translate_command(args: argparse.Namespace) -> int:
    """Print each source's output(s) as its batch is decoded; the tokens read as ``<unk>`` are
    said once, on stderr, at the end."""
    from rnnlab.runs import load_run
    from rnnlab.runs.load import read_run_artifacts
    from rnnlab.tasks import PredictError, get_task

    argtypes.set_threads(args.threads)
    config, model, meta = load_run(args.run_dir, args.checkpoint)
    task = get_task(config)
    task.check_verb("translate", args.run_dir)
    read_run_artifacts(args.run_dir, task, meta)  # binds the run's vocabularies, checked
    options = dict(
        beam=args.beam,
        n_best=args.n_best,
        max_length=args.max_length,
        length_penalty=args.length_penalty,
    )
    unknown: dict[str, None] = {}
    for batch in _batches(args):
        try:
            results = task.translate(model, [s for _, s in batch], **options)
        except PredictError as exc:  # name the line: "source 3" of a batch is not the user's 3
            message = str(exc)
            if message.startswith("source "):
                k = int(message.split()[1].rstrip(":")) - 1
                message = f"{batch[k][0]}: " + message.split(": ", 1)[1]
            raise PredictError(message) from exc
        for result in results:
            unknown.update(dict.fromkeys(result["unknown"]))
            if args.json:
                print(json.dumps(result), flush=True)
            elif args.n_best == 1:
                print(f"{result['source']}\t{result['outputs'][0]['text']}", flush=True)
            else:
                for k, o in enumerate(result["outputs"], start=1):
                    print(f"{result['source']}\t{k}\t{o['text']}\t{o['log_prob']:.4f}", flush=True)
    if unknown:
        shown = " ".join(repr(t) for t in unknown)
        print(
            f"rnnlab translate: note: {len(unknown)} source token(s) never seen in training, "
            f"read as <unk>: {shown}",
            file=sys.stderr,
        )
    return 0
