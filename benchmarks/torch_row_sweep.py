"""Where torch's own recurrent op (oneDNN) beats rnnlab's compiled kernels on rnnlab's own
parameters: one layer, unpadded float32, forward (inference) and forward + backward (training),
over hidden sizes and batch shapes. The thresholds of ``auto``'s torch rows in
``rnnlab.nn.backends.dispatch`` come from this sweep.

    OMP_NUM_THREADS=1 PYTHONPATH=src taskset -c 0 python benchmarks/torch_row_sweep.py

Interleaved repeats (compiled, torch, compiled, ...), median of 7 after a warm-up; the ratio is
compiled time / torch time from the same run (> 1: torch's op is faster). Freed memory is
retained and subnormal floats flushed to zero, as in ``rnnlab train``.
"""

from __future__ import annotations

import os
import statistics
import time

import torch

import rnnlab
from rnnlab.allocator import retain_freed_memory
from rnnlab.denormals import flush_denormals
from rnnlab.nn.backends import _ext

SHAPES = [  # (B, T): the bench workloads' batch and length
    (128, 28),  # A
    (512, 20),  # B
    (64, 200),  # C, D
    (64, 128),  # F
    (20, 35),  # G
]
HIDDEN = [128, 256, 384, 512, 650]


def timed(fns: dict, repeats: int = 7) -> dict[str, float]:
    """Median seconds of each of ``fns`` (name -> callable), their repeats interleaved."""
    for fn in fns.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def step(layer, x, backend: str, mode: str) -> None:
    if mode == "infer":
        with torch.no_grad():
            layer(x, backend=backend)
    else:
        out, _ = layer(x.requires_grad_(), backend=backend)
        out.sum().backward()


def main() -> None:
    retain_freed_memory()
    _ext.load()
    flush_denormals()  # as rnnlab train: torch's op is 10x slower at C's training otherwise
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, load {os.getloadavg()}")
    cases = [(rnnlab.LSTM, False), (rnnlab.GRU, False), (rnnlab.LSTM, True)]
    for cls, bidirectional in cases:
        for B, T in SHAPES:
            for H in HIDDEN:
                layer = cls(H, H, bidirectional=bidirectional)
                x = torch.randn(B, T, H)
                kind = "bi " if bidirectional else "uni"
                row = f"{cls.__name__:4s} {kind} B {B:3d} T {T:3d} H {H:3d}"
                for mode in ("infer", "train"):
                    t = timed(
                        {
                            b: lambda b=b, m=mode: step(layer, x, b, m)  # noqa: B023
                            for b in ("compiled", "torch")
                        }
                    )
                    ratio = t["compiled"] / t["torch"]
                    row += f"  {mode} {1e3 * t['compiled']:7.2f} / {1e3 * t['torch']:7.2f} ms"
                    row += f" x {ratio:4.2f}"
                print(row, flush=True)
    print(time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), os.getloadavg())


if __name__ == "__main__":
    main()
