"""Pairs files and a tiny trained seq2seq run, shared by the seq2seq test files."""

from __future__ import annotations

import random
from pathlib import Path

from rnnlab.runs import train

LETTERS = "abcdefgh"


def reversal_pairs(n: int = 400, seed: int = 0) -> list[tuple[str, str]]:
    """``n`` distinct words of 2..6 letters, each with itself reversed."""
    rng, words = random.Random(seed), set()
    while len(words) < n:
        words.add("".join(rng.choice(LETTERS) for _ in range(rng.randint(2, 6))))
    return [(w, w[::-1]) for w in sorted(words)]


def write_pairs(path: Path, pairs: list[tuple[str, str]]) -> Path:
    path.write_text("".join(f"{s}\t{t}\n" for s, t in pairs), "utf-8")
    return path


TINY = [
    "model.embedding_dim=16",
    "model.hidden_sizes=[32]",
    "train.epochs=6",
    "train.batch_size=32",
    "train.lr=0.01",
    "train.time_limit=0",
    "run.log_every=0",
    "run.checkpoint_every=0",
]


def tiny(*overrides: str) -> list[str]:
    """:data:`TINY` with ``overrides`` in place of the keys they name (each key once)."""
    values = dict(s.split("=", 1) for s in TINY)
    values.update(s.split("=", 1) for s in overrides)
    return [f"{k}={v}" for k, v in values.items()]


def train_tiny(tmp: Path, *overrides: str) -> Path:
    pairs = write_pairs(tmp / "reverse.tsv", reversal_pairs())
    run = tmp / "run"
    train("pairs", out=run, overrides=tiny(f"data.path={pairs}", *overrides))
    return run
