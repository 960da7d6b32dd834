"""torch's dropout against rnnlab's (masks from uniforms, rnnlab.nn.dropout) on the CPU.

    python benchmarks/dropout_bench.py --shape 512 20 256 --p 0.5 --threads 1 [--keep-allocator]

Times the forward of each in training mode (median and range of --repeats calls after one
warm-up), and torch's ``bernoulli_`` alone, which draws torch's mask. Prints the device, dtype,
thread count and versions beside the numbers.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import torch

from rnnlab.allocator import retain_freed_memory
from rnnlab.nn.dropout import dropout


def _time(fn: Callable[[], object], repeats: int) -> list[float]:
    fn()  # warm-up: allocations, first-call dispatch
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs="+", default=[512, 20, 256])
    parser.add_argument("--p", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=31)
    parser.add_argument(
        "--keep-allocator",
        action="store_true",
        help="leave glibc returning freed memory (the default retains it, as rnnlab train does)",
    )
    args = parser.parse_args(argv)
    retained = False if args.keep_allocator else retain_freed_memory()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(*args.shape)
    print(
        f"cpu={platform.processor() or platform.machine()}, dtype={x.dtype}, "
        f"shape={tuple(x.shape)}, p={args.p}, threads={torch.get_num_threads()}, "
        f"torch={torch.__version__}, freed memory retained={retained}"
    )
    cases = {
        "torch.nn.functional.dropout": lambda: torch.nn.functional.dropout(x, args.p, True),
        "  of which bernoulli_": lambda: torch.empty_like(x).bernoulli_(1 - args.p),
        "rnnlab.nn.dropout": lambda: dropout(x, args.p, True),
    }
    for name, fn in cases.items():
        t = _time(fn, args.repeats)
        spread = f"(min {min(t):.2f}, max {max(t):.2f})"
        print(f"{name:30s} median {statistics.median(t):7.2f} ms  {spread}")


if __name__ == "__main__":
    main()
