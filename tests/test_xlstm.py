"""xLSTM's sLSTM (Beck et al. 2024): a hand computation of two steps, the stabiliser against the
unstabilised equations, inputs of +-1e4, the fused path against the reference (outputs, final
states, every gradient), gradcheck, head-wise recurrence, masks and carried state."""

from __future__ import annotations

import math

import pytest
import torch

import rnnlab
from rnnlab import MLSTM, SLSTM, MLSTMCell, MLSTMState, SLSTMCell, SLSTMState


def sigmoid(v: float) -> float:
    return 1 / (1 + math.exp(-v))


def zero_state(B: int, H: int, dtype=torch.float32) -> SLSTMState:
    return SLSTMState(*(torch.zeros(B, H, dtype=dtype) for _ in range(4)))


# -- by hand --------------------------------------------------------------------------------------
def test_slstm_two_steps_by_hand() -> None:
    """I = H = 1, one head, exponential forget gate; rows i, f, z, o."""
    cell = SLSTMCell(1, 1, forget_gate="exp")
    W, R, b = [0.5, -0.3, 0.8, 0.2], [0.1, 0.2, -0.4, 0.3], [0.0, 1.0, 0.0, 0.0]
    with torch.no_grad():
        cell.weight_ih.copy_(torch.tensor(W)[:, None])
        cell.weight_hh.copy_(torch.tensor(R).reshape(1, 4, 1))
        cell.bias.copy_(torch.tensor(b))
    s1 = cell(torch.tensor([[1.0]]), zero_state(1, 1))
    # step 1 from zeros: no history, so m = log i = 0.5, i' = 1, f' = 0, c = z, n = 1
    c1, h1 = math.tanh(0.8), sigmoid(0.2) * math.tanh(0.8)
    torch.testing.assert_close(s1, SLSTMState(*(torch.tensor([[v]]) for v in (h1, c1, 1.0, 0.5))))
    s2 = cell(torch.tensor([[-2.0]]), s1)
    i_t, f_t = -1.0 + 0.1 * h1, 0.6 + 1.0 + 0.2 * h1
    z_t, o_t = -1.6 - 0.4 * h1, -0.4 + 0.3 * h1
    m2 = max(f_t + 0.5, i_t)
    i2, f2 = math.exp(i_t - m2), math.exp(f_t + 0.5 - m2)
    c2 = f2 * c1 + i2 * math.tanh(z_t)
    n2 = f2 * 1.0 + i2
    h2 = sigmoid(o_t) * c2 / n2
    want = SLSTMState(*(torch.tensor([[v]]) for v in (h2, c2, n2, m2)))
    torch.testing.assert_close(s2, want)
    # the same output from the unstabilised equations: c / n is a weighted mean of the z's
    e1, e2 = math.exp(0.5), math.exp(i_t)
    mean = (math.exp(f_t) * e1 * math.tanh(0.8) + e2 * math.tanh(z_t)) / (math.exp(f_t) * e1 + e2)
    assert abs(h2 - sigmoid(o_t) * mean) < 1e-12


def naive_slstm(cell: SLSTMCell, x, forget_gate: str):
    """The unstabilised equations (i = exp(i~), no m), from zeros: h for every step."""
    B, T, _ = x.shape
    H = cell.hidden_size
    h = c = n = torch.zeros(B, H, dtype=x.dtype)
    out = []
    for t in range(T):
        g = x[:, t] @ cell.weight_ih.T + cell.recurrent(h) + cell.bias
        i_t, f_t, z_t, o_t = g.chunk(4, -1)
        i = torch.exp(i_t)
        f = torch.exp(f_t) if forget_gate == "exp" else torch.sigmoid(f_t)
        c = f * c + i * torch.tanh(z_t)
        n = f * n + i
        h = torch.sigmoid(o_t) * c / n
        out.append(h)
    return torch.stack(out, 1)


@pytest.mark.parametrize("forget_gate", ["exp", "sigmoid"])
def test_stabiliser_changes_nothing_but_overflow(forget_gate: str) -> None:
    torch.manual_seed(0)
    layer = SLSTM(3, 6, num_heads=2, forget_gate=forget_gate).double()
    x = torch.randn(2, 12, 3, dtype=torch.float64)
    out, _ = layer(x, backend="reference")
    torch.testing.assert_close(out, naive_slstm(layer.cell(0), x, forget_gate), rtol=1e-10, atol=0)
    big = torch.randn(2, 12, 3, dtype=torch.float64) * 1e4  # +-1e4: exp overflows
    with torch.no_grad():
        assert not torch.isfinite(naive_slstm(layer.cell(0), big, forget_gate)).all()
    for backend in ("reference", "auto"):
        xb = big.float().requires_grad_()
        out, state = layer.float()(xb, backend=backend)
        assert torch.isfinite(out).all() and all(torch.isfinite(s).all() for s in state)
        (out.sum() + state.h.sum() + state.c.sum()).backward()
        assert torch.isfinite(xb.grad).all()
        assert all(torch.isfinite(p.grad).all() for p in layer.parameters())
        layer.zero_grad()
        layer.double()


def test_recurrence_is_head_wise() -> None:
    """R is block-diagonal: head 1's pre-activations ignore head 0's units."""
    cell = SLSTMCell(2, 6, num_heads=2)
    h = torch.randn(1, 6)
    moved = h.clone()
    moved[:, :3] += 1.0  # head 0's units
    rh, rm = cell.recurrent(h).view(1, 4, 2, 3), cell.recurrent(moved).view(1, 4, 2, 3)
    torch.testing.assert_close(rh[:, :, 1], rm[:, :, 1])  # (gate, head 1, unit) unchanged
    assert not torch.allclose(rh[:, :, 0], rm[:, :, 0])
    assert sum(p.numel() for p in cell.parameters()) == 4 * 6 * (2 + 1) + 4 * 6 * 3


def test_constructor_says_what_it_expected() -> None:
    with pytest.raises(ValueError, match="hidden_size divisible by num_heads, got 6 and 4"):
        SLSTM(2, 6, num_heads=4)
    with pytest.raises(ValueError, match="forget_gate 'exp' or 'sigmoid', got 'tanh'"):
        SLSTM(2, 6, forget_gate="tanh")
    with pytest.raises(TypeError, match=r"SLSTMState\('h', 'c', 'n', 'm'\) of tensors, got"):
        SLSTM(2, 6)(torch.randn(1, 3, 2), torch.zeros(1, 1, 6))


# -- the fused path against the reference ---------------------------------------------------------
def run(layer, x, state, backend, **kwargs):
    x = x.clone().requires_grad_()
    state = SLSTMState(*(s.clone().requires_grad_() for s in state))
    out, final = layer(x, state, backend=backend, **kwargs)
    weights = torch.linspace(-1, 1, out.shape[-1])  # (D*H,) so every unit's gradient differs
    g = torch.Generator().manual_seed(123)  # the same weights of the final states for both
    loss = (out * weights).sum() + sum((f * torch.randn(f.shape, generator=g)).sum() for f in final)
    grads = torch.autograd.grad(loss, [x, *state, *layer.parameters()])
    return [out, *final, *grads]


@pytest.mark.parametrize("seed", range(4))
def test_fused_path_equals_the_reference(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    B, T, I = (
        int(torch.randint(lo, hi, (1,), generator=g)) for lo, hi in ((1, 5), (1, 15), (1, 6))
    )
    NH = 1 + seed % 3
    H = NH * int(torch.randint(1, 5, (1,), generator=g))
    L, D = 1 + seed % 2, 1 + (seed // 2) % 2
    torch.manual_seed(seed)
    layer = SLSTM(
        I,
        H,
        num_layers=L,
        bidirectional=D == 2,
        num_heads=NH,
        forget_gate="exp" if seed % 2 else "sigmoid",
    )
    with torch.no_grad():
        for cell in layer.cells:
            cell.bias.uniform_(-1, 1)
    x = torch.randn(B, T, I, generator=g)
    LD = L * D
    state = SLSTMState(
        torch.randn(LD, B, H, generator=g),
        torch.randn(LD, B, H, generator=g),
        torch.rand(LD, B, H, generator=g) + 0.5,  # a normaliser with history
        torch.randn(LD, B, H, generator=g),
    )
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    padding = "pre" if seed % 3 == 0 else "post"
    want = run(layer, x, state, "reference", lengths=lengths, padding=padding)
    got = run(layer, x, state, "auto", lengths=lengths, padding=padding)
    for w, h in zip(want, got, strict=True):
        torch.testing.assert_close(h, w, rtol=1e-5, atol=1e-6)


def test_gradcheck_float64() -> None:
    torch.manual_seed(1)
    layer = SLSTM(2, 4, num_layers=2, bidirectional=True, num_heads=2).double()
    names = [n for n, _ in layer.named_parameters()]
    x = torch.randn(2, 4, 2, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([4, 2])

    def f(x, *params):
        out, final = torch.func.functional_call(
            layer, dict(zip(names, params, strict=True)), (x,), {"lengths": lengths}
        )
        return out, *final

    params = [p.detach().clone().requires_grad_() for p in layer.parameters()]
    assert torch.autograd.gradcheck(f, (x, *params))


def test_carried_state_and_masks() -> None:
    torch.manual_seed(2)
    layer = SLSTM(3, 4, num_layers=2, num_heads=2)
    x = torch.randn(2, 8, 3)
    whole, final = layer(x)
    first, state = layer(x[:, :3])
    second, state = layer(x[:, 3:], state)
    torch.testing.assert_close(torch.cat([first, second], 1), whole, rtol=1e-5, atol=1e-6)
    for got, want in zip(state, final, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    mask = torch.tensor([[1, 1, 0, 1, 0, 1, 1, 0], [0, 1, 1, 1, 1, 0, 0, 1]], dtype=torch.bool)
    out, masked = layer(x, mask=mask)
    assert (out[~mask] == 0).all()
    for b in range(2):  # a masked step leaves every part of the state unchanged
        alone, alone_state = layer(x[b : b + 1, mask[b]])
        torch.testing.assert_close(out[b, mask[b]], alone[0], rtol=1e-5, atol=1e-6)
        for got, want in zip(masked, alone_state, strict=True):
            torch.testing.assert_close(got[:, b], want[:, 0], rtol=1e-5, atol=1e-6)


def test_default_slstm_still_writes_its_memory_after_a_long_carried_stream() -> None:
    """The language model's sLSTM, its state carried over 600 steps in windows as the trainer
    carries it: the last token still reaches the memory c of every layer, and m stays bounded.
    With f = exp(f~) and the forget bias 1 (the old default) every step multiplied the memory
    by about e, m grew by about 1 a step, and from about step 60 on i' = exp(i~ - m) was 0:
    nothing new was written (charlm trained to 5.7 bpc and validated at 10.3)."""
    torch.manual_seed(4)
    model = rnnlab.LanguageModel(11, 8, 12, num_layers=2, cell="slstm")
    state = None
    with torch.no_grad():
        for _ in range(6):
            _, state = model(torch.randint(0, 11, (3, 100)), state)
        _, one = model(torch.zeros(3, 1, dtype=torch.long), state)
        _, other = model(torch.ones(3, 1, dtype=torch.long), state)
    written = (one.c - other.c).abs()  # (L, B, H)
    assert written.amin(dim=(1, 2)).gt(1e-6).all(), f"least change per layer {written.amin((1, 2))}"
    assert state.m.abs().max() < 20


# -- everywhere a cell goes -----------------------------------------------------------------------
def test_slstm_in_the_language_model_and_the_classifiers() -> None:
    from rnnlab.config import ModelConfig
    from rnnlab.models.classifiers import SequenceClassifier

    torch.manual_seed(3)
    model = rnnlab.LanguageModel(11, 8, 12, num_layers=2, cell="slstm").eval()
    ids = torch.randint(0, 11, (1, 9))
    with torch.no_grad():
        full, _ = model(ids)
        logits, state = model(ids[:, :4])
        pieces = [logits]
        for t in range(4, 9):  # one token at a time with the carried state, as generation does
            logits, state = model(ids[:, t : t + 1], state)
            pieces.append(logits)
    torch.testing.assert_close(torch.cat(pieces, 1), full, rtol=1e-5, atol=1e-5)
    assert len(list(model.generate([1, 2], 4, seed=0))) == 4
    cfg = ModelConfig(cell="slstm", input_size=4, hidden_sizes=(6,), num_classes=3)
    assert SequenceClassifier(cfg)(torch.randn(2, 5, 4), torch.tensor([5, 2])).shape == (2, 3)


# -- mLSTM ----------------------------------------------------------------------------------------
def mlstm_state(LD: int, B: int, H: int, NH: int, g: torch.Generator) -> MLSTMState:
    """A random state with history: a memory, a normaliser and a stabiliser."""
    DH = H // NH
    return MLSTMState(
        torch.randn(LD, B, H, generator=g),
        torch.randn(LD, B, NH, DH, DH, generator=g),
        torch.randn(LD, B, NH, DH, generator=g),
        torch.randn(LD, B, NH, generator=g),
    )


def test_mlstm_two_steps_by_hand() -> None:
    """I = 1, H = DH = 2, one head; rows q (2), k (2), v (2), o (2), i~, f~."""
    cell = MLSTMCell(1, 2)
    W = [1.0, -1.0, 0.5, 2.0, 1.0, 3.0, 0.0, 0.0, 0.2, -0.5]
    b = [0.0] * 9 + [1.0]
    with torch.no_grad():
        cell.weight_ih.copy_(torch.tensor(W)[:, None])
        cell.bias.copy_(torch.tensor(b))
    zero = MLSTMState(
        torch.zeros(1, 2), torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2), torch.zeros(1, 1)
    )
    s1 = cell(torch.tensor([[1.0]]), zero)
    q, k, v = [1.0, -1.0], [0.5 / math.sqrt(2), 2.0 / math.sqrt(2)], [1.0, 3.0]
    log_i, log_f = 0.2, math.log(sigmoid(0.5))
    m1 = max(log_f + 0.0, log_i)
    i1 = math.exp(log_i - m1)  # f' * C_0 = 0
    C1 = [[i1 * v[a] * k[b_] for b_ in range(2)] for a in range(2)]
    n1 = [i1 * k[0], i1 * k[1]]
    nq = abs(n1[0] * q[0] + n1[1] * q[1])
    den = max(nq, math.exp(-m1))
    h1 = [0.5 * (C1[a][0] * q[0] + C1[a][1] * q[1]) / den for a in range(2)]  # o = sigmoid(0)
    torch.testing.assert_close(s1.h, torch.tensor([h1]))
    torch.testing.assert_close(s1.C, torch.tensor([[C1]]))
    torch.testing.assert_close(s1.m, torch.tensor([[m1]]))
    # a second step with x = -1: q, k, v and the gates' pre-activations change sign
    s2 = cell(torch.tensor([[-1.0]]), s1)
    log_i2, log_f2 = -0.2, math.log(sigmoid(1.5))
    m2 = max(log_f2 + m1, log_i2)
    i2, f2 = math.exp(log_i2 - m2), math.exp(log_f2 + m1 - m2)
    q2, k2, v2 = [-a for a in q], [-a for a in k], [-a for a in v]
    C2 = [[f2 * C1[a][b_] + i2 * v2[a] * k2[b_] for b_ in range(2)] for a in range(2)]
    n2 = [f2 * n1[j] + i2 * k2[j] for j in range(2)]
    den2 = max(abs(n2[0] * q2[0] + n2[1] * q2[1]), math.exp(-m2))
    h2 = [0.5 * (C2[a][0] * q2[0] + C2[a][1] * q2[1]) / den2 for a in range(2)]
    torch.testing.assert_close(s2.h, torch.tensor([h2]))
    torch.testing.assert_close(s2.n, torch.tensor([[n2]]))


def run_m(layer, x, state, backend, **kwargs):
    x = x.clone().requires_grad_()
    state = MLSTMState(*(s.clone().requires_grad_() for s in state))
    out, final = layer(x, state, backend=backend, **kwargs)
    weights = torch.linspace(-1, 1, out.shape[-1])
    g = torch.Generator().manual_seed(7)
    loss = (out * weights).sum() + sum((f * torch.randn(f.shape, generator=g)).sum() for f in final)
    grads = torch.autograd.grad(loss, [x, *state, *layer.parameters()], allow_unused=True)
    grads = [torch.zeros(()) if gr is None else gr for gr in grads]
    return [out, *final, *grads]


@pytest.mark.parametrize("seed", range(4))
def test_mlstm_parallel_form_equals_the_step_form(seed: int) -> None:
    """Outputs, final states (h, C, n, m) and every gradient, from a state with history, with
    random lengths and padding side; fp32, 1e-5 relative."""
    g = torch.Generator().manual_seed(seed)
    B, T, I = (
        int(torch.randint(lo, hi, (1,), generator=g)) for lo, hi in ((1, 5), (1, 20), (1, 6))
    )
    NH = 1 + seed % 3
    H = NH * int(torch.randint(1, 5, (1,), generator=g))
    L, D = 1 + seed % 2, 1 + (seed // 2) % 2
    torch.manual_seed(seed)
    layer = MLSTM(I, H, num_layers=L, bidirectional=D == 2, num_heads=NH)
    with torch.no_grad():
        for cell in layer.cells:
            cell.bias.uniform_(-1, 1)
    x = torch.randn(B, T, I, generator=g)
    state = mlstm_state(L * D, B, H, NH, g)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    padding = "pre" if seed % 3 == 0 else "post"
    want = run_m(layer, x, state, "reference", lengths=lengths, padding=padding)
    got = run_m(layer, x, state, "auto", lengths=lengths, padding=padding)
    for w, h in zip(want, got, strict=True):
        torch.testing.assert_close(h, w, rtol=1e-5, atol=1e-5)


def test_mlstm_gradcheck_float64() -> None:
    torch.manual_seed(1)
    layer = MLSTM(2, 4, num_layers=2, bidirectional=True, num_heads=2).double()
    names = [n for n, _ in layer.named_parameters()]
    x = torch.randn(2, 4, 2, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([4, 2])

    def f(x, *params):
        out, final = torch.func.functional_call(
            layer, dict(zip(names, params, strict=True)), (x,), {"lengths": lengths}
        )
        return out, *final

    params = [p.detach().clone().requires_grad_() for p in layer.parameters()]
    assert torch.autograd.gradcheck(f, (x, *params))


def test_mlstm_carried_state_masks_and_shapes() -> None:
    torch.manual_seed(2)
    layer = MLSTM(3, 4, num_layers=2, num_heads=2)
    x = torch.randn(2, 8, 3)
    whole, final = layer(x)
    first, state = layer(x[:, :3])
    second, state = layer(x[:, 3:], state)
    torch.testing.assert_close(torch.cat([first, second], 1), whole, rtol=1e-5, atol=1e-6)
    for got, want in zip(state, final, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert [tuple(s.shape) for s in final] == [(2, 2, 4), (2, 2, 2, 2, 2), (2, 2, 2, 2), (2, 2, 2)]
    mask = torch.tensor([[1, 1, 0, 1, 0, 1, 1, 0], [0, 1, 1, 1, 1, 0, 0, 1]], dtype=torch.bool)
    out, masked = layer(x, mask=mask)
    for b in range(2):  # a masked step leaves the memory, normaliser and stabiliser unchanged
        alone, alone_state = layer(x[b : b + 1, mask[b]])
        torch.testing.assert_close(out[b, mask[b]], alone[0], rtol=1e-5, atol=1e-6)
        for got, want in zip(masked, alone_state, strict=True):
            torch.testing.assert_close(got[:, b], want[:, 0], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"state.C of shape \(2, 2, 2, 2, 2\), got \(2, 2, 4\)"):
        layer(x, MLSTMState(final.h, final.h, final.n, final.m))


def test_mlstm_in_the_language_model_and_the_classifiers() -> None:
    from rnnlab.config import ModelConfig
    from rnnlab.models.classifiers import SequenceClassifier

    torch.manual_seed(3)
    model = rnnlab.LanguageModel(11, 8, 12, num_layers=2, cell="mlstm").eval()
    ids = torch.randint(0, 11, (1, 9))
    with torch.no_grad():
        full, _ = model(ids)
        logits, state = model(ids[:, :4])
        pieces = [logits]
        for t in range(4, 9):  # one token at a time with the carried state, as generation does
            logits, state = model(ids[:, t : t + 1], state)
            pieces.append(logits)
    torch.testing.assert_close(torch.cat(pieces, 1), full, rtol=1e-5, atol=1e-5)
    assert len(list(model.generate([1, 2], 4, seed=0))) == 4
    cfg = ModelConfig(cell="mlstm", input_size=4, hidden_sizes=(6,), num_classes=3)
    assert SequenceClassifier(cfg)(torch.randn(2, 5, 4), torch.tensor([5, 2])).shape == (2, 3)


@pytest.mark.parametrize("cls", [rnnlab.LSTM, rnnlab.MinGRU, SLSTM, MLSTM])
def test_zero_state_is_what_forward_starts_from(cls) -> None:
    layer = cls(3, 4, num_layers=2, bidirectional=True)
    x = torch.randn(2, 5, 3)
    state = layer.zero_state(2)
    torch.testing.assert_close(layer(x, state)[0], layer(x)[0])


def test_mlstm_parameter_count() -> None:
    assert sum(p.numel() for p in MLSTM(8, 16, num_heads=4).parameters()) == (64 + 8) * 9
