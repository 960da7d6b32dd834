"""The row blocks' GEMMs (``gemm_rows`` in ``_ext/recurrent.h``) against ATen: float32, and bf16
operands with float32 accumulation, whole and in column slices (float32 past 512 columns, bf16
when the packed weight passes 1 MiB), with uneven last slices, at the workloads' shapes."""

from __future__ import annotations

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


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_row_products_match_aten(shape: tuple[int, int, int], dtype: torch.dtype) -> None:
    ext = require_compiled_kernels()
    M, K, N = shape
    g = torch.Generator().manual_seed(M * K + N)
    a = torch.randn(M, K, generator=g).to(dtype)
    b = torch.randn(K, N, generator=g).to(dtype)
    if dtype == torch.bfloat16 and not ext.bf16_rows_work():
        pytest.skip("this CPU's oneDNN has no bf16 ukernel")
    got = ext.product_rows(a, b)
    want = a.double() @ b.double()  # the operands as given (bf16 values exactly), summed exactly
    assert got.dtype == torch.float32 and got.shape == (M, N)
    scale = (a.double().abs() @ b.double().abs()).max()
    assert ((got.double() - want).abs().max() / scale).item() < 1e-6


def test_row_products_refuse_bad_operands() -> None:
    ext = require_compiled_kernels()
    with pytest.raises(RuntimeError, match=r"expects a \(M, K\) and b \(K, N\)"):
        ext.product_rows(torch.randn(3, 4), torch.randn(5, 6))
    with pytest.raises(RuntimeError, match="two float32 or two bf16 operands, got Float and Dou"):
        ext.product_rows(torch.randn(3, 4), torch.randn(4, 6, dtype=torch.float64))
