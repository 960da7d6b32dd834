"""The compiled kernel of the LSTM variants (:mod:`rnnlab.nn.backends.variant_compiled`,
``lstm_variant.cpp``) against the reference loop (:func:`rnnlab.nn.backends.reference.scan`
over :class:`rnnlab.nn.variants.VariantLSTMCell`).

Same cell, same masks: outputs, final states and the gradients of x, h0, c0 and every parameter
must agree, for each option alone (LayerNorm, projection, peepholes, recurrent dropout, zoneout
of c and of h, padding masks, reverse) and for all of them together, over random sizes, lengths
and seeds, in each of the kernel's three GEMM modes (row blocks, per-step oneDNN, per-step ATen).

Tolerances (relative: max |a - b| / max |b| per tensor). float32 at 1e-5 without LayerNorm
(worst seen over 200 random cases of the other options: 8e-7). LayerNorm makes float32
ill-conditioned, and every case with it is checked in float64 at 1e-10 (the kernel and the
reference agree to about 1e-14 there), and in float32 at 1e-4 only: over 700 random cases the
two float32 results differed by up to 5e-5 while each was within a few 1e-6 to 5e-5 of a
float64 run (the reference is not always the closer: the kernel's libmvec exp/tanh, up to 4
ulp, and float32 LayerNorm statistics). Sizes are I, P >= 4 and H >= 8 in float32: with a
row of 2 numbers (H = 2) or a product of rank 1-2 (I or P of 1-2; at rank 1 the normalised
product does not depend on the input's scale, so that gradient is pure rounding), both are
1e-4 to 1e-2 off float64; the float64 tests run those tiny sizes. gradcheck (float64) checks
the hand-written backward itself. bf16
mode (bf16 GEMM operands) is checked against a float32 emulation of the same rounding (forward,
2e-3) and against the float32 kernel (everything, 5e-2: LayerNorm amplifies the rounding of the
products it normalises).
"""

from __future__ import annotations

from types import ModuleType

import pytest
import torch
from torch import Tensor

from compiled_kernels import require_compiled_kernels
from rnnlab.nn.backends import reference, variant_compiled
from rnnlab.nn.cells import LSTMState
from rnnlab.nn.variants import CellNoise, VariantLSTMCell

OPTIONS = ("layer_norm", "proj", "peepholes", "recurrent", "zone_c", "zone_h", "mask", "reverse")
MODES = (1, 2, 3)  # row blocks, per step through oneDNN, per step through ATen


@pytest.fixture(autouse=True)
def ext() -> ModuleType:
    """The compiled extension; every test here needs it (see tests/compiled_kernels.py)."""
    return require_compiled_kernels()


def rel_err(a: Tensor, b: Tensor) -> float:
    """max |a - b| / max |b|: relative to the tensor's scale."""
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def make_case(seed: int, options: set[str], dtype=torch.float32, small: int = 4, even=False):
    """A random cell with the options on (parameters moved off their initial values, so every
    path carries signal), input, state, padding mask and noise. I, P >= ``small`` and
    H >= 2 ``small`` (see the module docstring for why float32 needs 4)."""
    g = torch.Generator().manual_seed(seed)
    r = lambda lo, hi: int(torch.randint(lo, hi + 1, (1,), generator=g))  # noqa: E731
    B, T, I, H = r(1, 9), r(1, 12), r(small, 10), r(2 * small, 24)
    if even:
        H += H % 2
    P = r(small, H - 1) if "proj" in options else 0
    if even and P:
        P = max(2, P - P % 2)
    torch.manual_seed(seed)
    cell = VariantLSTMCell(
        I, H, proj_size=P, layer_norm="layer_norm" in options, peepholes="peepholes" in options
    ).to(dtype)
    with torch.no_grad():
        for p in cell.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=g, dtype=dtype))
    R = cell.output_size
    x = torch.randn(B, T, I, generator=g, dtype=dtype)
    state = LSTMState(
        torch.randn(B, R, generator=g, dtype=dtype), torch.randn(B, H, generator=g, dtype=dtype)
    )
    mask = torch.rand(B, T, generator=g) < 0.7 if "mask" in options else None
    keep = 0.7
    recurrent = (
        (torch.rand(B, R, generator=g) < keep).to(dtype) / keep if "recurrent" in options else None
    )
    zone_c = (torch.rand(B, T, H, generator=g) < 0.4).to(dtype) if "zone_c" in options else None
    zone_h = (torch.rand(B, T, R, generator=g) < 0.4).to(dtype) if "zone_h" in options else None
    return cell, x, state, mask, CellNoise(recurrent, zone_c, zone_h)


def run(cell, x, state, mask, noise, *, reverse: bool, kernel: str, **kwargs) -> dict[str, Tensor]:
    """Outputs, final state and the gradients of a random linear loss of all three."""
    x = x.clone().requires_grad_(True)
    state = LSTMState(*(s.clone().requires_grad_(True) for s in state))
    cell.zero_grad()
    if kernel == "reference":
        out, final, _ = reference.scan(cell, x, state, mask, reverse=reverse, noise=noise)
    else:
        out, final = variant_compiled.lstm_variant(
            cell, x, state, mask, noise, reverse=reverse, **kwargs
        )
    g = torch.Generator().manual_seed(123)
    loss = sum((t * torch.randn(t.shape, generator=g).to(t.dtype)).sum() for t in (out, *final))
    loss.backward()
    result = {"out": out.detach(), "h": final.h.detach(), "c": final.c.detach(), "dx": x.grad}
    result.update(dh0=state.h.grad, dc0=state.c.grad)
    result.update({f"d{n}": p.grad.clone() for n, p in cell.named_parameters()})
    return result


def assert_agree(options: set[str], seed: int, dtype, small: int = 4, **kwargs) -> None:
    """The kernel against the reference: float64 within 1e-10; float32 within 1e-5, or 1e-4
    with LayerNorm (see the module docstring)."""
    tol = 1e-10 if dtype == torch.float64 else 1e-4 if "layer_norm" in options else 1e-5
    cell, x, state, mask, noise = make_case(seed, options, dtype, small)
    reverse = "reverse" in options
    want = run(cell, x, state, mask, noise, reverse=reverse, kernel="reference")
    got = run(cell, x, state, mask, noise, reverse=reverse, kernel="compiled", **kwargs)
    assert got.keys() == want.keys()
    for key in want:
        err = rel_err(got[key], want[key])
        assert err < tol, f"{key}: relative error {err:.2e}, options {sorted(options)}, seed {seed}"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("option", OPTIONS)
def test_each_option_matches_reference(option: str, mode: int) -> None:
    for seed in range(3):
        assert_agree({option}, seed, torch.float32, _mode=mode)
    if option == "layer_norm":
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
    """Random subsets of the options down to H = 2 (where float32 is ill-conditioned under
    LayerNorm), in float64: the kernel and the reference are then the same to 1e-10. (At H = 1
    LayerNorm's output is its bias: its gain's gradient is rounding noise on both sides.)"""
    g = torch.Generator().manual_seed(100 + seed)
    options = {o for o in OPTIONS if torch.rand(1, generator=g).item() < 0.6}
    assert_agree(options | {"proj"}, seed, torch.float64, small=1)
    assert_agree(options - {"proj"}, seed + 50, torch.float64, small=1)


def test_wide_layers_and_two_threads() -> None:
    """4H past 512 columns (H = 150: brgemm in 256-column slices, the last one of 88), a W_hh
    past the row blocks' 2 MiB (H = 512: per-step GEMMs in the automatic mode), a projection,
    and uneven row blocks on two threads (the reference runs on one: on a busy 2-core machine
    two threads make every small op many times slower)."""
    threads = torch.get_num_threads()
    for H, P in ((150, 0), (512, 0), (40, 30)):
        torch.manual_seed(H)
        cell = VariantLSTMCell(7, H, proj_size=P, layer_norm=True, peepholes=True)
        B, T = 21, 5  # 21 rows: uneven row blocks on two threads
        x, mask = torch.randn(B, T, 7), torch.rand(B, T) < 0.8
        state = LSTMState(torch.randn(B, cell.output_size), torch.randn(B, H))
        noise = CellNoise(None, (torch.rand(B, T, H) < 0.3).float(), None)
        want = run(cell, x, state, mask, noise, reverse=True, kernel="reference")
        try:
            torch.set_num_threads(2)
            for mode in (0, *MODES):
                got = run(cell, x, state, mask, noise, reverse=True, kernel="c", _mode=mode)
                for key in want:
                    assert rel_err(got[key], want[key]) < 1e-5, (H, P, mode, key)
        finally:
            torch.set_num_threads(threads)


class _Layer(torch.nn.Module):
    """The cell on the compiled kernel as a module, for torch.func.functional_call."""

    def __init__(self, cell: VariantLSTMCell) -> None:
        super().__init__()
        self.cell = cell

    def forward(self, x, h0, c0, mask, noise):
        out, final = variant_compiled.lstm_variant(
            self.cell, x, LSTMState(h0, c0), mask, noise, reverse=True
        )
        return out, final.h, final.c


@pytest.mark.parametrize(
    ("P", "options"),
    [(256, ""), (0, ""), (256, "noise"), (128, "mask"), (0, "ln"), (256, "ln noise mask")],
    ids=str,
)
def test_input_folded_into_the_step_gemm_with_padded_rows(P: int, options: str) -> None:
    """H = 512 (4H = 2048, rows 8 KiB apart: the per-step weights get a padded row) and a small
    W_ih: the per-step GEMMs over [x_t, h] take the input projection too, and the backward
    makes dW_ih and dW_hh in one GEMM; with LayerNorm the input projection is a GEMM of its own
    at each step and the LayerNorms run inside the gate passes. Every per-step mode against the
    reference loop."""
    torch.manual_seed(P)
    cell = VariantLSTMCell(16, 512, proj_size=P, layer_norm="ln" in options)
    with torch.no_grad():  # gains off 1, so that a misplaced one shows
        for name in ("ln_ih_weight", "ln_hh_weight", "ln_c_weight", "ln_c_bias"):
            if hasattr(cell, name):
                getattr(cell, name).add_(0.3 * torch.randn_like(getattr(cell, name)))
    R, B, T = cell.output_size, 9, 4
    x = torch.randn(B, T, 16)
    state = LSTMState(torch.randn(B, R), torch.randn(B, 512))
    mask = torch.rand(B, T) < 0.7 if "mask" in options else None
    noise = None
    if "noise" in options:
        keep = (torch.rand(B, R) < 0.7).float() / 0.7
        noise = CellNoise(keep, None, (torch.rand(B, T, R) < 0.4).float())
    for reverse in (False, True):
        want = run(cell, x, state, mask, noise, reverse=reverse, kernel="reference")
        for mode in (0, 2, 3):
            got = run(cell, x, state, mask, noise, reverse=reverse, kernel="c", _mode=mode)
            for k in want:
                assert rel_err(got[k], want[k]) < 1e-5, (k, reverse, mode)


def test_gradcheck_float64_all_options() -> None:
    torch.manual_seed(0)
    cell = VariantLSTMCell(3, 4, proj_size=3, layer_norm=True, peepholes=True).double()
    with torch.no_grad():
        for p in cell.parameters():
            p.add_(0.3 * torch.randn_like(p))
    layer = _Layer(cell)
    B, T = 2, 4
    x = torch.randn(B, T, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(B, 3, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(B, 4, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[True, True, False, True], [True, True, True, False]])
    noise = CellNoise(
        torch.tensor([[1.0, 0.0, 2.0], [2.0, 2.0, 0.0]], dtype=torch.float64),
        (torch.rand(B, T, 4) < 0.4).double(),
        (torch.rand(B, T, 3) < 0.4).double(),
    )
    names = [n for n, _ in layer.named_parameters()]

    def f(x, h0, c0, *params):
        values = dict(zip(names, params, strict=True))
        return torch.func.functional_call(layer, values, (x, h0, c0, mask, noise))

    params = [p.detach().clone().requires_grad_(True) for p in layer.parameters()]
    assert torch.autograd.gradcheck(f, (x, h0, c0, *params), eps=1e-6, atol=1e-7)


def test_inference_equals_training() -> None:
    cell, x, state, mask, noise = make_case(3, set(OPTIONS), torch.float32)
    out_t, fin_t = variant_compiled.lstm_variant(cell, x, state, mask, noise, reverse=False)
    with torch.no_grad():
        out_i, fin_i = variant_compiled.lstm_variant(cell, x, state, mask, noise, reverse=False)
    assert out_t.requires_grad and not out_i.requires_grad
    torch.testing.assert_close(out_i, out_t.detach(), rtol=0, atol=0)
    torch.testing.assert_close(fin_i.c, fin_t.c.detach(), rtol=0, atol=0)


def test_no_input_gradient_when_x_needs_none() -> None:
    cell, x, state, mask, noise = make_case(4, {"layer_norm", "proj"}, torch.float32)
    out, final = variant_compiled.lstm_variant(cell, x, state, mask, noise, reverse=False)
    out.sum().backward()
    assert x.grad is None and cell.weight_ih.grad is not None


def bf16_emulated_forward(cell, x, state, mask, noise, *, reverse: bool) -> Tensor:
    """The reference step with every GEMM operand rounded to bf16 (float32 everywhere else):
    what the kernel's bf16 mode computes."""
    bf = lambda t: t.bfloat16().float()  # noqa: E731
    H, eps = cell.hidden_size, cell.ln_eps
    ln = torch.nn.functional.layer_norm
    h, c = state
    outs = [None] * x.shape[1]
    for t in reversed(range(x.shape[1])) if reverse else range(x.shape[1]):
        h_in = h if noise.recurrent is None else h * noise.recurrent
        a_x, a_h = bf(x[:, t]) @ bf(cell.weight_ih).T, bf(h_in) @ bf(cell.weight_hh).T
        if cell.layer_norm:
            a_x = ln(a_x, (4 * H,), cell.ln_ih_weight, None, eps)
            a_h = ln(a_h, (4 * H,), cell.ln_hh_weight, None, eps)
        i, f, g, o = (a_x + a_h + cell.bias).chunk(4, 1)
        c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        c_hat = ln(c_new, (H,), cell.ln_c_weight, cell.ln_c_bias, eps) if cell.layer_norm else c_new
        h_new = torch.sigmoid(o) * torch.tanh(c_hat)
        if cell.proj_size:
            h_new = bf(h_new) @ bf(cell.weight_hr).T
        m = mask[:, t, None]
        h, c = torch.where(m, h_new, h), torch.where(m, c_new, c)
        outs[t] = h_new * m
    return torch.stack(outs, 1)


@pytest.mark.parametrize("seed", range(3))
def test_bf16_mode(seed: int) -> None:
    """bf16 mode against the float32 emulation of its rounding: the forward within 2e-3 (bf16
    roundings that fall differently on float32 sums of another order), and every gradient,
    against autograd through the emulation, within 3e-2 (the kernel's backward also rounds its
    own GEMM operands, dL/dA and dL/dh_new, to bf16; worst seen 1.2e-2)."""
    probe = VariantLSTMCell(2, 2), torch.zeros(1, 1, 2)
    if (why := variant_compiled.variant_unavailable(*probe, bf16=True)) is not None:
        pytest.skip(why)
    options = {"layer_norm", "proj", "mask", "recurrent", "reverse"} if seed else {"proj", "mask"}
    cell, x, state, mask, noise = make_case(seed, options, torch.float32, small=8, even=True)
    assert variant_compiled.variant_unavailable(cell, x, bf16=True) is None
    reverse = "reverse" in options
    results = []
    for bf16 in (False, True):
        xs = x.clone().requires_grad_(True)
        states = LSTMState(*(s.clone().requires_grad_(True) for s in state))
        cell.zero_grad()
        if bf16:
            out, _ = variant_compiled.lstm_variant(
                cell, xs, states, mask, noise, reverse=reverse, bf16=True
            )
        else:
            out = bf16_emulated_forward(cell, xs, states, mask, noise, reverse=reverse)
        g = torch.Generator().manual_seed(5)
        (out * torch.randn(out.shape, generator=g)).sum().backward()
        grads = {"x": xs.grad, "h0": states.h.grad, "c0": states.c.grad}
        results.append(
            {
                "out": out.detach(),
                **grads,
                **{n: p.grad.clone() for n, p in cell.named_parameters()},
            }
        )
    want, got = results
    assert rel_err(got["out"], want["out"]) < 2e-3
    for key in want:
        assert rel_err(got[key], want[key]) < 3e-2, key


def test_unavailable_reasons() -> None:
    cell = VariantLSTMCell(3, 5, proj_size=3)
    assert variant_compiled.variant_unavailable(cell, torch.zeros(1, 2, 3)) is None
    assert "float32 or float64" in variant_compiled.variant_unavailable(
        cell, torch.zeros(1, 2, 3, dtype=torch.float16)
    )
    assert "even" in variant_compiled.variant_unavailable(cell, torch.zeros(1, 2, 3), bf16=True)
    assert "VariantLSTMCell" in variant_compiled.variant_unavailable(
        torch.nn.Linear(2, 2), torch.zeros(1, 2, 3)
    )
