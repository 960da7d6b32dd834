"""The GRU variants (issue 23): LayerNorm, recurrent dropout and zoneout on rnnlab.GRU.

The reference step against a hand computation, the fused path against the reference loop
(outputs, final states, every gradient; gradcheck in float64), recurrent dropout against Keras's
GRU given the same mask, zoneout's eval mode and fixed masks, the routing rows, the parameter
counts, the interop refusals and the preset settings.
"""

from __future__ import annotations

import math
import os

import pytest
import torch
from torch import nn

from rnnlab.config import ConfigError, load_preset
from rnnlab.nn import GRU
from rnnlab.nn.backends import route_layer, variant_fused
from rnnlab.nn.cells import GRUCell
from rnnlab.nn.summary import summary
from rnnlab.nn.variant_gru import VariantGRUCell
from rnnlab.nn.variants import CellNoise, StepNoise
from rnnlab.tasks import build_model

OPTIONS = [
    {"layer_norm": True},
    {"recurrent_dropout": 0.4},
    {"zoneout": 0.3},
    {"layer_norm": True, "recurrent_dropout": 0.3, "zoneout": 0.25},
]


def _randomise(module: nn.Module, seed: int) -> None:
    """Every parameter random (the LayerNorm gains start at 1, which would hide a wrong row)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)


def _run(layer: GRU, x, h0, lengths, noise, backend):
    out, final = layer(x, h0, lengths=lengths, noise=noise, backend=backend)
    loss = (out * torch.linspace(-1, 1, out.shape[-1], dtype=out.dtype)).sum() + (final**2).sum()
    return out, final, torch.autograd.grad(loss, [x, h0, *layer.parameters()])


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: "-".join(o))
@pytest.mark.parametrize("bidirectional", [False, True])
def test_fused_equals_reference(options, bidirectional):
    torch.manual_seed(len(options) + bidirectional)
    B, T, I, H = 4, 6, 5, 7
    layer = GRU(I, H, num_layers=2, bidirectional=bidirectional, **options).double()
    _randomise(layer, 3)
    LD = 2 * layer.num_directions
    x = torch.randn(B, T, I, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(LD, B, H, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([6, 2, 5, 1])
    torch.manual_seed(11)
    like = torch.empty(0, dtype=torch.float64)
    noise = [cell.sample_noise(B, T, like) for cell in layer.cells]
    ref = _run(layer, x, h0, lengths, noise, "reference")
    for backend in ("fused", "auto"):
        fused = _run(layer, x, h0, lengths, noise, backend)
        torch.testing.assert_close(fused[0], ref[0], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(fused[1], ref[1], rtol=1e-10, atol=1e-12)
        for got, want in zip(fused[2], ref[2], strict=True):
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    assert ref[0][1, 2:].abs().max() == 0  # padded steps output zero
    # float32 within 1e-5 of the float64 reference
    out32, _ = layer.float()(
        x.detach().float(),
        h0.detach().float(),
        lengths=lengths,
        noise=[CellNoise(*(m if m is None else m.float() for m in n)) for n in noise],
    )
    torch.testing.assert_close(out32.double(), ref[0], rtol=1e-5, atol=1e-5)


def test_gradcheck_fused_all_options():
    cell = VariantGRUCell(3, 4, layer_norm=True).double()
    _randomise(cell, 1)
    B, T = 2, 3
    torch.manual_seed(0)
    noise = CellNoise(
        torch.tensor([[2.0, 0.0, 2.0, 2.0], [0.0, 2.0, 2.0, 0.0]], dtype=torch.float64),
        None,
        torch.bernoulli(torch.full((B, T, 4), 0.5, dtype=torch.float64)),
    )
    mask = torch.tensor([[True, True, True], [True, True, False]])
    names = [name for name, _ in cell.named_parameters()]

    class Scan(nn.Module):
        def __init__(self):
            super().__init__()
            self.cell = cell

        def forward(self, x, h0):
            return variant_fused.scan(self.cell, x, h0, mask, noise, reverse=True)

    scan = Scan()

    def f(x, h0, *weights):
        params = {f"cell.{n}": w for n, w in zip(names, weights, strict=True)}
        return torch.func.functional_call(scan, params, (x, h0))

    args = (
        torch.randn(B, T, 3, dtype=torch.float64, requires_grad=True),
        torch.randn(B, 4, dtype=torch.float64, requires_grad=True),
        *(p.detach().clone().requires_grad_() for p in cell.parameters()),
    )
    assert torch.autograd.gradcheck(f, args)


def _ln(v: list[float], gain: list[float]) -> list[float]:
    mean = sum(v) / len(v)
    var = sum((a - mean) ** 2 for a in v) / len(v)
    return [(a - mean) / math.sqrt(var + 1e-5) * g for a, g in zip(v, gain, strict=True)]


def test_one_step_by_hand():
    """Every option on, one step of two units, written out with Python floats."""
    H, I = 2, 3
    cell = VariantGRUCell(I, H, layer_norm=True, recurrent_dropout=0.5, zoneout=0.5).double()
    _randomise(cell, 5)
    x = torch.randn(1, I, dtype=torch.float64)
    h = torch.randn(1, H, dtype=torch.float64)
    m_rec = torch.tensor([[2.0, 0.0]], dtype=torch.float64)
    d = torch.tensor([[0.0, 1.0]], dtype=torch.float64)  # unit 1 keeps its previous value
    got = cell(x, h, noise=StepNoise(m_rec, None, d))
    W_ih, W_hh = cell.weight_ih.tolist(), cell.weight_hh.tolist()
    b, b_hn = cell.bias.tolist(), cell.bias_hn.tolist()
    xs, hs = x[0].tolist(), h[0].tolist()
    h_in = [hs[k] * m_rec[0, k].item() for k in range(H)]
    a_x = _ln(
        [sum(W_ih[r][k] * xs[k] for k in range(I)) for r in range(3 * H)],
        cell.ln_ih_weight.tolist(),
    )
    a_h = _ln(
        [sum(W_hh[r][k] * h_in[k] for k in range(H)) for r in range(3 * H)],
        cell.ln_hh_weight.tolist(),
    )
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    want = []
    for u in range(H):
        r = sig(a_x[u] + b[u] + a_h[u])
        z = sig(a_x[H + u] + b[H + u] + a_h[H + u])
        n = math.tanh(a_x[2 * H + u] + b[2 * H + u] + r * (a_h[2 * H + u] + b_hn[u]))
        h_new = (1 - z) * n + z * hs[u]  # the carried h, not the dropped-out one
        want.append(hs[u] if d[0, u] else h_new)
    torch.testing.assert_close(got[0], torch.tensor(want, dtype=torch.float64))


def test_zoneout_and_recurrent_dropout_are_identity_in_eval():
    torch.manual_seed(0)
    noisy = GRU(4, 5, num_layers=2, recurrent_dropout=0.5, zoneout=0.3).eval()
    plain = GRU(4, 5, num_layers=2).eval()
    plain.load_state_dict(noisy.state_dict())
    x = torch.randn(3, 8, 4)
    torch.testing.assert_close(noisy(x)[0], plain(x)[0], rtol=1e-6, atol=1e-7)
    noisy.train()
    assert not torch.allclose(noisy(x)[0], plain(x)[0], atol=1e-3)


def test_zoneout_with_a_fixed_mask_keeps_the_previous_state():
    torch.manual_seed(1)
    layer = GRU(3, 4, zoneout=0.5)
    B, T = 2, 5
    keep = torch.zeros(B, T, 4)
    keep[:, :, 2] = 1.0
    h0 = torch.randn(1, B, 4)
    out, final = layer(torch.randn(B, T, 3), h0, noise=[CellNoise(None, None, keep)])
    torch.testing.assert_close(out[:, :, 2], h0[0, :, 2, None].expand(B, T))
    assert (out[:, :, 0] != h0[0, :, 0, None]).all()


def test_recurrent_dropout_equals_keras_given_the_same_mask():
    """Keras 3's GRU (reset_after=True) drops h_{t-1} in its recurrent products with one mask
    per gate; rnnlab shares one. Given the same mask for all three they agree."""
    os.environ["KERAS_BACKEND"] = "torch"
    pytest.importorskip("keras")
    torch.manual_seed(3)
    B, T, I, H = 3, 5, 4, 6
    layer = GRU(I, H, recurrent_dropout=0.4).double()
    _randomise(layer, 2)
    keras_layer = layer.to_keras(return_sequences=True)
    assert keras_layer.cell.recurrent_dropout == 0.4
    cell = keras_layer.cell
    mask = torch.bernoulli(torch.full((B, H), 0.6, dtype=torch.float64)) / 0.6
    cell._recurrent_dropout_mask = [mask] * 3
    x = torch.randn(B, T, I, dtype=torch.float64)
    h = torch.zeros(B, H, dtype=torch.float64)
    want = []
    for t in range(T):
        h, _ = cell(x[:, t], [h], training=True)
        want.append(torch.as_tensor(h))
    got, _ = layer(x, noise=[CellNoise(recurrent=mask)])
    want = torch.stack(want, 1).to(got.dtype)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(layer(x)[0], want, atol=1e-3)  # the mask matters


def test_parameter_counts_in_summary():
    I, H = 8, 16
    plain = 3 * H * (I + H + 1) + H
    for options, want in {
        (): plain,
        (("layer_norm", True),): plain + 6 * H,
        (("recurrent_dropout", 0.5), ("zoneout", 0.1)): plain,
    }.items():
        assert summary(nn.Sequential(GRU(I, H, **dict(options))), (5, I)).total_params == want


def test_routing_rows():
    x = torch.randn(2, 3, 4)
    ln, noisy = GRU(4, 5, layer_norm=True), GRU(4, 5, zoneout=0.2)
    states = lambda layer: [layer._cell_state(layer.zero_state(2), 0)]  # noqa: E731
    route = route_layer(ln.cells[:1], x, states(ln), None, backend="fused")
    assert route.kernels == ("fused.gru_variant",)
    route = route_layer(ln.cells[:1], x, states(ln), None, backend="auto", return_gates=True)
    assert route.kernels == ("reference",)
    with pytest.raises(RuntimeError, match="GRU op, which has no layer_norm"):
        route_layer(ln.cells[:1], x, states(ln), None, backend="torch")
    with pytest.raises(RuntimeError, match="no recurrent dropout or zoneout"):
        noisy.train()(x, backend="torch")
    route = route_layer(noisy.cells[:1], x, states(noisy), None, backend="torch")
    assert route.kernels == ("torch.gru",)
    noisy.eval()  # eval: no masks, torch's op on the same parameters
    torch.testing.assert_close(noisy(x, backend="torch")[0], noisy(x, backend="reference")[0])
    _, _, gates = ln(x, return_gates=True)
    assert set(gates[0][0]) == {"r", "z", "n", "h"}
    assert isinstance(GRU(4, 5).cells[0], GRUCell)  # the plain GRU keeps its own cell


def test_bad_options_and_interop_refusals():
    with pytest.raises(ValueError, match="zoneout .*one rate"):
        GRU(3, 4, zoneout=(0.5, 0.1))
    with pytest.raises(ValueError, match="recurrent_dropout in"):
        GRU(3, 4, recurrent_dropout=1.0)
    with pytest.raises(TypeError, match="peepholes"):
        GRU(3, 4, peepholes=True)
    with pytest.raises(ValueError, match="torch.nn.GRU can express .*layer_norm"):
        GRU(3, 4, layer_norm=True).to_torch()
    from rnnlab.nn.quantized import QuantizationError, quantize_model

    with pytest.raises(
        QuantizationError, match="GRU at 0 .VariantGRUCell: the variants .*no int8 path"
    ):
        quantize_model(nn.Sequential(GRU(3, 4, layer_norm=True)))
    os.environ["KERAS_BACKEND"] = "torch"
    pytest.importorskip("keras")
    with pytest.raises(ValueError, match="Keras's GRU can express .*zoneout"):
        GRU(3, 4, zoneout=0.1).to_keras()


@pytest.mark.parametrize("preset", ["mnist-sample", "imdb-sample", "charlm-sample", "g2p-sample"])
def test_presets_build_gru_variants(preset, tmp_path):
    settings = [
        "model.cell=gru",
        "model.layer_norm=true",
        "model.recurrent_dropout=0.2",
        "model.zoneout=0.1",
    ]
    config = load_preset(preset, settings)
    assert config.model.variant_options() == {
        "layer_norm": True,
        "recurrent_dropout": 0.2,
        "zoneout": 0.1,
    }
    if config.model.kind == "lm":
        return  # its model needs a vocabulary: trained by test_gru_variant_language_model
    model = build_model(config)
    cells = [m for m in model.modules() if isinstance(m, VariantGRUCell)]
    assert cells and all(c.layer_norm and c.zoneout_hidden == 0.1 for c in cells)
    with pytest.raises(ConfigError, match=r"model.proj_size: expected model.cell='lstm'"):
        load_preset(preset, [*settings, "model.proj_size=4"])


def test_gru_variant_language_model(tmp_path, capsys):
    from rnnlab.cli.main import main

    run = tmp_path / "run"
    argv = [
        "train",
        "charlm-sample",
        "--out",
        str(run),
        "--threads",
        "1",
        "--set",
        "model.cell=gru",
        "--set",
        "model.layer_norm=true",
        "--set",
        "model.zoneout=0.1",
        "--set",
        "model.hidden_sizes=[16]",
        "--set",
        "train.time_limit=3",
        "--set",
        "data.eval_tokens=2000",
    ]
    assert main(argv) == 0
    capsys.readouterr()
    assert main(["generate", str(run), "--prompt", "the", "--length", "10", "--seed", "1"]) == 0
    assert capsys.readouterr().out.startswith("the")
    from rnnlab.runs import load_run

    _, model, _ = load_run(run)
    assert any(isinstance(m, VariantGRUCell) and m.layer_norm for m in model.modules())
