"""minGRU and minLSTM (Feng et al. 2024): a hand computation of one step, the parallel path
against the step-by-step reference (outputs, final states, every gradient), gradcheck, masks,
carried state, and the cells in the language model and the classifiers."""

from __future__ import annotations

import math

import pytest
import torch

import rnnlab
from compiled_kernels import require_compiled_kernels
from rnnlab.nn.backends import parallel
from rnnlab.nn.backends.parallel import linear_scan

LAYERS = [rnnlab.MinGRU, rnnlab.MinLSTM]


def randomise_biases(layer) -> None:
    """Non-zero biases, so a misplaced bias would show."""
    with torch.no_grad():
        for cell in layer.cells:
            cell.bias.uniform_(-1, 1)


# -- one step by hand -----------------------------------------------------------------------------
def test_mingru_one_step_by_hand() -> None:
    """I = 1, H = 1: z = sigmoid(2*0.5 + 0) = sigmoid(1); h~ = -1*0.5 + 0.25 = -0.25;
    h = (1 - z) * 2 + z * h~."""
    cell = rnnlab.MinGRUCell(1, 1)
    with torch.no_grad():
        cell.weight_ih.copy_(torch.tensor([[2.0], [-1.0]]))  # rows z, h~
        cell.bias.copy_(torch.tensor([0.0, 0.25]))
    h, gates = cell(torch.tensor([[0.5]]), torch.tensor([[2.0]]), return_gates=True)
    z = 1 / (1 + torch.exp(torch.tensor(-1.0)))
    want = (1 - z) * 2 + z * -0.25
    torch.testing.assert_close(h, want.reshape(1, 1))
    torch.testing.assert_close(gates["z"], z.reshape(1, 1))
    torch.testing.assert_close(gates["h_tilde"], torch.tensor([[-0.25]]))


def test_minlstm_one_step_by_hand() -> None:
    """f = sigmoid(0) = 0.5, i = sigmoid(ln 3) = 0.75: f' = 0.4, i' = 0.6; h~ = 3;
    h = 0.4 * 1 + 0.6 * 3 = 2.2."""
    cell = rnnlab.MinLSTMCell(1, 1)
    with torch.no_grad():
        cell.weight_ih.copy_(torch.tensor([[0.0], [0.0], [2.0]]))  # rows f, i, h~
        cell.bias.copy_(torch.tensor([0.0, float(torch.log(torch.tensor(3.0))), 1.0]))
    h, gates = cell(torch.tensor([[1.0]]), torch.tensor([[1.0]]), return_gates=True)
    torch.testing.assert_close(h, torch.tensor([[2.2]]))
    torch.testing.assert_close(gates["f"], torch.tensor([[0.4]]))
    torch.testing.assert_close(gates["i"], torch.tensor([[0.6]]))


def test_parameter_counts_and_layout() -> None:
    assert sum(p.numel() for p in rnnlab.MinGRU(8, 16).parameters()) == 2 * 16 * (8 + 1)
    assert sum(p.numel() for p in rnnlab.MinLSTM(8, 16).parameters()) == 3 * 16 * (8 + 1)
    layer = rnnlab.MinLSTM(8, 16, num_layers=2, bidirectional=True)
    assert layer.cell(1, 1).weight_ih.shape == (48, 32)
    assert not hasattr(layer.cell(0), "weight_hh")  # no gate reads h_{t-1}


# -- the scan -------------------------------------------------------------------------------------
def naive_scan(a, b, h0):
    h, out = h0, []
    for t in range(a.shape[1]):
        h = a[:, t] * h + b[:, t]
        out.append(h)
    return torch.stack(out, 1)


@pytest.fixture(params=["sweep", "blocked"])
def chunks(request, monkeypatch) -> str:
    """Both forms of the scan: K = 1 (a sweep) and K ~ sqrt(T) (blocked), whatever the size."""
    if request.param == "sweep":
        monkeypatch.setattr(parallel, "chunk_length", lambda B, T, H: 1)
    else:
        monkeypatch.setattr(parallel, "chunk_length", lambda B, T, H: max(1, math.isqrt(T)))
    return request.param


@pytest.fixture(params=["fused-sweep", "fused-blocked", "compiled"])
def fast(request, monkeypatch) -> str:
    """Each fast path of the layers, as a backend name: the pure-torch parallel path with
    either form of its scan, and the compiled time loop (skipped where it cannot build)."""
    if request.param == "compiled":
        require_compiled_kernels()
        return "compiled"
    blocked = request.param == "fused-blocked"
    rule = (lambda B, T, H: max(1, math.isqrt(T))) if blocked else (lambda B, T, H: 1)
    monkeypatch.setattr(parallel, "chunk_length", rule)
    return "fused"


def test_chunk_length_rule() -> None:
    assert parallel.chunk_length(64, 128, 512) == 1  # B*H >= 4096: a sweep
    assert parallel.chunk_length(8, 4096, 64) == 64  # small steps: sqrt(T)


@pytest.mark.parametrize("T", [1, 2, 3, 7, 16, 50, 129])
@pytest.mark.parametrize("reverse", [False, True])
def test_linear_scan_equals_the_loop(chunks, T: int, reverse: bool) -> None:
    g = torch.Generator().manual_seed(T)
    a = torch.rand(3, T, 5, generator=g, dtype=torch.float64)
    b = torch.randn(3, T, 5, generator=g, dtype=torch.float64)
    h0 = torch.randn(3, 5, generator=g, dtype=torch.float64)
    want = naive_scan(a.flip(1), b.flip(1), h0).flip(1) if reverse else naive_scan(a, b, h0)
    got = linear_scan(a, b, h0, reverse=reverse)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("reverse", [False, True])
def test_linear_scan_gradcheck_and_gradgradcheck(chunks, reverse: bool) -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 11, 3, generator=g, dtype=torch.float64).requires_grad_()
    b = torch.randn(2, 11, 3, generator=g, dtype=torch.float64).requires_grad_()
    h0 = torch.randn(2, 3, generator=g, dtype=torch.float64).requires_grad_()

    def scan(a, b, h0):
        return linear_scan(a, b, h0, reverse=reverse)

    assert torch.autograd.gradcheck(scan, (a, b, h0))
    assert torch.autograd.gradgradcheck(scan, (a, b, h0))


def test_long_scan_stays_finite_at_saturated_gates(chunks) -> None:
    """a of exactly 0 and 1, and 10,000 steps: the scan only multiplies by a in [0, 1]."""
    T = 10_000
    a = torch.where(torch.rand(2, T, 4) < 0.5, 0.0, 1.0)
    b = torch.randn(2, T, 4)
    h0 = torch.randn(2, 4)
    h = linear_scan(a, b, h0)
    assert torch.isfinite(h).all()
    torch.testing.assert_close(h, naive_scan(a, b, h0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cls", LAYERS)
def test_saturated_gates_stay_finite_on_every_path(fast, cls) -> None:
    """Inputs of +-1e4 saturate every gate (f and i both underflow to 0 in minLSTM): outputs
    and gradients stay finite and equal the reference's."""
    torch.manual_seed(1)
    layer = cls(3, 4)
    x = torch.randn(2, 300, 3) * 1e4
    h0 = torch.randn(1, 2, 4)
    want = run(layer, x, h0, "reference")
    got = run(layer, x, h0, fast)
    for w, h in zip(want, got, strict=True):  # h~ is of the order of 1e4: relative to the scale
        assert torch.isfinite(h).all()
        scale = w.abs().max()
        torch.testing.assert_close(h / scale, w / scale, rtol=0, atol=1e-5)


# -- the parallel path against the reference ------------------------------------------------------
def run(layer, x, h0, backend, **kwargs):
    """Outputs, final state and the gradients of x, h0 and every parameter."""
    x = x.clone().requires_grad_()
    h0 = h0.clone().requires_grad_()
    out, final = layer(x, h0, backend=backend, **kwargs)
    weights = torch.linspace(-1, 1, out.shape[-1])  # (D*H,) so every unit's gradient differs
    loss = (out * weights).sum() + (final * final.detach().sign()).sum() + final.square().sum()
    grads = torch.autograd.grad(loss, [x, h0, *layer.parameters()])
    return [out, final, *grads]


@pytest.mark.parametrize("cls", LAYERS)
@pytest.mark.parametrize("seed", range(4))
def test_fast_paths_equal_the_reference(fast, cls, seed: int) -> None:
    """Random sizes, lengths, padding side, layers and directions; fp32, 1e-5 relative."""
    g = torch.Generator().manual_seed(seed)
    B, T, I, H = (
        int(torch.randint(lo, hi, (1,), generator=g))
        for lo, hi in ((1, 6), (1, 40), (1, 9), (1, 12))
    )
    L, D = 1 + seed % 2, 1 + (seed // 2) % 2
    torch.manual_seed(seed)
    layer = cls(I, H, num_layers=L, bidirectional=D == 2)
    randomise_biases(layer)
    x = torch.randn(B, T, I, generator=g)
    h0 = torch.randn(L * D, B, H, generator=g)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    padding = "pre" if seed % 3 == 0 else "post"
    want = run(layer, x, h0, "reference", lengths=lengths, padding=padding)
    got = run(layer, x, h0, fast, lengths=lengths, padding=padding)
    for w, h in zip(want, got, strict=True):
        torch.testing.assert_close(h, w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cls", LAYERS)
def test_arbitrary_mask_leaves_the_state_unchanged(fast, cls) -> None:
    """A masked step (anywhere, not only at the ends) neither moves the state nor outputs."""
    torch.manual_seed(2)
    layer = cls(3, 4, bidirectional=True, backend=fast)
    randomise_biases(layer)
    x = torch.randn(2, 6, 3)
    mask = torch.tensor([[1, 0, 1, 1, 0, 1], [0, 1, 1, 0, 0, 1]], dtype=torch.bool)
    out, state = layer(x, mask=mask)
    ref_out, ref_state = layer(x, mask=mask, backend="reference")
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(state, ref_state, rtol=1e-5, atol=1e-6)
    assert (out[~mask] == 0).all()
    for b in range(2):  # the same as the real steps alone
        alone, alone_state = layer(x[b : b + 1, mask[b]])
        torch.testing.assert_close(out[b, mask[b]], alone[0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(state[:, b], alone_state[:, 0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cls", LAYERS)
def test_layer_gradcheck_float64(fast, cls) -> None:
    torch.manual_seed(3)
    layer = cls(3, 2, num_layers=2, bidirectional=True, backend=fast).double()
    randomise_biases(layer)
    x = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(4, 2, 2, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([5, 3])

    def f(x, h0, *params):
        out, final = torch.func.functional_call(
            layer,
            dict(zip([n for n, _ in layer.named_parameters()], params, strict=True)),
            (x, h0),
            {"lengths": lengths},
        )
        return out, final

    params = [p.detach().clone().requires_grad_() for p in layer.parameters()]
    assert torch.autograd.gradcheck(f, (x, h0, *params))


@pytest.mark.parametrize("cls", LAYERS)
def test_carried_state_equals_one_pass(fast, cls) -> None:
    """Two windows with the state carried = one pass over both, and stepping one step at a
    time (T = 1 calls, as generation does) gives the same outputs."""
    torch.manual_seed(4)
    layer = cls(3, 5, num_layers=2, backend=fast)
    randomise_biases(layer)
    x = torch.randn(2, 9, 3)
    whole, final = layer(x)
    first, state = layer(x[:, :4])
    second, state = layer(x[:, 4:], state)
    torch.testing.assert_close(torch.cat([first, second], 1), whole, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(state, final, rtol=1e-5, atol=1e-6)
    state, steps = None, []
    for t in range(9):
        out, state = layer(x[:, t : t + 1], state)
        steps.append(out)
    torch.testing.assert_close(torch.cat(steps, 1), whole, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cls", LAYERS)
def test_bf16_precision_is_close_to_fp32(fast, cls) -> None:
    torch.manual_seed(5)
    layer = cls(16, 32, num_layers=2, backend=fast)
    x = torch.randn(4, 20, 16)
    want, _ = layer(x)
    got, state = layer(x, precision="bf16")
    assert got.dtype == torch.float32 and state.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=0.05, atol=0.05)
    half, _ = layer.bfloat16()(x.bfloat16(), backend="auto")  # scanned in float32, cast back
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.float(), want, rtol=0.05, atol=0.05)


# -- everywhere a cell goes -----------------------------------------------------------------------
@pytest.mark.parametrize("cell", ["mingru", "minlstm"])
def test_language_model_generation_steps_equal_a_full_forward(cell: str) -> None:
    """Feeding the prefix one token at a time with the carried state (what generate does)
    gives the logits of one full forward over the same prefix."""
    torch.manual_seed(6)
    model = rnnlab.LanguageModel(11, 8, 12, num_layers=2, cell=cell).eval()
    ids = torch.randint(0, 11, (1, 10))
    with torch.no_grad():
        full, full_state = model(ids)
        logits, state = model(ids[:, :3])  # a prompt, then one token at a time
        pieces = [logits]
        for t in range(3, 10):
            logits, state = model(ids[:, t : t + 1], state)
            pieces.append(logits)
    torch.testing.assert_close(torch.cat(pieces, 1), full, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(state, full_state, rtol=1e-5, atol=1e-6)
    tokens = list(model.generate([1, 2, 3], 5, seed=0))
    assert len(tokens) == 5 and all(0 <= t < 11 for t in tokens)


@pytest.mark.parametrize("cell", ["mingru", "minlstm"])
def test_classifiers_take_the_cell_by_name(cell: str) -> None:
    from rnnlab.config import ModelConfig
    from rnnlab.models.classifiers import SequenceClassifier

    cfg = ModelConfig(
        cell=cell, input_size=4, hidden_sizes=(6, 5), num_classes=3, bidirectional=True
    )
    model = SequenceClassifier(cfg)
    logits = model(torch.randn(2, 7, 4), torch.tensor([7, 3]))
    assert logits.shape == (2, 3)
    logits.sum().backward()
    assert type(model.stack.layers[0]).__name__ == {"mingru": "MinGRU", "minlstm": "MinLSTM"}[cell]
