"""Milliseconds per optimizer step on the seed presets' models, by Adam kernel (issue 24).

For each preset's model (``build_model``, the parameters it trains), this times
``optimizer.step()`` with torch's three Adam kernels: ``single`` (``foreach=False``, a loop over
tensors: what ``make_optimizer`` gave on CPU before it chose ``fused``), ``foreach`` and
``fused``, plus the other per-step work the trainer does around it (``zero_grad`` and
``clip_grad_norm_``, which rnnlab computes every step to log the gradient norm). Gradients are
random and fixed; each sample is ``--inner`` calls, samples are interleaved across kernels
(``--repeats`` rounds), and the median and spread are printed per kernel. Example::

    PYTHONPATH=src python benchmarks/optimizer_step.py --threads 1 --repeats 15
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
from torch import nn

import rnnlab
from rnnlab.config import load_preset
from rnnlab.tasks import build_model

KERNELS = {"single": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}


def timers(model: nn.Module) -> dict:
    """Name -> a call of one per-step operation on ``model``'s parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    grads = [torch.randn_like(p) * 1e-3 for p in params]
    calls = {}
    for name, kernel in KERNELS.items():
        opt = torch.optim.Adam(params, lr=1e-3, eps=1e-7, **kernel)

        def step(opt=opt) -> None:
            for p, g in zip(params, grads, strict=True):
                p.grad = g
            opt.step()

        calls[f"adam_{name}"] = step
    calls["zero_grad"] = lambda opt=opt: opt.zero_grad(set_to_none=True)
    calls["clip_grad_norm"] = lambda: float(nn.utils.clip_grad_norm_(params, float("inf")))
    return calls


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", nargs="+", default=["mnist-seed", "imdb-seed"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--inner", type=int, default=50)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "rnnlab": rnnlab.__version__,
        "threads": torch.get_num_threads(),
        "dtype": "float32",
    }
    print("optimizer step:", json.dumps(env))
    results = {"environment": env, "presets": {}}
    for preset in args.presets:
        torch.manual_seed(0)
        model = build_model(load_preset(preset))
        n = sum(p.numel() for p in model.parameters() if p.requires_grad)
        calls = timers(model)
        samples: dict[str, list[float]] = {k: [] for k in calls}
        for fn in calls.values():  # warm up
            for _ in range(5):
                fn()
        for _ in range(args.repeats):
            for name, fn in calls.items():
                t0 = time.perf_counter()
                for _ in range(args.inner):
                    fn()
                samples[name].append((time.perf_counter() - t0) / args.inner * 1e3)
        rows = {
            k: {"median_ms": statistics.median(v), "min_ms": min(v), "max_ms": max(v)}
            for k, v in samples.items()
        }
        results["presets"][preset] = {"parameters": n, "ms": rows}
        print(f"{preset} ({n:,} parameters in {len(list(model.parameters()))} tensors):")
        for k, r in rows.items():
            low, high = r["min_ms"], r["max_ms"]
            print(f"  {k:16s} {r['median_ms']:8.3f} ms  (min {low:.3f}, max {high:.3f})")
        base = rows["adam_single"]["median_ms"]
        print(f"  fused vs single: {base / rows['adam_fused']['median_ms']:.2f}x faster")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
