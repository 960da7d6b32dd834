"""The language-model verbs: ``rnnlab generate`` (tokens streamed as they are drawn) and
``rnnlab score`` (per-token log-probabilities, bpc or perplexity)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rnnlab import argtypes
from rnnlab.cli.progress import progress_bar
from rnnlab.data.corpus import read_text
from rnnlab.generation import MAX_NEW_TOKENS, generate_run, score_run

__all__ = ["add_generate", "add_score", "generate_command", "score_command"]


def add_generate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="generate text with a language-model run",
        description="Continue --prompt with a trained language model, printing each token as "
        "it is drawn.",
    )
    p.add_argument("run_dir")
    p.add_argument("--prompt", default="", help="text to continue (default: a new review)")
    p.add_argument(
        "--length",
        type=argtypes.int_range(1, MAX_NEW_TOKENS, "a token count"),
        default=300,
        help=f"tokens to draw, 1..{MAX_NEW_TOKENS} (300)",
    )
    p.add_argument(
        "--temperature", type=argtypes.positive_float, default=1.0, help="> 0 (1.0; lower: safer)"
    )
    p.add_argument(
        "--top-k", type=argtypes.positive_int, help="draw among the k most likely tokens only"
    )
    p.add_argument("--top-p", type=argtypes.probability, help="nucleus sampling: 0 < p <= 1")
    p.add_argument("--seed", type=argtypes.seed, help="the same seed gives the same text")
    p.add_argument(
        "--checkpoint",
        choices=["best", "last", "int8"],
        default="best",
        help="int8: the int8 model of `rnnlab quantize` (default best)",
    )
    p.add_argument(
        "--threads", type=argtypes.threads, help="torch CPU threads (default: torch's choice)"
    )
    p.set_defaults(func=generate_command)


def add_score(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "score",
        help="score text with a language-model run",
        description="Per-token log-probabilities of a text under a trained language model, "
        "with its bits per character or perplexity.",
    )
    p.add_argument("run_dir")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", action="append", help="a text to score (repeatable)")
    src.add_argument("--file", help="a UTF-8 text file (or .gz), scored as one text")
    p.add_argument("--tokens", action="store_true", help="also print every token's log-prob")
    p.add_argument("--json", action="store_true", help="one JSON object per text")
    p.add_argument(
        "--checkpoint",
        choices=["best", "last", "int8"],
        default="best",
        help="int8: the int8 model of `rnnlab quantize` (default best)",
    )
    p.add_argument(
        "--threads", type=argtypes.threads, help="torch CPU threads (default: torch's choice)"
    )
    p.set_defaults(func=score_command)


def generate_command(args: argparse.Namespace) -> int:
    """The prompt, then each token as it comes (flushed one by one); unknown prompt tokens
    are said once, on stderr, before the first."""
    run = generate_run(
        args.run_dir,
        args.prompt,
        args.length,
        args.temperature,
        args.top_k,
        args.top_p,
        args.seed,
        args.checkpoint,
    )
    if run.unknown:
        shown = ", ".join(repr(t) for t in run.unknown_tokens)
        print(
            f"rnnlab generate: note: {run.unknown} prompt token(s) outside the vocabulary "
            f"read as <unk>: {shown}",
            file=sys.stderr,
            flush=True,
        )
    sys.stdout.write(args.prompt)
    for piece in run.pieces:
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


def score_command(args: argparse.Namespace) -> int:
    # --file: DataError for a missing, empty, binary or non-UTF-8 file
    texts = [read_text(Path(args.file))] if args.file is not None else args.text
    per_token = args.tokens or args.json  # else a long text keeps no per-token lists
    with progress_bar("scoring", "token") as progress:
        results = score_run(args.run_dir, texts, args.checkpoint, per_token, progress)
    for result in results:
        if args.json:
            print(json.dumps(result))
            continue
        figure = "bpc" if "bpc" in result else "perplexity"
        if args.tokens:
            for token, logp in zip(result["tokens"], result["log_probs"], strict=True):
                print(f"{logp:9.4f}\t{token!r}")
        unknown = f", {result['unknown']} unknown" if result["unknown"] else ""
        print(
            f"{result['count']} tokens{unknown}: {figure} {result[figure]:.4f} "
            f"(loss {result['loss']:.4f} nats/token)"
        )
    return 0
