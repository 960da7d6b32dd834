"""The row blocks' GEMMs (``gemm_rows`` in ``_ext/recurrent.h``) against ATen: float32, and bf16
operands with float32 accumulation, whole and in column slices (float32 past 512 columns, bf16
when the packed weight passes 1 MiB), with uneven last slices, at the workloads' shapes, over
several steps of rows; and the forced slice widths that benchmarks/row_products_bench.py
compares."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from compiled_kernels import require_compiled_kernels

# (M, K, N): rows of a step, depth, columns
SHAPES = {
    "C step, whole": (64, 128, 512),
    "F forward, sliced": (64, 512, 2048),
    "F backward, bf16 sliced": (64, 2048, 512),
    "G forward, uneven slices": (20, 650, 2600),
    "G backward, uneven slices": (20, 2600, 650),
    "B forward, bf16 whole": (64, 256, 1024),
    "odd rows, uneven float32 slices": (7, 30, 600),
}


@pytest.mark.parametrize("columns", [0, 128, 100000])  # the kernels' rule, slices, whole
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_row_products_match_aten(
    shape: tuple[int, int, int], dtype: torch.dtype, columns: int
) -> None:
    ext = require_compiled_kernels()
    M, K, N = shape
    steps = 3
    g = torch.Generator().manual_seed(M * K + N)
    a = torch.randn(steps * M, K, generator=g).to(dtype)
    b = torch.randn(K, N, generator=g).to(dtype)
    if dtype == torch.bfloat16 and not ext.bf16_rows_work():
        pytest.skip("this CPU's oneDNN has no bf16 ukernel")
    got = ext.product_rows(a, b, steps, columns)
    want = a.double() @ b.double()  # the operands as given (bf16 values exactly), summed exactly
    assert got.dtype == torch.float32 and got.shape == (steps * M, N)
    scale = (a.double().abs() @ b.double().abs()).max()
    assert ((got.double() - want).abs().max() / scale).item() < 1e-6


def test_row_products_refuse_bad_operands() -> None:
    ext = require_compiled_kernels()
    with pytest.raises(RuntimeError, match=r"expects a \(M, K\) and b \(K, N\)"):
        ext.product_rows(torch.randn(3, 4), torch.randn(5, 6), 1, 0)
    with pytest.raises(RuntimeError, match="two float32 or two bf16 operands, got Float and Dou"):
        ext.product_rows(torch.randn(3, 4), torch.randn(4, 6, dtype=torch.float64), 1, 0)
    with pytest.raises(RuntimeError, match="expects steps dividing the 3 rows of a, got 2"):
        ext.product_rows(torch.randn(3, 4), torch.randn(4, 6), 2, 0)


def test_row_products_bench_runs_every_case() -> None:
    require_compiled_kernels()
    root = Path(__file__).resolve().parents[1]
    script = root / "benchmarks" / "row_products_bench.py"
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    done = subprocess.run(
        [sys.executable, str(script), "--steps", "1", "--repeats", "1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=True,
    )
    rows = [line.split() for line in done.stdout.splitlines() if "float32" in line.split()]
    assert len(rows) == 7, done.stdout  # every case, float32 at least
    assert all(float(rate) > 0 for row in rows for rate in row[-4:]), done.stdout
