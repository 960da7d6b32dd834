"""One recurrent layer's training step (forward + backward), parallel path against the
step-by-step reference, for minGRU and minLSTM, at the shapes of workloads E and F.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/cells_layer.py

Interleaved repeats (reference, parallel, reference, ...), median and min-max of 7, after a
warm-up; the ratio is reference time / parallel time from the same run (rule 12). Freed
memory is retained (rnnlab.allocator), as in rnnlab train.
"""

from __future__ import annotations

import os
import platform
import statistics
import time

import torch

import rnnlab
from rnnlab.allocator import retain_freed_memory

SHAPES = {  # name: (B, T, I, H), the recurrent layer of the workload
    "E (pixel MNIST)": (32, 784, 1, 128),
    "F layer 2 (char LM)": (64, 128, 512, 512),
}


def step(layer, x, backend: str) -> None:
    out, state = layer(x, backend=backend)
    (out.sum() + state.sum()).backward()


def main() -> None:
    retain_freed_memory()  # as rnnlab train and rnnlab bench --retain-memory do
    torch.manual_seed(0)
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"{platform.processor() or platform.machine()}, load {os.getloadavg()}"
    )
    for name, (B, T, I, H) in SHAPES.items():
        x = torch.randn(B, T, I, requires_grad=True)
        for cls in (rnnlab.MinGRU, rnnlab.MinLSTM):
            layer = cls(I, H)
            times = {"reference": [], "auto": []}
            for backend in times:
                step(layer, x, backend)  # warm-up
            for _ in range(7):
                for backend in times:
                    start = time.perf_counter()
                    step(layer, x, backend)
                    times[backend].append(time.perf_counter() - start)
            med = {b: statistics.median(t) for b, t in times.items()}
            spread = {b: (min(t), max(t)) for b, t in times.items()}
            print(
                f"{name:22s} {cls.__name__:8s} reference {1e3 * med['reference']:8.1f} ms "
                f"({1e3 * spread['reference'][0]:.1f}-{1e3 * spread['reference'][1]:.1f})  "
                f"parallel {1e3 * med['auto']:8.1f} ms "
                f"({1e3 * spread['auto'][0]:.1f}-{1e3 * spread['auto'][1]:.1f})  "
                f"x {med['reference'] / med['auto']:.2f}"
            )


if __name__ == "__main__":
    main()
