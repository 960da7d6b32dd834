"""``rnnlab transcribe RUN --wav FILE... | --image FILE...``: a CTC run's transcript of each
recording or line image (files, or folders of them), one line (or JSON object) per input."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rnnlab import argtypes
from rnnlab.predict import predict_each
from rnnlab.runs import read_config
from rnnlab.tasks import PredictError, get_task

__all__ = ["add_transcribe", "expand_inputs", "transcribe_command"]

_SUFFIXES = {"audio": (".wav",), "image": (".png",)}


def add_transcribe(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "transcribe",
        help="transcribe recordings or line images with a CTC run",
        description="Print the transcript of each input (a folder stands for its .wav or .png "
        "files, sorted). An input the model cannot take is reported and the others are still "
        "answered; the exit status is then 1.",
    )
    p.add_argument("run_dir")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--wav", nargs="+", help="WAV files or folders (spoken runs)")
    src.add_argument("--image", nargs="+", help="PNG line images or folders (written runs)")
    p.add_argument(
        "--beam",
        type=argtypes.int_range(1, 256, "a beam width"),
        default=1,
        help="prefix beam width, 1..256 (1: greedy; default 1)",
    )
    p.add_argument(
        "--threads", type=argtypes.threads, help="torch CPU threads (default: torch's choice)"
    )
    p.add_argument(
        "--probabilities", action="store_true", help="--json: add per-frame probabilities"
    )
    p.add_argument("--json", action="store_true", help="one JSON object per input")
    p.add_argument("--invert", choices=["auto", "always", "never"], default="auto")
    p.add_argument(
        "--checkpoint",
        choices=["best", "last", "int8"],
        default="best",
        help="int8: the int8 model of `rnnlab quantize` (default best)",
    )
    p.set_defaults(func=transcribe_command)


def expand_inputs(items: list[str], kind: str) -> list[str]:
    """Files as given; a folder -> its files of ``kind`` (sorted); a folder with none is an
    error."""
    out = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(str(p) for p in path.iterdir() if p.suffix.lower() in _SUFFIXES[kind])
            if not found:
                raise PredictError(
                    f"{path}: expected {' or '.join(_SUFFIXES[kind])} files, got none"
                )
            out += found
        else:
            out.append(item)
    return out


def transcribe_command(args: argparse.Namespace) -> int:
    """One line per input: the transcript, its log-probability and the file; stereo mixed
    down and other rates resampled are said once each, on stderr."""
    argtypes.set_threads(args.threads)
    get_task(read_config(args.run_dir)).check_verb("transcribe", args.run_dir)
    kind = "audio" if args.wav else "image"
    raw = expand_inputs(args.wav or args.image, kind)
    options = {} if args.wav else {"invert": args.invert}
    decode = {"beam": args.beam, "probabilities": args.probabilities and args.json}
    results = predict_each(
        args.run_dir, raw, args.checkpoint, kind, "transcribe", decode, **options
    )
    failed, said = 0, set()
    for r in results:
        if "error" in r:
            failed += 1
            print(f"rnnlab transcribe: error: {r['error']}", file=sys.stderr)
        for note, text in (
            ("mixed_down", "stereo mixed down to mono"),
            ("resampled_from", "resampled"),
        ):
            if note in r and note not in said:
                said.add(note)
                print(
                    f"rnnlab transcribe: note: {r['input']}: {text} (and any others)",
                    file=sys.stderr,
                )
        if args.json:
            print(json.dumps(r))
        elif "error" not in r:
            print(f"{r['transcript'] or '(nothing)'}\t{r['log_prob']:.3f}\t{r['input']}")
    if failed:
        print(f"rnnlab transcribe: {failed} of {len(results)} inputs failed", file=sys.stderr)
        return 1
    return 0
