"""Issue 25, item 2: does a language model start where it learned to? Before/after figures.

For a character language-model run this prints, under its ``best`` checkpoint:

* the run's test bpc (report.json);
* the bpc of the first 100 characters of each test review (up to ``--reviews`` of them), each
  scored alone after the document boundary, read from the zero state ("before": what rnnlab
  did until issue 25) and from the run's start state ("after":
  :meth:`rnnlab.tasks.LanguageModelTask.start_state`);
* samples of ``--length`` characters with no prompt at temperatures 0.7 and 1.0 from each
  start, and each sample's bpc under the same model (scored as it is generated: from the same
  start), beside the test bpc.

    PYTHONPATH=src python benchmarks/honest_start.py RUN [--reviews 1000] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

from rnnlab import argtypes
from rnnlab.generation import load_language_model
from rnnlab.runs import run_data_dir
from rnnlab.runs.layout import read_json


def review_heads(task, run_dir: Path, count: int, width: int = 100) -> torch.Tensor:
    """(R, width) ids: the first ``width`` tokens of the first ``count`` test reviews that have
    that many (the test split read as the run read it, cut at its boundary token)."""
    test = np.asarray(task.read_corpus(run_data_dir(run_dir)).test)
    (boundary,) = task.start_context()
    cuts = np.flatnonzero(test == boundary)
    starts = np.concatenate([[0], cuts[:-1] + 1])
    heads = [test[s : s + width] for s, e in zip(starts, cuts, strict=True) if e - s >= width]
    return torch.as_tensor(np.stack(heads[:count]).astype(np.int64))


def bpc(logp: torch.Tensor) -> float:
    return float(-logp.double().mean() / math.log(2))


def sample(task, model, start, temperature: float, length: int, seed: int) -> tuple[str, float]:
    """A sample with no prompt from ``start`` and its bpc, scored from the same start."""
    ids = task.start_context()
    steps = model.steps(ids, length, temperature, seed=seed, top=0, state=start)
    tokens = [step.token for step in steps]
    logp = model.score(torch.tensor(tokens), ids, state=start)
    return "".join(task.piece(t) for t in tokens), bpc(logp)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--reviews", type=argtypes.positive_int, default=1000)
    p.add_argument("--length", type=argtypes.positive_int, default=300)
    p.add_argument(
        "--seeds", type=argtypes.positive_int, default=3, help="samples per temperature and start"
    )
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    task, model = load_language_model(args.run_dir)
    report = read_json(args.run_dir / "report.json", "report.json")
    heads = review_heads(task, args.run_dir, args.reviews)
    after_state = task.start_state(model)
    out = {"run": str(args.run_dir), "test_bpc": report["test_bpc"], "reviews": len(heads)}
    for name, start in (("before", None), ("after", after_state)):
        logp = model.score(heads, task.start_context(), state=start)  # (R, 100)
        out[f"first_100_bpc_{name}"] = bpc(logp)
        for temperature in (0.7, 1.0):
            runs = [
                sample(task, model, start, temperature, args.length, s) for s in range(args.seeds)
            ]
            out[f"samples_{name}_t{temperature}"] = [
                {"seed": s, "bpc": figure, "text": text} for s, (text, figure) in enumerate(runs)
            ]
            out[f"sample_bpc_{name}_t{temperature}"] = float(np.mean([f for _, f in runs]))
    print(f"run {out['run']}: test bpc {out['test_bpc']:.3f}, {out['reviews']} test reviews")
    for name in ("before", "after"):
        print(
            f"\n[{name}] first 100 characters of each review, alone: "
            f"{out[f'first_100_bpc_{name}']:.3f} bpc"
        )
        for temperature in (0.7, 1.0):
            print(
                f"  T={temperature}: samples score {out[f'sample_bpc_{name}_t{temperature}']:.3f}"
                " bpc (mean of seeds)"
            )
            for item in out[f"samples_{name}_t{temperature}"][:2]:
                print(f"    seed {item['seed']} ({item['bpc']:.2f} bpc): {item['text'][:160]!r}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
