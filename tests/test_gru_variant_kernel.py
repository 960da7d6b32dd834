"""The compiled kernel of the GRU variants (:mod:`rnnlab.nn.backends.gru_variant_compiled`,
``gru_variant.cpp``) against the reference loop (:func:`rnnlab.nn.backends.reference.scan`
over :class:`rnnlab.nn.variant_gru.VariantGRUCell`).

Same cell, same masks: outputs, final state and the gradients of x, h0 and every parameter
(weight_ih, weight_hh, bias, bias_hn and, with LayerNorm, ln_ih_weight and ln_hh_weight) must
agree, for each option alone (LayerNorm, recurrent dropout, zoneout, padding masks, reverse)
and all of them together, over random sizes, lengths and seeds, in both of the kernel's GEMM
modes (row blocks, per-step ATen). gradcheck (float64) checks the hand-written backward itself.

Tolerances (relative: max |a - b| / max |b| per tensor): float64 within 1e-10 (the two agree to
about 1e-15), float32 within 1e-5: the worst seen over 2,000 random cases (make_case's seeds
0-999 with random options, then with LayerNorm always on; both modes) was 7.7e-6 (seed 846,
LayerNorm and reverse at H = 8, the gradient of bias_hn), where the kernel was 5.4e-6 from a
float64 run and the reference 2.3e-6: float32 rounding, the kernel's exp and tanh being
libmvec's (up to 4 ulp). Sizes are I >= 4 and H >= 8 in float32, as for the LSTM variants' kernel
(tests/test_variant_kernels.py: at I of 1-2 or H = 2 LayerNorm makes float32 ill-conditioned);
the float64 tests run the tiny sizes.
"""

from __future__ import annotations

import os

import pytest
import torch
from torch import Tensor

from rnnlab.nn.backends import gru_variant_compiled, reference
from rnnlab.nn.variant_gru import VariantGRUCell
from rnnlab.nn.variants import CellNoise
from test_variant_kernels import rel_err

OPTIONS = ("layer_norm", "recurrent", "zone_h", "mask", "reverse")
MODES = (1, 2)  # row blocks, per step through ATen


@pytest.fixture(autouse=True)
def kernel() -> None:
    """Every test here needs the compiled kernel: skipped with the reason where it cannot be
    built, failed in CI (as tests/compiled_kernels.py does for the shared extension)."""
    why = gru_variant_compiled.gru_variant_unavailable(VariantGRUCell(2, 2), torch.zeros(1, 1, 2))
    if why is None:
        return
    reason = f"compiled GRU-variant kernel unavailable: {why}"
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so the kernel must build and be tested)")
    pytest.skip(reason)


def make_case(seed: int, options: set[str], dtype=torch.float32, small: int = 4):
    """A random cell with the options on (parameters moved off their initial values, so every
    path carries signal: the LayerNorm gains start at 1, bias_hn at 0), input, h0, padding
    mask and noise. I >= ``small``, H >= 2 ``small``."""
    g = torch.Generator().manual_seed(seed)
    r = lambda lo, hi: int(torch.randint(lo, hi + 1, (1,), generator=g))  # noqa: E731
    B, T, I, H = r(1, 9), r(1, 12), r(small, 10), r(2 * small, 24)
    torch.manual_seed(seed)
    cell = VariantGRUCell(I, H, layer_norm="layer_norm" in options).to(dtype)
    with torch.no_grad():
        for p in cell.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=dtype))
    x = torch.randn(B, T, I, generator=g, dtype=dtype)
    h0 = torch.randn(B, H, generator=g, dtype=dtype)
    mask = None
    if "mask" in options:  # lengths, as the layer's padding gives them (every row >= 1)
        lengths = torch.randint(1, T + 1, (B,), generator=g)
        mask = torch.arange(T)[None, :] < lengths[:, None]
    keep = 0.7
    recurrent = (
        (torch.rand(B, H, generator=g) < keep).to(dtype) / keep if "recurrent" in options else None
    )
    zone_h = (torch.rand(B, T, H, generator=g) < 0.4).to(dtype) if "zone_h" in options else None
    return cell, x, h0, mask, CellNoise(recurrent, None, zone_h)


def run(cell, x, h0, mask, noise, *, reverse: bool, kernel: str, **kwargs) -> dict[str, Tensor]:
    """Output, final h and the gradients of a random linear loss of both."""
    x = x.clone().requires_grad_(True)
    h0 = h0.clone().requires_grad_(True)
    cell.zero_grad()
    if kernel == "reference":
        out, h_n, _ = reference.scan(cell, x, h0, mask, reverse=reverse, noise=noise)
    else:
        out, h_n = gru_variant_compiled.gru_variant(
            cell, x, h0, mask, noise, reverse=reverse, **kwargs
        )
    g = torch.Generator().manual_seed(123)
    loss = sum((t * torch.randn(t.shape, generator=g).to(t.dtype)).sum() for t in (out, h_n))
    loss.backward()
    result = {"out": out.detach(), "h": h_n.detach(), "dx": x.grad, "dh0": h0.grad}
    result.update({f"d{n}": p.grad.clone() for n, p in cell.named_parameters()})
    return result


def worst_error(options: set[str], seed: int, dtype, small: int = 4, **kwargs) -> float:
    """The largest relative error over every tensor of :func:`run`, kernel against reference
    (and a check that both produced the same set of gradients)."""
    cell, x, h0, mask, noise = make_case(seed, options, dtype, small)
    reverse = "reverse" in options
    want = run(cell, x, h0, mask, noise, reverse=reverse, kernel="reference")
    got = run(cell, x, h0, mask, noise, reverse=reverse, kernel="compiled", **kwargs)
    assert got.keys() == want.keys()
    if "layer_norm" in options:
        assert {"dln_ih_weight", "dln_hh_weight"} <= got.keys()
    return max(rel_err(got[key], want[key]) for key in want)


def assert_agree(options: set[str], seed: int, dtype, small: int = 4, **kwargs) -> None:
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    err = worst_error(options, seed, dtype, small, **kwargs)
    assert err < tol, f"relative error {err:.2e}, options {sorted(options)}, seed {seed}, {dtype}"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("option", OPTIONS)
def test_each_option_matches_reference(option: str, mode: int) -> None:
    for seed in range(3):
        assert_agree({option}, seed, torch.float32, _mode=mode)
    assert_agree({option}, 3, torch.float64, _mode=mode)


@pytest.mark.parametrize("mode", (0, *MODES))
@pytest.mark.parametrize("seed", range(4))
def test_all_options_match_reference(seed: int, mode: int) -> None:
    options = set(OPTIONS) - ({"reverse"} if seed % 2 else set())
    assert_agree(options, seed, torch.float32, _mode=mode)
    assert_agree(options, seed, torch.float64, _mode=mode)
    assert_agree(options - {"layer_norm"}, seed, torch.float32, _mode=mode)


@pytest.mark.parametrize("seed", range(6))
def test_random_options_float64_any_size(seed: int) -> None:
    """Random subsets of the options down to I = 1, H = 2, in float64, both modes."""
    g = torch.Generator().manual_seed(100 + seed)
    options = {o for o in OPTIONS if torch.rand(1, generator=g).item() < 0.6}
    for mode in MODES:
        assert_agree(options, seed, torch.float64, small=1, _mode=mode)


def test_padding_by_lengths_matches_reference() -> None:
    """Every row a different length, including a row of length 1 and a full one, both
    directions, LayerNorm and both masks: the padded steps output zero and carry h."""
    for reverse in (False, True):
        cell, x, h0, _, noise = make_case(7, {"layer_norm", "recurrent", "zone_h"}, torch.float64)
        B, T = x.shape[:2]
        lengths = torch.arange(B) % T + 1
        mask = torch.arange(T)[None, :] < lengths[:, None]
        want = run(cell, x, h0, mask, noise, reverse=reverse, kernel="reference")
        got = run(cell, x, h0, mask, noise, reverse=reverse, kernel="compiled")
        assert (got["out"][~mask] == 0).all()
        for key in want:
            assert rel_err(got[key], want[key]) < 1e-10, (reverse, key)


def test_wide_layers_and_two_threads() -> None:
    """3H past 512 columns (H = 200: brgemm in column slices), a W_hh past the row blocks'
    2 MiB (H = 512: per-step GEMMs in the automatic mode), and uneven row blocks on two threads
    (the reference runs on one)."""
    threads = torch.get_num_threads()
    for H in (200, 512):
        torch.manual_seed(H)
        cell = VariantGRUCell(7, H, layer_norm=True)
        B, T = 21, 5  # 21 rows: uneven row blocks on two threads
        x, mask = torch.randn(B, T, 7), torch.rand(B, T) < 0.8
        h0 = torch.randn(B, H)
        noise = CellNoise((torch.rand(B, H) < 0.7).float() / 0.7, None, None)
        want = run(cell, x, h0, mask, noise, reverse=True, kernel="reference")
        try:
            torch.set_num_threads(2)
            for mode in (0, *MODES):
                got = run(cell, x, h0, mask, noise, reverse=True, kernel="c", _mode=mode)
                for key in want:
                    assert rel_err(got[key], want[key]) < 1e-5, (H, mode, key)
        finally:
            torch.set_num_threads(threads)


class _Layer(torch.nn.Module):
    """The cell on the compiled kernel as a module, for torch.func.functional_call."""

    def __init__(self, cell: VariantGRUCell) -> None:
        super().__init__()
        self.cell = cell

    def forward(self, x, h0, mask, noise, reverse):
        return gru_variant_compiled.gru_variant(self.cell, x, h0, mask, noise, reverse=reverse)


@pytest.mark.parametrize("layer_norm", [True, False])
@pytest.mark.parametrize("reverse", [False, True])
def test_gradcheck_float64_all_options(layer_norm: bool, reverse: bool) -> None:
    torch.manual_seed(0)
    cell = VariantGRUCell(3, 4, layer_norm=layer_norm).double()
    with torch.no_grad():
        for p in cell.parameters():
            p.add_(0.3 * torch.randn_like(p))
    layer = _Layer(cell)
    B, T = 2, 4
    x = torch.randn(B, T, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(B, 4, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[True, True, True, False], [True, True, False, False]])
    noise = CellNoise(
        torch.tensor([[1.0, 0.0, 2.0, 2.0], [2.0, 2.0, 0.0, 2.0]], dtype=torch.float64),
        None,
        (torch.rand(B, T, 4) < 0.4).double(),
    )
    names = [n for n, _ in layer.named_parameters()]

    def f(x, h0, *params):
        values = dict(zip(names, params, strict=True))
        return torch.func.functional_call(layer, values, (x, h0, mask, noise, reverse))

    params = [p.detach().clone().requires_grad_(True) for p in layer.parameters()]
    assert torch.autograd.gradcheck(f, (x, h0, *params), eps=1e-6, atol=1e-7)


def test_inference_equals_training() -> None:
    for options in (set(OPTIONS), set(OPTIONS) - {"layer_norm"}):
        cell, x, h0, mask, noise = make_case(3, options, torch.float32)
        out_t, h_t = gru_variant_compiled.gru_variant(cell, x, h0, mask, noise, reverse=True)
        with torch.no_grad():
            out_i, h_i = gru_variant_compiled.gru_variant(cell, x, h0, mask, noise, reverse=True)
        assert out_t.requires_grad and not out_i.requires_grad
        torch.testing.assert_close(out_i, out_t.detach(), rtol=0, atol=0)
        torch.testing.assert_close(h_i, h_t.detach(), rtol=0, atol=0)


def test_no_input_gradient_when_x_needs_none() -> None:
    cell, x, h0, mask, noise = make_case(4, {"layer_norm", "mask"}, torch.float32)
    out, h_n = gru_variant_compiled.gru_variant(cell, x, h0, mask, noise, reverse=False)
    (out.sum() + h_n.sum()).backward()
    assert x.grad is None and cell.weight_ih.grad is not None
    assert cell.ln_ih_weight.grad is not None and cell.bias_hn.grad is not None


def test_unavailable_reasons_and_errors() -> None:
    cell = VariantGRUCell(3, 5, layer_norm=True)
    assert gru_variant_compiled.gru_variant_unavailable(cell, torch.zeros(1, 2, 3)) is None
    assert "float32 or float64" in gru_variant_compiled.gru_variant_unavailable(
        cell, torch.zeros(1, 2, 3, dtype=torch.float16)
    )
    assert "weights torch.float64" in gru_variant_compiled.gru_variant_unavailable(
        VariantGRUCell(3, 5).double(), torch.zeros(1, 2, 3)
    )
    assert "VariantGRUCell" in gru_variant_compiled.gru_variant_unavailable(
        torch.nn.Linear(2, 2), torch.zeros(1, 2, 3)
    )
    cell = VariantGRUCell(3, 5)
    with pytest.raises(ValueError, match=r"expected h of shape \(2, 5\), got \(2, 4\)"):
        gru_variant_compiled.gru_variant(
            cell, torch.zeros(2, 3, 3), torch.zeros(2, 4), None, None, reverse=False
        )
    with pytest.raises(ValueError, match="no zone_c"):
        gru_variant_compiled.gru_variant(
            cell, torch.zeros(2, 3, 3), torch.zeros(2, 5), None,
            CellNoise(None, torch.zeros(2, 3, 5), None), reverse=False,
        )  # fmt: skip
