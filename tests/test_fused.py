"""The fast path against the readable reference: outputs, final states and every gradient."""

import random

import pytest
import torch

from rnnlab import GRU, LSTM, RNN, LSTMState

LAYERS = {"LSTM": LSTM, "GRU": GRU, "RNN": RNN}


def _flatten_state(state):
    return list(state) if isinstance(state, LSTMState) else [state]


def _run(model, x, backend, **kwargs):
    """Forward and backward of a loss that weighs every output and state element differently,
    so no gradient can cancel; returns outputs, states and all gradients."""
    model.backend = backend
    model.zero_grad()
    x = x.detach().clone().requires_grad_(True)
    out, state = model(x, **kwargs)
    states = _flatten_state(state)
    g = torch.Generator().manual_seed(123)
    loss = sum((t * torch.randn(t.shape, generator=g, dtype=t.dtype)).sum() for t in [out, *states])
    loss.backward()
    grads = [x.grad] + [p.grad for p in model.parameters()]
    return [out, *states], grads


def _assert_close_rel(a, b, rtol, what):
    scale = max(b.abs().max().item(), 1e-3)
    err = (a - b).abs().max().item()
    assert err <= rtol * scale, f"{what}: max |diff| {err:.3g} > {rtol} x {scale:.3g}"


def _random_case(seed):
    rng = random.Random(seed)
    B, T = rng.randint(1, 6), rng.randint(1, 14)
    kind = rng.choice(["none", "post", "pre", "mask"])
    kwargs = {}
    if kind in ("post", "pre"):
        kwargs = {"lengths": torch.tensor([rng.randint(1, T) for _ in range(B)]), "padding": kind}
    elif kind == "mask":
        m = torch.rand(B, T, generator=torch.Generator().manual_seed(seed)) > 0.3
        kwargs = {"mask": m}
    config = dict(
        input_size=rng.randint(1, 9),
        hidden_size=rng.randint(1, 12),
        num_layers=rng.randint(1, 3),
        bidirectional=rng.random() < 0.5,
    )
    return B, T, config, kwargs


@pytest.mark.parametrize("name", list(LAYERS))
@pytest.mark.parametrize("seed", range(12))
def test_fused_matches_reference_fp32(name, seed):
    B, T, config, kwargs = _random_case(seed * 7 + len(name))
    torch.manual_seed(seed)
    model = LAYERS[name](**config)
    with torch.no_grad():  # non-zero biases everywhere, so bias gradients are exercised
        for p in model.parameters():
            if p.dim() == 1:
                p.normal_(0, 0.5)
    x = torch.randn(B, T, config["input_size"])
    ref_values, ref_grads = _run(model, x, "reference", **kwargs)
    fused_values, fused_grads = _run(model, x, "fused", **kwargs)
    for k, (a, b) in enumerate(zip(fused_values, ref_values, strict=True)):
        _assert_close_rel(a, b, 1e-5, f"{name} {config} {kwargs.keys()} value {k}")
    names = ["input"] + [n for n, _ in model.named_parameters()]
    for n, a, b in zip(names, fused_grads, ref_grads, strict=True):
        _assert_close_rel(a, b, 1e-5, f"{name} {config} grad of {n}")


@pytest.mark.parametrize("name", list(LAYERS))
@pytest.mark.parametrize("padding", ["post", "pre"])
def test_gradcheck_fused_float64(name, padding):
    torch.manual_seed(0)
    model = LAYERS[name](3, 4, num_layers=2, bidirectional=True, backend="fused").double()
    x = torch.randn(3, 5, 3, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([5, 2, 4])
    names = [n for n, _ in model.named_parameters()]

    def f(x, *ps):
        params = dict(zip(names, ps, strict=True))
        kwargs = {"lengths": lengths, "padding": padding}
        out, state = torch.func.functional_call(model, params, (x,), kwargs)
        return (out, *_flatten_state(state))

    inputs = (x, *[p.detach().clone().requires_grad_(True) for p in model.parameters()])
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", list(LAYERS))
def test_gradcheck_reference_float64(name):
    torch.manual_seed(1)
    model = LAYERS[name](2, 3, backend="reference").double()
    x = torch.randn(2, 4, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: model(x)[0], (x,), eps=1e-6, atol=1e-6)


def test_saturated_inputs_agree_and_stay_finite():
    torch.manual_seed(0)
    model = LSTM(4, 5, bidirectional=True)
    x = torch.randn(3, 30, 4) * 1e3
    ref_values, ref_grads = _run(model, x, "reference")
    fused_values, fused_grads = _run(model, x, "fused")
    for a, b in zip(fused_values + fused_grads, ref_values + ref_grads, strict=True):
        assert torch.isfinite(a).all()
        _assert_close_rel(a, b, 1e-5, "saturated")


def test_inference_without_grad_matches():
    torch.manual_seed(0)
    model = GRU(3, 4, num_layers=2).eval()
    x = torch.randn(2, 6, 3)
    with torch.no_grad():
        model.backend = "fused"
        a, _ = model(x)
        model.backend = "reference"
        b, _ = model(x)
    _assert_close_rel(a, b, 1e-5, "no_grad")
