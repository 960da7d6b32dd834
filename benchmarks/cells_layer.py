"""One recurrent layer's training step (forward + backward) for minGRU and minLSTM at the shapes
of workloads E and F: the step-by-step reference loop, the pure-torch parallel path
(``backend="fused"``: one GEMM, then a blocked scan in torch ops) and the compiled path
(``backend="compiled"``, what ``"auto"`` takes where the extension builds: the same GEMM, then
the time loop in C++).

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/cells_layer.py

Interleaved repeats (reference, fused, compiled, reference, ...), median and min-max of 7, after
a warm-up; each ratio is the reference's time over the path's, from the same run (rule 12). Freed
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
            times = {"reference": [], "fused": [], "compiled": []}
            for backend in times:
                step(layer, x, backend)  # warm-up
            for _ in range(7):
                for backend in times:
                    start = time.perf_counter()
                    step(layer, x, backend)
                    times[backend].append(time.perf_counter() - start)
            med = {b: statistics.median(t) for b, t in times.items()}
            cells = []
            for backend, ts in times.items():
                spread = f"({1e3 * min(ts):.1f}-{1e3 * max(ts):.1f})"
                cell = f"{backend} {1e3 * med[backend]:7.1f} ms {spread}"
                if backend != "reference":
                    cell += f" x {med['reference'] / med[backend]:.2f}"
                cells.append(cell)
            print(f"{name:20s} {cls.__name__:8s} " + "  ".join(cells), flush=True)
    print(time.strftime("%a %b %d %H:%M:%S UTC %Y", time.gmtime()), os.getloadavg())


if __name__ == "__main__":
    main()
