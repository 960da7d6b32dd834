"""A Linear folded into the first recurrent layer (rnnlab.nn.fold) and dropout from uniforms
(rnnlab.nn.dropout): the same function and gradients as the unfolded computation, the same
mask distribution as torch's dropout."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

import rnnlab
from rnnlab.config import ModelConfig
from rnnlab.models.classifiers import SequenceClassifier
from rnnlab.nn import MinGRU, MinLSTM
from rnnlab.nn.dropout import Dropout, dropout
from rnnlab.nn.fold import FOLDABLE, fold_input

K, I, H = 7, 12, 9


def _grads(layer: nn.Module, linear: nn.Linear, x: torch.Tensor, fold: bool, **kw):
    for p in [*layer.parameters(), *linear.parameters()]:
        p.grad = None
    if fold:
        out, _ = layer(x, input_projection=(linear.weight, linear.bias), **kw)
    else:
        out, _ = layer(linear(x), **kw)
    (out.sin() * torch.arange(out.shape[-1], dtype=out.dtype)).sum().backward()
    return [out.detach(), *(p.grad.clone() for p in [*layer.parameters(), *linear.parameters()])]


def _assert_close(a: list, b: list, rtol: float) -> None:
    for u, v in zip(a, b, strict=True):
        scale = u.abs().max().clamp_min(1e-12)
        assert ((u - v).abs().max() / scale).item() < rtol


_CLASSIC = [
    (rnnlab.LSTM, "compiled"),
    (rnnlab.LSTM, "fused"),
    (rnnlab.LSTM, "reference"),
    (rnnlab.LSTM, "torch"),
    (rnnlab.GRU, "compiled"),
    (rnnlab.GRU, "fused"),
    (rnnlab.RNN, "torch"),
]
_CASES = [(*case, bi) for case in _CLASSIC for bi in (False, True)]
_CASES += [(MinGRU, "auto", False), (MinLSTM, "auto", False)]  # one direction only


@pytest.mark.parametrize("cls,backend,bidirectional", _CASES)
def test_folded_equals_linear_then_layer_float32(cls, backend, bidirectional):
    """Outputs and every gradient (the layer's and the Linear's) within 1e-5 relative, two
    layers, random lengths; only the first layer folds."""
    torch.manual_seed(3)
    extra = {"bidirectional": True} if bidirectional else {}
    layer = cls(I, H, num_layers=2, backend=backend, **extra)
    linear = nn.Linear(K, I)
    x = torch.randn(5, 6, K)
    kw = {} if backend == "torch" else {"lengths": torch.tensor([6, 3, 1, 6, 4])}
    _assert_close(_grads(layer, linear, x, False, **kw), _grads(layer, linear, x, True, **kw), 1e-5)


def test_folded_float64_gradcheck():
    """gradcheck through the fold: the Linear's and the cell's input weights."""
    torch.manual_seed(0)
    layer = rnnlab.LSTM(4, 3, backend="reference").double()
    weight = torch.randn(4, 2, dtype=torch.double, requires_grad=True)
    bias = torch.randn(4, dtype=torch.double, requires_grad=True)
    x = torch.randn(2, 3, 2, dtype=torch.double)

    def f(w, b, w_ih):
        params = {"cells.0.weight_ih": w_ih}
        out, _ = torch.func.functional_call(layer, params, (x,), {"input_projection": (w, b)})
        return out

    w_ih = layer.cells[0].weight_ih.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(f, (weight, bias, w_ih))


def test_variant_cells_apply_the_linear_instead():
    """A LayerNorm LSTM normalises W_ih u before its bias, so folding would change the function:
    the layer applies the Linear itself and the result equals the unfolded run exactly."""
    torch.manual_seed(1)
    layer = rnnlab.LSTM(I, H, layer_norm=True, backend="fused")
    assert type(layer.cells[0]) not in FOLDABLE
    linear = nn.Linear(K, I)
    x = torch.randn(3, 4, K)
    a, b = _grads(layer, linear, x, False), _grads(layer, linear, x, True)
    _assert_close(a, b, 1e-6)
    x2, cells = fold_input("LSTM", list(layer.cells), 1, x, (linear.weight, linear.bias))
    assert x2.shape == (3, 4, I) and cells[0] is layer.cells[0]


def test_fold_leaves_the_layer_untouched():
    layer = rnnlab.LSTM(I, H)
    before = {k: v.clone() for k, v in layer.state_dict().items()}
    linear = nn.Linear(K, I)
    x, cells = fold_input("LSTM", list(layer.cells), 1, torch.randn(2, 3, K), (linear.weight, None))
    assert cells[0] is not layer.cells[0] and cells[0].weight_ih.shape == (4 * H, K)
    assert torch.equal(cells[0].bias, layer.cells[0].bias)  # no Linear bias: b unchanged
    for k, v in layer.state_dict().items():
        assert torch.equal(v, before[k])
    assert layer.cells[0].weight_ih.shape == (4 * H, I)


@pytest.mark.parametrize(
    "projection,x,message",
    [
        ((torch.randn(I + 1, K), None), torch.randn(2, 3, K), f"shape \\({I}, {K}\\)"),
        (
            (torch.randn(I, K), torch.randn(I + 2)),
            torch.randn(2, 3, K),
            f"bias of shape \\({I},\\)",
        ),
        ((torch.randn(I, K), None), torch.randn(2, 3, K + 1), f"\\(B, T, {K}\\)"),
        (torch.randn(I, K), torch.randn(2, 3, K), "as \\(weight, bias\\)"),
    ],
)
def test_bad_projections_say_what_was_expected(projection, x, message):
    with pytest.raises((ValueError, TypeError), match=message):
        rnnlab.LSTM(I, H)(x, input_projection=projection)


def test_classifier_folds_its_projection_and_matches_the_unfolded_model():
    """The MNIST model's Linear(28, 128) folds in training (no input dropout) and in eval; with
    input dropout it runs unfolded in training. Logits and gradients agree with the model run
    the plain way (projection, then the stack)."""
    torch.manual_seed(0)
    cfg = ModelConfig(input_size=6, projection=10, hidden_sizes=(8,), num_classes=3)
    model = SequenceClassifier(cfg)
    x = torch.randn(4, 5, 6)

    def plain():
        return model.head(model.stack(model.projection(x)))

    for fn in (model, plain):
        model.zero_grad()
        out = fn(x) if fn is model else fn()
        out.square().sum().backward()
        grads = [p.grad.clone() for p in model.parameters()]
        if fn is model:
            first = (out.detach(), grads)
    assert torch.allclose(first[0], out.detach(), rtol=1e-5, atol=1e-6)
    for g1, g2 in zip(first[1], grads, strict=True):
        assert torch.allclose(g1, g2, rtol=1e-5, atol=1e-6)

    calls = []
    hook = model.projection.register_forward_hook(lambda *a: calls.append(1))
    model(x)
    assert calls == []  # folded: the Linear module never ran
    dropped = SequenceClassifier(dataclasses.replace(cfg, input_dropout=0.2))
    dropped.projection.register_forward_hook(lambda *a: calls.append(1))
    dropped.train()(x)
    assert calls == [1]  # dropout between: the Linear runs first
    hook.remove()


def test_dropout_keeps_one_minus_p_and_scales():
    torch.manual_seed(0)
    x = torch.ones(400, 500)
    for p in (0.1, 0.5, 0.8):
        y = dropout(x, p, training=True)
        kept = (y != 0).float().mean().item()
        assert abs(kept - (1 - p)) < 4 * ((p * (1 - p) / x.numel()) ** 0.5)  # 4 sigma
        assert torch.allclose(y[y != 0], torch.full_like(y[y != 0], 1 / (1 - p)))
    assert dropout(x, 0.5, training=False) is x and dropout(x, 0.0) is x
    assert torch.count_nonzero(dropout(x, 1.0)) == 0


def test_dropout_gradient_is_the_mask_and_seeds_repeat():
    x = torch.randn(30, 40, requires_grad=True)
    torch.manual_seed(5)
    y = dropout(x, 0.3)
    y.sum().backward()
    assert torch.equal(x.grad, (y.detach() != 0).float() / 0.7)
    torch.manual_seed(5)
    assert torch.equal(dropout(x, 0.3), y)
    module = Dropout(0.3)
    assert module.state_dict() == {} and module.eval()(x) is x
    with pytest.raises(ValueError, match="probability p in \\[0, 1\\], got 1.5"):
        dropout(x, 1.5)
    assert dropout(x.double(), 0.3).dtype == torch.float64
    assert dropout(x.bfloat16(), 0.3).dtype == torch.bfloat16


def test_ctc_model_folds_its_projection_and_matches_the_unfolded_model():
    """mnist-lines' CTC model (Linear projection, then a bidirectional LSTM): log-probabilities
    and gradients equal those of the projection run first; the Linear module never runs."""
    from rnnlab.models.ctc import CTCModel

    torch.manual_seed(0)
    cfg = ModelConfig(
        input_size=6, projection=10, hidden_sizes=(8, 8), num_classes=3, bidirectional=True
    )
    model = CTCModel(cfg)
    x, lengths = torch.randn(4, 5, 6), torch.tensor([5, 2, 4, 1])

    def plain():
        h = model.projection(x)
        for layer in model.layers:
            h, _ = layer(h, lengths=lengths, padding="post")
        return torch.log_softmax(model.head(h), dim=-1)

    runs = []
    for fn in (lambda: model(x, lengths), plain):
        model.zero_grad()
        out = fn()
        (out * torch.linspace(-1, 1, out.shape[-1])).sum().backward()
        runs.append([out.detach(), *(p.grad.clone() for p in model.parameters())])
    _assert_close(runs[0], runs[1], 1e-5)
    calls = []
    model.projection.register_forward_hook(lambda *a: calls.append(1))
    model(x, lengths)
    assert calls == []
