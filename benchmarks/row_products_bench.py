"""The row blocks' per-step products, whole and in column slices, float32 and bf16.

    OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/row_products_bench.py [--repeats 9]

Each case is a time loop's worth of one product of the compiled kernels (``gemm_rows`` in
``_ext/recurrent.h``): ``steps`` products of M rows (a step's batch) by a (K, N) weight, as
``product_rows`` of the extension runs them. For each, GFLOP/s with the weight whole, in slices
of 256 and of 128 columns, and as the kernels' own rule slices it (``rule``), median of
``--repeats`` runs after one warm-up, the four timed in turn within each repeat, with the
2048^3 oneDNN GEMM peak of the same run beside them. These are the figures behind
``kBf16SliceBytes`` and ``kBf16Columns``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from rnnlab.allocator import retain_freed_memory
from rnnlab.bench.suite import gemm_peaks
from rnnlab.nn.backends import _ext

# name: (M rows a step, K, N), from the bench workloads (B batch, H hidden, I input)
CASES = {
    "C step (64, 128) x 512": (64, 128, 512),
    "B forward (512, 256) x 1024": (512, 256, 1024),
    "F L0 input (64, 64) x 2048": (64, 64, 2048),
    "F forward (64, 512) x 2048": (64, 512, 2048),
    "F backward (64, 2048) x 512": (64, 2048, 512),
    "G forward (20, 650) x 2600": (20, 650, 2600),
    "G backward (20, 2600) x 650": (20, 2600, 650),
}
WIDTHS = {"whole": 1 << 30, "256": 256, "128": 128, "rule": 0}


def _median_ms(fns: list, repeats: int) -> list[float]:
    """Median ms of each of ``fns``, timed in turn within each repeat (so a drift of the
    machine's speed reaches all alike), after one warm-up call of each."""
    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times, strict=True):
            start = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - start)
    return [statistics.median(ts) * 1e3 for ts in times]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    ext = _ext.load()
    if ext is None:
        raise SystemExit(f"the compiled kernels are unavailable: {_ext.unavailable_reason()}")
    retain_freed_memory()
    peak = gemm_peaks({"2048^3": (2048, 2048, 2048)}, repeats=3)["2048^3"]
    print(
        f"cpu={platform.processor() or platform.machine()}, threads={torch.get_num_threads()}, "
        f"torch={torch.__version__}, steps={args.steps}; 2048^3 peak GFLOP/s: "
        f"oneDNN fp32 {peak.get('onednn_gflops', float('nan')):.1f}, "
        f"bf16 {peak.get('onednn_bf16_gflops', float('nan')):.1f}"
    )
    dtypes = [torch.float32] + ([torch.bfloat16] if ext.bf16_rows_work() else [])
    print(f"{'case':32s} {'dtype':9s}" + "".join(f"{w:>9s}" for w in WIDTHS) + "  (GFLOP/s)")
    for name, (M, K, N) in CASES.items():
        for dtype in dtypes:
            a = torch.randn(args.steps * M, K).to(dtype)
            b = torch.randn(K, N).to(dtype)
            flops = 2.0 * args.steps * M * K * N
            calls = [
                lambda a=a, b=b, w=w: ext.product_rows(a, b, args.steps, w) for w in WIDTHS.values()
            ]
            rates = [flops / ms / 1e6 for ms in _median_ms(calls, args.repeats)]
            row = "".join(f"{r:9.1f}" for r in rates)
            print(f"{name:32s} {str(dtype).removeprefix('torch.'):9s}{row}")


if __name__ == "__main__":
    main()
