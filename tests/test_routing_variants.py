"""The routing table's rows for the LSTM and GRU variants (issue 23: LayerNorm, projection,
zoneout, recurrent dropout), one test per row: which kernel ran, and the reference loop's
outputs. The fixtures and the recorder are test_routing.py's."""

from __future__ import annotations

import pytest
import torch

import rnnlab
from compiled_kernels import require_compiled_kernels
from rnnlab.nn.backends import route_layer
from test_routing import ran as recorded_kernels

ran = recorded_kernels  # the fixture that records which kernels ran, under its usual name


# -- the LSTM variants (issue 23) -----------------------------------------------------------------
@pytest.mark.parametrize(
    "backend, grad, kernel",
    [
        ("auto", True, "compiled.lstm_variant"),
        ("auto", False, "compiled.lstm_variant"),
        ("compiled", True, "compiled.lstm_variant"),
        ("fused", True, "fused.lstm_variant"),
        ("reference", True, "reference"),
    ],
)
def test_variant_rows_run_their_kernel(ran, backend: str, grad: bool, kernel: str) -> None:
    """Each variant row of the table runs its kernel, with padding and training masks, and
    gives the reference loop's outputs."""
    require_compiled_kernels()
    torch.manual_seed(0)
    layer = rnnlab.LSTM(5, 6, layer_norm=True, proj_size=4, zoneout=0.3).train()
    x = torch.randn(3, 7, 5, requires_grad=grad)
    noise = [layer.cells[0].sample_noise(3, 7, x)]
    lengths = torch.tensor([7, 3, 5])
    with torch.set_grad_enabled(grad):
        out, _ = layer(x, lengths=lengths, noise=noise, backend=backend)
    assert [name for name, _ in ran] == [kernel]
    want, _ = layer(x, lengths=lengths, noise=noise, backend="reference")
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)


def test_variant_bf16_row() -> None:
    """precision="bf16" takes the compiled variant kernel's bf16 GEMMs; the fused path has none."""
    require_compiled_kernels()
    layer = rnnlab.LSTM(4, 6, layer_norm=True)
    x = torch.randn(2, 3, 4)
    state = [layer._cell_state(layer.zero_state(2), 0)]
    route = route_layer(layer.cells[:1], x, state, None, precision="bf16")
    assert route.kernels == ("compiled.lstm_variant",) and route.bf16
    with pytest.raises(RuntimeError, match="bf16.*compiled kernel only"):
        route_layer(layer.cells[:1], x, state, None, backend="fused", precision="bf16")


# -- the GRU variants (issue 23) ------------------------------------------------------------------
@pytest.mark.parametrize(
    "backend, grad, training, kernel",
    [
        ("auto", True, True, "compiled.gru_variant"),
        ("auto", False, False, "compiled.gru_variant"),
        ("compiled", True, True, "compiled.gru_variant"),
        ("fused", True, True, "fused.gru_variant"),
        ("reference", True, True, "reference"),
        ("torch", False, False, "torch.gru"),  # no LayerNorm, eval: the masks are off
    ],
)
def test_gru_variant_rows_run_their_kernel(ran, backend, grad, training, kernel) -> None:
    """Each GRU-variant row runs its kernel and gives the reference loop's outputs; LayerNorm
    and the training masks where the row takes them, padding where it can skip it."""
    torch.manual_seed(0)
    options = {"zoneout": 0.3, "recurrent_dropout": 0.2}
    if backend != "torch":
        options["layer_norm"] = True
    layer = rnnlab.GRU(5, 6, **options).train(training)
    x = torch.randn(3, 7, 5, requires_grad=grad)
    noise = [layer.cells[0].sample_noise(3, 7, x)] if training else None
    padding = {} if backend == "torch" else {"lengths": torch.tensor([7, 3, 5])}
    with torch.set_grad_enabled(grad):
        out, _ = layer(x, noise=noise, backend=backend, **padding)
    assert [name for name, _ in ran] == [kernel]
    want, _ = layer(x, noise=noise, backend="reference", **padding)
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)


def test_gru_variant_refusals() -> None:
    layer = rnnlab.GRU(4, 6, layer_norm=True)
    x = torch.randn(2, 3, 4)
    state = [layer._cell_state(layer.zero_state(2), 0)]
    half = rnnlab.GRU(4, 6, layer_norm=True).half()
    with pytest.raises(RuntimeError, match="GRU-variant kernel needs float32 or float64"):
        route_layer(half.cells[:1], x.half(), state, None, backend="compiled")
    with pytest.raises(RuntimeError, match="bf16"):
        route_layer(layer.cells[:1], x, state, None, precision="bf16")
