"""What the peer language-model programs share: arguments, data, the torch.nn.LSTM model, the
stateful training loop under a wall-clock budget, evaluation and the JSON result.

The peers read exactly the corpus rnnlab reads (:func:`rnnlab.data.corpus.load_corpus`: same
splits, same vocabulary rules) and batch it the same way (:mod:`rnnlab.data.streams`); everything
else is plain PyTorch, so they measure the recipes, not rnnlab's layers.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from rnnlab.data.corpus import corpus_summary, load_corpus
from rnnlab.data.streams import batchify, check_stream, num_windows, windows


def parser(description: str, **defaults: object) -> argparse.ArgumentParser:
    """The arguments every peer takes; ``defaults`` are the recipe's values."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--time-limit", type=float, required=True, help="training seconds")
    p.add_argument("--data-dir", default=None, help="folder of aclImdb_v1.tar.gz")
    p.add_argument("--sample", action="store_true", help="the IMDB sample shipped in rnnlab")
    p.add_argument("--corpus", default="imdb", help='"imdb" or a text file / folder')
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=1111)
    p.add_argument("--out", default=None, help="JSON result file (default: print only)")
    p.add_argument(
        "--eval-interval",
        type=float,
        default=0.0,
        help="also validate every this many training seconds (0: per epoch only)",
    )
    p.add_argument("--eval-batch", type=int, default=10)
    p.add_argument(
        "--eval-tokens",
        type=int,
        default=0,
        help="validate and test on the first N tokens of each split (0: all)",
    )
    for name, value in defaults.items():
        p.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
    return p


class PeerLM(nn.Module):
    """Embedding -> dropout -> torch.nn.LSTM (batch first) -> dropout -> Linear."""

    def __init__(self, vocab: int, emb: int, hidden: int, layers: int, dropout: float) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, emb)
        self.drop = nn.Dropout(dropout)
        self.lstm = nn.LSTM(emb, hidden, layers, dropout=dropout, batch_first=True)
        self.decoder = nn.Linear(hidden, vocab)
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        nn.init.uniform_(self.decoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)

    def forward(self, ids: Tensor, state: tuple[Tensor, Tensor] | None):
        out, state = self.lstm(self.drop(self.embedding(ids)), state)  # (B, T, H)
        return self.decoder(self.drop(out)), state  # (B, T, V)


def detach(state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    return (state[0].detach(), state[1].detach())


def evaluate(model: PeerLM, data: Tensor, bptt: int) -> float:
    """Mean cross-entropy (nats per token) over (B, L) ``data``, state carried across it."""
    model.eval()
    total, count, state = 0.0, 0, None
    with torch.no_grad():
        for inputs, targets in windows(data, bptt):
            logits, state = model(inputs, state)  # (B, t, V)
            loss = nn.functional.cross_entropy(
                logits.flatten(0, 1), targets.flatten(), reduction="sum"
            )
            total, count = total + loss.item(), count + targets.numel()
    model.train()
    return total / count


@dataclass
class Recipe:
    """One peer: its level, model sizes, batching, and how it steps and anneals."""

    name: str
    level: str
    make_optimizer: Callable[[PeerLM, argparse.Namespace], torch.optim.Optimizer]
    on_validation: Callable[[torch.optim.Optimizer, float, list[float]], None] = lambda *a: None
    history: list[dict] = field(default_factory=list)


def run(recipe: Recipe, args: argparse.Namespace) -> dict:
    """Train under ``args.time_limit`` seconds, validate, test; print and return the result."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t_load = time.perf_counter()
    corpus = load_corpus(
        args.corpus,
        recipe.level,
        max_vocab=args.max_vocab or None,
        data_dir=args.data_dir,
        sample=args.sample,
    )
    load_s = time.perf_counter() - t_load
    for split, batch in (
        ("train", args.batch_size),
        ("valid", args.eval_batch),
        ("test", args.eval_batch),
    ):
        check_stream(corpus.split(split), batch, args.bptt, f"{corpus.source} {split} split")
    train = batchify(corpus.train, args.batch_size)  # (B, L)
    cap = slice(0, args.eval_tokens or None)
    valid = batchify(corpus.valid[cap], args.eval_batch)  # (B_eval, L_valid)
    test = batchify(corpus.test[cap], args.eval_batch)  # (B_eval, L_test)
    V = len(corpus.vocab)
    model = PeerLM(V, args.emsize, args.nhid, args.nlayers, args.dropout)
    optimizer = recipe.make_optimizer(model, args)
    unit = "bpc" if recipe.level == "char" else "ppl"
    figure = (lambda nats: nats / math.log(2)) if unit == "bpc" else math.exp
    print(
        f"{recipe.name}: {corpus_summary(corpus)}; {sum(p.numel() for p in model.parameters())} "
        f"parameters; torch {torch.__version__}, {args.threads} thread(s)",
        flush=True,
    )

    per_epoch = num_windows(train.shape[1], args.bptt)
    trained_s, tokens, steps, epoch, best = 0.0, 0, 0, 0, math.inf
    val_losses: list[float] = []
    last_eval = 0.0

    def validate(where: str) -> None:
        nonlocal best
        loss = evaluate(model, valid, args.bptt)
        val_losses.append(loss)
        best = min(best, loss)
        recipe.on_validation(optimizer, loss, val_losses)
        lr = optimizer.param_groups[0]["lr"]
        recipe.history.append(
            {
                "where": where,
                "train_s": round(trained_s, 1),
                "tokens": tokens,
                "val_loss": loss,
                f"val_{unit}": figure(loss),
                "lr": lr,
            }
        )
        print(
            f"  {where}: {trained_s:7.1f}s {tokens} tokens, val loss {loss:.4f}, "
            f"{unit} {figure(loss):.3f}, lr {lr:g}",
            flush=True,
        )

    done = False
    while not done:
        state = None  # reset at each epoch, as the example does
        for k, (inputs, targets) in enumerate(windows(train, args.bptt)):
            t0 = time.perf_counter()
            state = None if state is None else detach(state)
            logits, state = model(inputs, state)  # (B, t, V)
            loss = nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), args.clip)
            optimizer.step()
            trained_s += time.perf_counter() - t0
            tokens, steps = tokens + targets.numel(), steps + 1
            if steps % 50 == 0:
                print(
                    f"  epoch {epoch + (k + 1) / per_epoch:.3f}: loss {loss.item():.4f}, "
                    f"{tokens / trained_s:,.0f} tok/s",
                    flush=True,
                )
            if trained_s >= args.time_limit:
                done = True
                break
            if args.eval_interval and trained_s - last_eval >= args.eval_interval:
                last_eval = trained_s
                validate(f"epoch {epoch + (k + 1) / per_epoch:.3f}")
        else:
            epoch += 1
            validate(f"end of epoch {epoch}")
            continue
    validate("end of budget")
    test_loss = evaluate(model, test, args.bptt)
    result = {
        "recipe": recipe.name,
        "unit": unit,
        "corpus": corpus_summary(corpus),
        "args": vars(args),
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_seconds": round(trained_s, 2),
        "load_seconds": round(load_s, 2),
        "steps": steps,
        "tokens": tokens,
        "epochs": round(steps / per_epoch, 4),
        "tokens_per_s": round(tokens / trained_s, 1),
        "val_loss": val_losses[-1],
        f"val_{unit}": figure(val_losses[-1]),
        f"best_val_{unit}": figure(best),
        "test_loss": test_loss,
        f"test_{unit}": figure(test_loss),
        "history": recipe.history,
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
        "device": "cpu",
        "threads": args.threads,
        "dtype": "float32",
    }
    print(
        f"{recipe.name}: validation {unit} {figure(val_losses[-1]):.3f}, test {unit} "
        f"{figure(test_loss):.3f} after {trained_s:.0f}s ({result['epochs']} epochs, "
        f"{result['tokens_per_s']:,.0f} tok/s)",
        flush=True,
    )
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return result
