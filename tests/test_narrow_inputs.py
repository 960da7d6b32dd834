"""The compiled LSTM kernels' path for narrow inputs (``small_inputs`` in
``_ext/recurrent.h``: I <= 4 in training, I = 1 in inference, pixel-by-pixel MNIST's width):
x_t W_ih^T is added to the gate rows instead of run as a per-step GEMM, and the backward
gathers dW_ih and dx in its time loop.
Against the reference cells: outputs, final states and every gradient within 1e-5 in float32,
on both sides of the width bound, in every padding, direction and thread split; in bf16 mode
within the tolerance of the other bf16 tests, with inference agreeing with training."""

from __future__ import annotations

import copy

import pytest
import torch

import rnnlab
from compiled_kernels import require_compiled_kernels
from rnnlab.nn.backends.ops import SMALL_INPUTS  # kSmallInputs in _ext/recurrent.h
from test_fast_kernels import _threads, assert_runs_agree, rel_err, run


@pytest.fixture(autouse=True)
def ext():
    return require_compiled_kernels()


@pytest.mark.parametrize("I", [1, 3, SMALL_INPUTS, SMALL_INPUTS + 1])
@pytest.mark.parametrize("padding", [None, "pre", "post"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_narrow_inputs_match_reference(I: int, padding: str | None, bidirectional: bool) -> None:
    torch.manual_seed(I)
    ref = rnnlab.LSTM(I, 24, num_layers=2, bidirectional=bidirectional, backend="reference")
    fast = copy.deepcopy(ref)
    fast.backend = "compiled"
    B, T = 37, 13  # uneven row blocks on 2 and 3 threads
    x = torch.randn(B, T, I)
    lengths = torch.randint(1, T + 1, (B,), generator=torch.Generator().manual_seed(1))
    kwargs = {} if padding is None else dict(lengths=lengths, padding=padding)
    want = run(ref, x, None, kwargs)
    grads_r = want[2]
    assert grads_r["x"].abs().max() > 0 and grads_r["cells.0.weight_ih"].abs().max() > 0
    for threads in (1, 2, 3):
        with _threads(threads):
            got = run(fast, x, None, kwargs)
            with torch.no_grad():
                out_i = fast(x, **kwargs)[0]
        assert_runs_agree(got, want, threads)
        assert rel_err(out_i, want[0]) < 1e-5, threads
        for p in fast.parameters():
            p.grad = None


@pytest.mark.parametrize("I", [1, 2, SMALL_INPUTS + 2])
def test_narrow_inputs_in_bf16_mode(I: int) -> None:
    """In bf16 mode a narrow x_t W_ih^T stays float32 (in training no GEMM reads it; in
    inference at I = 2 a float32 one does), the recurrent GEMMs take bf16 operands: within 2-3%
    of float32, and inference agrees with training."""
    torch.manual_seed(7)
    ref = rnnlab.LSTM(I, 40, backend="compiled")
    bf = copy.deepcopy(ref)
    bf.precision = "bf16"
    x = torch.randn(19, 30, I)
    out_r, fin_r, grads_r = run(ref, x, None, {})
    out_b, fin_b, grads_b = run(bf, x, None, {})
    assert rel_err(out_b, out_r) < 2e-2
    assert rel_err(out_b, out_r) > 1e-4  # the bf16 GEMMs did run
    for a, b in zip(fin_b, fin_r, strict=True):
        assert rel_err(a, b) < 2e-2
    for key in grads_r:
        assert grads_b[key].dtype == torch.float32, key
        assert rel_err(grads_b[key], grads_r[key]) < 3e-2, key
    with torch.no_grad():
        out_i = bf(x)[0]
    # the same arithmetic up to float32 summation order, which can flip a bf16 rounding of h
    assert rel_err(out_i, out_b) < 1e-4
