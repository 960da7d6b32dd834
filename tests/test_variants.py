"""The LSTM variants (issue 23): LayerNorm, projection, peepholes, recurrent dropout, zoneout.

The reference step against a hand computation, the fused path against the reference loop
(outputs, final states, every gradient; gradcheck in float64), LSTMP against torch.nn.LSTM both
ways, recurrent dropout against Keras given the same mask, zoneout's eval mode, the routing rows
and the parameter counts. The compiled kernel has its own file (test_variant_kernels.py).
"""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from rnnlab.nn import LSTM
from rnnlab.nn.backends import route_layer, variant_fused
from rnnlab.nn.cells import LSTMCell, LSTMState
from rnnlab.nn.summary import summary
from rnnlab.nn.variants import CellNoise, StepNoise, VariantLSTMCell

ALL = {"proj_size": 3, "layer_norm": True, "peepholes": True}
OPTIONS = [
    {"proj_size": 3},
    {"layer_norm": True},
    {"peepholes": True},
    {"recurrent_dropout": 0.4},
    {"zoneout": (0.5, 0.2)},
    {**ALL, "recurrent_dropout": 0.3, "zoneout": 0.25},
]


def _randomise(module: nn.Module, seed: int) -> None:
    """Every parameter random (LayerNorm gains and peepholes start at 1 and 0, which would hide
    a wrong gradient or a wrong row)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)


def _noise_for(layer: LSTM, B: int, T: int, dtype: torch.dtype) -> list[CellNoise | None]:
    torch.manual_seed(11)
    like = torch.empty(0, dtype=dtype)
    return [cell.sample_noise(B, T, like) for cell in layer.cells]


def _run(layer: LSTM, x, state, lengths, noise, backend):
    out, final = layer(x, state, lengths=lengths, noise=noise, backend=backend)
    loss = (out * torch.linspace(-1, 1, out.shape[-1], dtype=out.dtype)).sum()
    loss = loss + (final.h**2).sum() + (final.c * 0.5).sum()
    inputs = [x, state.h, state.c, *layer.parameters()]
    return out, final, torch.autograd.grad(loss, inputs)


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "-".join(o))
@pytest.mark.parametrize("bidirectional", [False, True])
def test_fused_equals_reference(options, bidirectional):
    torch.manual_seed(len(options) + bidirectional)
    B, T, I, H = 4, 6, 5, 7
    layer = LSTM(I, H, num_layers=2, bidirectional=bidirectional, **options).double()
    _randomise(layer, 3)
    R, LD = layer.output_size, 2 * layer.num_directions
    x = torch.randn(B, T, I, dtype=torch.float64, requires_grad=True)
    state = LSTMState(
        torch.randn(LD, B, R, dtype=torch.float64, requires_grad=True),
        torch.randn(LD, B, H, dtype=torch.float64, requires_grad=True),
    )
    lengths = torch.tensor([6, 2, 5, 1])
    noise = _noise_for(layer, B, T, torch.float64)
    ref = _run(layer, x, state, lengths, noise, "reference")
    fused = _run(layer, x, state, lengths, noise, "fused")
    torch.testing.assert_close(fused[0], ref[0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(tuple(fused[1]), tuple(ref[1]), rtol=1e-10, atol=1e-12)
    for got, want in zip(fused[2], ref[2], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    assert ref[0][1, 2:].abs().max() == 0  # padded steps output zero


def test_gradcheck_fused_all_options():
    torch.manual_seed(0)
    cell = VariantLSTMCell(3, 4, proj_size=2, layer_norm=True, peepholes=True).double()
    _randomise(cell, 1)
    B, T = 2, 3
    noise = CellNoise(
        torch.tensor([[2.0, 0.0], [0.0, 2.0]], dtype=torch.float64),
        torch.bernoulli(torch.full((B, T, 4), 0.5, dtype=torch.float64)),
        torch.bernoulli(torch.full((B, T, 2), 0.5, dtype=torch.float64)),
    )
    mask = torch.tensor([[True, True, True], [True, True, False]])
    names = [name for name, _ in cell.named_parameters()]

    class Scan(nn.Module):  # the fused path as a module, so functional_call can swap weights
        def __init__(self):
            super().__init__()
            self.cell = cell

        def forward(self, x, h0, c0):
            out, final = variant_fused.scan(
                self.cell, x, LSTMState(h0, c0), mask, noise, reverse=True
            )
            return out, final.h, final.c

    scan = Scan()

    def f(x, h0, c0, *weights):
        params = {f"cell.{n}": w for n, w in zip(names, weights, strict=True)}
        return torch.func.functional_call(scan, params, (x, h0, c0))

    args = (
        torch.randn(B, T, 3, dtype=torch.float64, requires_grad=True),
        torch.randn(B, 2, dtype=torch.float64, requires_grad=True),
        torch.randn(B, 4, dtype=torch.float64, requires_grad=True),
        *(p.detach().clone().requires_grad_() for p in cell.parameters()),
    )
    assert torch.autograd.gradcheck(f, args)


def test_one_step_by_hand():
    """Every option at once, on numbers small enough to write the step out."""
    torch.manual_seed(5)
    I, H, P = 2, 3, 2
    cell = VariantLSTMCell(I, H, proj_size=P, layer_norm=True, peepholes=True).double()
    _randomise(cell, 7)
    x = torch.tensor([[0.3, -1.2]], dtype=torch.float64)
    h = torch.tensor([[0.5, -0.4]], dtype=torch.float64)
    c = torch.tensor([[0.1, -0.7, 0.9]], dtype=torch.float64)
    m_rec = torch.tensor([[2.0, 0.0]], dtype=torch.float64)
    d_c = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    d_h = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    got = cell(x, LSTMState(h, c), noise=StepNoise(m_rec, d_c, d_h))

    def ln(v, gain, bias=0.0, eps=1e-5):
        mean = sum(v) / len(v)
        var = sum((a - mean) ** 2 for a in v) / len(v)
        return [
            (a - mean) / (var + eps) ** 0.5 * g + (bias[k] if bias else 0.0)
            for k, (a, g) in enumerate(zip(v, gain, strict=True))
        ]

    W_ih, W_hh, b = cell.weight_ih.tolist(), cell.weight_hh.tolist(), cell.bias.tolist()
    xs, hs, cs = x[0].tolist(), (h * m_rec)[0].tolist(), c[0].tolist()
    a_x = [sum(W_ih[r][k] * xs[k] for k in range(I)) for r in range(4 * H)]
    a_h = [sum(W_hh[r][k] * hs[k] for k in range(P)) for r in range(4 * H)]
    a_x, a_h = ln(a_x, cell.ln_ih_weight.tolist()), ln(a_h, cell.ln_hh_weight.tolist())
    a = [a_x[r] + a_h[r] + b[r] for r in range(4 * H)]
    p = cell.peephole.tolist()
    sig = lambda v: 1 / (1 + torch.exp(-torch.tensor(v)).item())  # noqa: E731
    tanh = lambda v: torch.tanh(torch.tensor(v)).item()  # noqa: E731
    i = [sig(a[j] + p[j] * cs[j]) for j in range(H)]
    f = [sig(a[H + j] + p[H + j] * cs[j]) for j in range(H)]
    g = [tanh(a[2 * H + j]) for j in range(H)]
    c_new = [f[j] * cs[j] + i[j] * g[j] for j in range(H)]
    o = [sig(a[3 * H + j] + p[2 * H + j] * c_new[j]) for j in range(H)]
    c_hat = ln(c_new, cell.ln_c_weight.tolist(), cell.ln_c_bias.tolist())
    m = [o[j] * tanh(c_hat[j]) for j in range(H)]
    W_hr = cell.weight_hr.tolist()
    h_new = [sum(W_hr[r][k] * m[k] for k in range(H)) for r in range(P)]
    want_c = [cs[0], c_new[1], c_new[2]]  # d_c keeps unit 0
    want_h = [h_new[0], h[0, 1].item()]  # d_h keeps unit 1
    torch.testing.assert_close(got.c[0], torch.tensor(want_c, dtype=torch.float64))
    torch.testing.assert_close(got.h[0], torch.tensor(want_h, dtype=torch.float64))


def test_zoneout_and_recurrent_dropout_are_identity_in_eval():
    torch.manual_seed(0)
    noisy = LSTM(4, 5, num_layers=2, recurrent_dropout=0.5, zoneout=(0.5, 0.3)).eval()
    plain = LSTM(4, 5, num_layers=2).eval()
    for a, b in zip(plain.cells, noisy.cells, strict=True):
        for name in ("weight_ih", "weight_hh", "bias"):
            getattr(a, name).data.copy_(getattr(b, name))
    x = torch.randn(3, 8, 4)
    torch.testing.assert_close(noisy(x)[0], plain(x)[0], rtol=1e-6, atol=1e-7)
    noisy.train()  # in training the masks change the result
    assert not torch.allclose(noisy(x)[0], plain(x)[0], atol=1e-3)


def test_zoneout_with_a_fixed_mask_keeps_the_previous_state():
    """A unit whose mask is 1 at every step never moves from its initial state; with mask 0
    everywhere the layer is the plain LSTM, noise or not."""
    torch.manual_seed(1)
    layer = LSTM(3, 4, zoneout=0.5)
    B, T = 2, 5
    keep = torch.zeros(B, T, 4)
    keep[:, :, 2] = 1.0
    h0, c0 = torch.randn(1, B, 4), torch.randn(1, B, 4)
    out, final = layer(torch.randn(B, T, 3), LSTMState(h0, c0), noise=[CellNoise(None, keep, keep)])
    torch.testing.assert_close(out[:, :, 2], h0[0, :, 2, None].expand(B, T))
    torch.testing.assert_close(final.c[0, :, 2], c0[0, :, 2])
    assert (out[:, :, 0] != h0[0, :, 0, None]).all()


def test_lstmp_equals_torch_both_ways():
    torch.manual_seed(2)
    module = nn.LSTM(5, 8, num_layers=2, proj_size=3, batch_first=True, bidirectional=True)
    layer = LSTM.from_torch(module)
    assert layer.proj_size == 3 and layer.output_size == 3
    x = torch.randn(4, 6, 5, requires_grad=True)
    h0, c0 = torch.randn(4, 4, 3), torch.randn(4, 4, 8)
    want, (wh, wc) = module(x, (h0, c0))
    g_torch = torch.autograd.grad(want.sum() + wc.sum(), [x, module.weight_hr_l1_reverse])
    for backend in ("reference", "fused", "torch", "auto"):
        got, final = layer(x, LSTMState(h0, c0), backend=backend)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(final.h, wh, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(final.c, wc, rtol=1e-5, atol=1e-6)
        g_ours = torch.autograd.grad(got.sum() + final.c.sum(), [x, layer.cell(1, 1).weight_hr])
        for a, b in zip(g_ours, g_torch, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    back = layer.to_torch()
    assert back.proj_size == 3
    for name, p in module.named_parameters():
        if name.startswith("bias"):
            continue  # rnnlab keeps the sum of torch's two biases
        torch.testing.assert_close(getattr(back, name), p)
    torch.testing.assert_close(back(x, (h0, c0))[0], want, rtol=1e-5, atol=1e-6)


def test_to_torch_and_to_keras_refuse_what_they_cannot_express():
    with pytest.raises(ValueError, match="layer_norm"):
        LSTM(3, 4, layer_norm=True).to_torch()
    with pytest.raises(RuntimeError, match="not layer_norm"):
        LSTM(3, 4, layer_norm=True)(torch.randn(1, 2, 3), backend="torch")


def test_recurrent_dropout_equals_keras_given_the_same_mask():
    """Keras 3 draws one recurrent mask per gate (implementation 1); rnnlab one shared by the
    four gates. Given the same mask for all four, they compute the same steps."""
    os.environ["KERAS_BACKEND"] = "torch"
    keras = pytest.importorskip("keras")
    torch.manual_seed(3)
    B, T, I, H = 3, 5, 4, 6
    layer = LSTM(I, H, recurrent_dropout=0.4).double()
    _randomise(layer, 2)
    cell = keras.layers.LSTMCell(H, recurrent_dropout=0.4, dtype="float64")
    cell.build((None, I))
    w = layer.cells[0]
    cell.set_weights(
        [w.weight_ih.detach().T.numpy(), w.weight_hh.detach().T.numpy(), w.bias.detach().numpy()]
    )
    mask = torch.bernoulli(torch.full((B, H), 0.6, dtype=torch.float64)) / 0.6
    cell._recurrent_dropout_mask = [mask] * 4
    x = torch.randn(B, T, I, dtype=torch.float64)
    h = c = torch.zeros(B, H, dtype=torch.float64)
    want = []
    for t in range(T):
        h, (h, c) = cell(x[:, t], [h, c], training=True)
        want.append(torch.as_tensor(h))
    got, _ = layer(x, noise=[CellNoise(recurrent=mask)])
    # Keras's cell rounds through float32 somewhere on the torch backend: float32 tolerances
    want = torch.stack(want, 1).to(got.dtype)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(layer(x)[0], want, atol=1e-3)  # the mask matters


def test_parameter_counts_in_summary():
    I, H, P = 8, 16, 4
    plain = 4 * H * (I + H + 1)
    cases = {
        (): plain,
        (("proj_size", P),): 4 * H * (I + P + 1) + P * H,
        (("layer_norm", True),): plain + 10 * H,
        (("peepholes", True),): plain + 3 * H,
        (("recurrent_dropout", 0.5), ("zoneout", 0.1)): plain,
    }
    for options, want in cases.items():
        model = nn.Sequential(LSTM(I, H, **dict(options)))
        assert summary(model, (5, I)).total_params == want, options


def test_routing_rows():
    x = torch.randn(2, 3, 4)
    ln = LSTM(4, 5, layer_norm=True)
    proj = LSTM(4, 8, proj_size=3)
    states = lambda layer: [layer._cell_state(layer.zero_state(2), 0)]  # noqa: E731
    route = route_layer(ln.cells[:1], x, states(ln), None, backend="fused")
    assert route.kernels == ("fused.lstm_variant",)
    route = route_layer(ln.cells[:1], x, states(ln), None, backend="auto", return_gates=True)
    assert route.kernels == ("reference",)
    route = route_layer(proj.cells[:1], x, states(proj), None, backend="torch")
    assert route.kernels == ("torch.lstm",)
    with pytest.raises(RuntimeError, match="not layer_norm"):
        route_layer(ln.cells[:1], x, states(ln), None, backend="torch")
    noisy = LSTM(4, 8, proj_size=3, zoneout=0.2).train()
    with pytest.raises(RuntimeError, match="no recurrent dropout or zoneout"):
        noisy(x, backend="torch")
    assert noisy.eval()(x, backend="torch")[0].shape == (2, 3, 3)  # eval: no masks
    assert isinstance(LSTM(4, 5).cells[0], LSTMCell)  # the plain LSTM keeps its own cell


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="proj_size smaller than hidden_size"):
        LSTM(3, 4, proj_size=4)
    with pytest.raises(ValueError, match="zoneout"):
        LSTM(3, 4, zoneout=1.5)
    with pytest.raises(ValueError, match="recurrent_dropout in"):
        LSTM(3, 4, recurrent_dropout=-0.1)
    layer = LSTM(3, 4, proj_size=2)
    with pytest.raises(ValueError, match="state.h"):
        layer(torch.randn(1, 2, 3), LSTMState(torch.zeros(1, 1, 4), torch.zeros(1, 1, 4)))


def test_layer_norm_matches_functional_layer_norm():
    """The gates' LayerNorm is torch's (biased variance, eps inside the root)."""
    cell = VariantLSTMCell(3, 4, layer_norm=True)
    _randomise(cell, 0)
    x = torch.randn(2, 3)
    want = F.layer_norm(x @ cell.weight_ih.T, (16,), cell.ln_ih_weight, None, 1e-5)
    torch.testing.assert_close(cell.gate_inputs(x), want)
