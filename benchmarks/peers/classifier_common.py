"""What the two classifier peers (``mnist_seed.py``, ``imdb_seed.py``) share: their arguments,
the start of a run (threads, seed, clock), evaluation over a loader and the JSON result. Each
keeps its own model and training loop, written as a PyTorch user would."""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch import nn
from torch.utils.data import DataLoader


def parse(description: str, dataset: str, epochs: int) -> argparse.Namespace:
    """The peers' arguments (``epochs`` is the recipe's) after setting torch's threads and
    seed from them; ``args.start`` is the clock at the program's start."""
    start = time.perf_counter()
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--sample", action="store_true", help=f"the {dataset} sample shipped in rnnlab")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=epochs)
    p.add_argument("--out", default=None, help="JSON result file")
    args = p.parse_args()
    args.start = start
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    return args


def evaluate(model: nn.Module, loader: DataLoader) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of ``model`` over ``loader``, in eval mode."""
    model.eval()
    loss = right = total = 0.0
    with torch.no_grad():
        for x, y in loader:
            logits = model(x)
            loss += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
            right += int((logits.argmax(1) == y).sum())
            total += len(y)
    model.train()
    return loss / total, right / total


def finish(args: argparse.Namespace, test_acc: float, steps: int, train_s: float, **more) -> None:
    """Print the last line and write ``args.out`` (test accuracy, steps, seconds, ``more``)."""
    total = time.perf_counter() - args.start
    print(
        f"Testing Accuracy: {test_acc:.4f}; {steps} steps, {train_s:.1f} s training, {total:.1f} s"
    )
    if args.out:
        result = {
            "test_accuracy": test_acc,
            "steps": steps,
            "train_s": train_s,
            "total_s": total,
            **more,
            "threads": args.threads,
            "seed": args.seed,
            "torch": torch.__version__,
        }
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
