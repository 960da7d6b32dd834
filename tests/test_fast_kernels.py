"""The compiled C++ kernels (backend="compiled", :mod:`rnnlab.nn.backends.compiled`) against
the reference cells.

Same parameters, copied weights: outputs, final states and every gradient must agree within
1e-5 relative in float32 over random shapes, lengths (pre and post padding, masks), layers,
directions and seeds; gradcheck in float64 checks the hand-written backward itself. Also: the
inference path (no_grad) equals the training path. Which kernel runs a call is tested in
``tests/test_routing.py``.

The extension is built by the first test that needs it (the ``ext`` fixture), not at collection;
with ``CI`` set a build failure fails the tests instead of skipping them.
"""

from __future__ import annotations

import contextlib
import copy
from types import ModuleType

import pytest
import torch

import rnnlab
from compiled_kernels import require_compiled_kernels


@pytest.fixture(autouse=True)
def ext() -> ModuleType:
    """The compiled extension; every test here needs it (see tests/compiled_kernels.py)."""
    return require_compiled_kernels()


LAYERS = {"LSTM": rnnlab.LSTM, "GRU": rnnlab.GRU}


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|: relative to the tensor's scale, so near-zero entries do not
    dominate."""
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def run(layer, x, state, kwargs):
    """Output, final state and the gradients of a random linear loss of both."""
    x = x.clone().requires_grad_(True)
    out, final = layer(x, state, **kwargs)
    finals = list(final) if isinstance(final, tuple) else [final]
    g = torch.Generator().manual_seed(123)
    loss = sum((t * torch.randn(t.shape, generator=g, dtype=t.dtype)).sum() for t in [out, *finals])
    loss.backward()
    grads = {"x": x.grad, **{n: p.grad for n, p in layer.named_parameters()}}
    if isinstance(state, tuple):
        grads.update({f"state{i}": s.grad for i, s in enumerate(state)})
    elif state is not None:
        grads["state"] = state.grad
    return out, finals, grads


def assert_runs_agree(got, want, context, tol: float = 1e-5) -> None:
    """Two results of :func:`run`, (output, final states, gradients), within ``tol`` relative,
    every gradient of the same names."""
    (out_g, fin_g, grads_g), (out_w, fin_w, grads_w) = got, want
    assert rel_err(out_g, out_w) < tol, context
    for a, b in zip(fin_g, fin_w, strict=True):
        assert rel_err(a, b) < tol, context
    assert grads_g.keys() == grads_w.keys(), context
    for key in grads_w:
        assert rel_err(grads_g[key], grads_w[key]) < tol, (key, context)


def random_case(seed: int):
    g = torch.Generator().manual_seed(seed)
    r = lambda lo, hi: int(torch.randint(lo, hi + 1, (1,), generator=g))  # noqa: E731
    B, T, I, H = r(1, 9), r(1, 12), r(1, 10), r(1, 17)
    case = dict(
        B=B,
        T=T,
        I=I,
        H=H,
        layers=r(1, 2),
        bidirectional=bool(r(0, 1)),
        kind=["none", "post", "pre", "mask"][r(0, 3)],
        with_state=bool(r(0, 1)),
    )
    return case, g


@pytest.mark.parametrize("name", sorted(LAYERS))
@pytest.mark.parametrize("seed", range(12))
def test_compiled_matches_reference(name: str, seed: int) -> None:
    case, g = random_case(seed)
    B, T, I, H = case["B"], case["T"], case["I"], case["H"]
    torch.manual_seed(seed)
    ref = LAYERS[name](I, H, case["layers"], case["bidirectional"], backend="reference")
    with torch.no_grad():  # non-trivial biases, so every bias gradient path is exercised
        for p in ref.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    fast = copy.deepcopy(ref)
    fast.backend = "compiled"
    x = torch.randn(B, T, I, generator=g)
    kwargs = {}
    if case["kind"] in ("post", "pre"):
        kwargs = dict(lengths=torch.randint(1, T + 1, (B,), generator=g), padding=case["kind"])
    elif case["kind"] == "mask":
        kwargs = dict(mask=torch.rand(B, T, generator=g) < 0.7)
    LD = case["layers"] * (2 if case["bidirectional"] else 1)
    state = None
    if case["with_state"]:
        n = 2 if name == "LSTM" else 1
        parts = [torch.randn(LD, B, H, generator=g) for _ in range(n)]
        state = rnnlab.LSTMState(*parts) if name == "LSTM" else parts[0]

    def fresh(s):
        if s is None:
            return None
        if isinstance(s, tuple):
            return type(s)(*(t.clone().requires_grad_(True) for t in s))
        return s.clone().requires_grad_(True)

    want = run(ref, x, fresh(state), kwargs)
    assert_runs_agree(run(fast, x, fresh(state), kwargs), want, case)


@pytest.mark.parametrize(
    ("H", "padding"), [(150, None), (150, "post"), (256, "pre"), (384, None), (384, "post")]
)
def test_compiled_lstm_wide_layers_match_reference(H: int, padding: str | None) -> None:
    """4H above 512 columns: the row-block GEMMs then run in 256-column slices (H = 150 leaves
    a last slice of 88 columns). H = 384 is past the row blocks' weight budget (rows_fit in
    recurrent.h: a 2.25 MiB W_hh), so its float32 training runs per step (whole-sequence input
    projection, multi-threaded GEMMs). Training and inference both, against the reference."""
    torch.manual_seed(H)
    ref = rnnlab.LSTM(12, H, num_layers=2, bidirectional=True, backend="reference")
    fast = copy.deepcopy(ref)
    fast.backend = "compiled"
    B, T = 21, 6  # 21 rows: uneven row blocks on two threads
    x = torch.randn(B, T, 12)
    kwargs = {}
    if padding is not None:
        kwargs = dict(lengths=torch.randint(1, T + 1, (B,)), padding=padding)
    want = run(ref, x, None, kwargs)
    assert_runs_agree(run(fast, x, None, kwargs), want, (H, padding))
    with torch.no_grad():
        assert rel_err(fast(x, **kwargs)[0], want[0]) < 1e-5


@pytest.mark.parametrize("name", sorted(LAYERS))
@pytest.mark.parametrize("padding", [None, "post", "pre"])
def test_compiled_gradcheck_float64(name: str, padding: str | None) -> None:
    torch.manual_seed(0)
    layer = LAYERS[name](3, 4, num_layers=2, bidirectional=True, backend="compiled").double()
    x = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    kwargs = {} if padding is None else dict(lengths=torch.tensor([5, 3]), padding=padding)
    names = [n for n, _ in layer.named_parameters()]

    def f(x, *ps):
        values = dict(zip(names, ps, strict=True))
        out, final = torch.func.functional_call(layer, values, (x,), kwargs)
        return (out, *final) if isinstance(final, tuple) else (out, final)

    copies = [p.detach().clone().requires_grad_(True) for p in layer.parameters()]
    assert torch.autograd.gradcheck(f, (x, *copies), eps=1e-6, atol=1e-7, fast_mode=True)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_inference_path_equals_training_path(name: str) -> None:
    torch.manual_seed(1)
    layer = LAYERS[name](5, 7, num_layers=2, bidirectional=True, backend="compiled")
    x = torch.randn(4, 6, 5)
    lengths = torch.tensor([6, 2, 5, 1])
    out_t, fin_t = layer(x, lengths=lengths, padding="pre")
    with torch.no_grad():
        out_i, fin_i = layer(x, lengths=lengths, padding="pre")
    assert out_t.requires_grad and not out_i.requires_grad
    torch.testing.assert_close(out_i, out_t.detach(), rtol=0, atol=0)
    fin_i, fin_t = (list(f) if isinstance(f, tuple) else [f] for f in (fin_i, fin_t))
    for a, b in zip(fin_i, fin_t, strict=True):
        torch.testing.assert_close(a, b.detach(), rtol=0, atol=0)


@pytest.mark.parametrize("seed", range(8))
def test_lstm_inference_kernel_matches_reference(ext: ModuleType, seed: int) -> None:
    """Unpadded float32 LSTM inference takes its own kernel (lstm_infer: batch rows split between
    threads, each step's input projection in a buffer of its own); it must equal the reference
    loop like the others, and its bf16 mode must stay within bf16 rounding of it. H runs over
    sizes below, at and off multiples of 16, and B up to 70 with 1-3 threads, so uneven row
    splits are exercised."""
    g = torch.Generator().manual_seed(seed)
    B = int(torch.randint(1, 70, (1,), generator=g))
    T, I = (int(torch.randint(1, 40, (1,), generator=g)) for _ in range(2))
    H = [5, 16, 33, 64, 100, 128, 47, 256][seed]
    reverse = bool(seed % 2)
    torch.manual_seed(seed)
    ref = rnnlab.LSTM(I, H, bidirectional=True, backend="reference")
    cell = ref.cell(0, int(reverse))
    x = torch.randn(B, T, I, generator=g)
    h0, c0 = torch.randn(B, H, generator=g), torch.randn(B, H, generator=g)
    state = rnnlab.LSTMState(torch.stack([h0, h0]), torch.stack([c0, c0]))
    with torch.no_grad():
        out_r, fin_r = ref(x, state)
        out_r = out_r[..., H:] if reverse else out_r[..., :H]
        fin_r = [s[int(reverse)] for s in fin_r]
        weights = (cell.weight_ih, cell.weight_hh, cell.bias)
        for threads in (1, 2, 3):
            out_f, h_f, c_f = ext.lstm_infer(x, h0, c0, *weights, reverse, threads, False)
            assert rel_err(out_f, out_r) < 1e-5, (B, T, I, H, threads)
            for a, b in zip((h_f, c_f), fin_r, strict=True):
                assert rel_err(a, b) < 1e-5, (B, T, I, H, threads)
            out_b, h_b, c_b = ext.lstm_infer(x, h0, c0, *weights, reverse, threads, True)
            assert out_b.dtype == torch.float32
            assert rel_err(out_b, out_r) < 2e-2, (B, T, I, H, threads)
            if I % 2 == 0 or H % 2 == 0:  # some operand packs for the bf16 ukernel: rounded
                assert rel_err(out_b, out_r) > 1e-6, (B, T, I, H, threads)
            for a, b in zip((h_b, c_b), fin_r, strict=True):
                assert rel_err(a, b) < 2e-2, (B, T, I, H, threads)


@pytest.mark.parametrize("seed", range(6))
def test_gru_inference_kernel_matches_reference(ext: ModuleType, seed: int) -> None:
    """Unpadded float32 GRU inference takes its own kernel (gru_infer: batch rows split between
    threads, each step's two products in buffers of its own); it must equal the reference loop,
    for uneven row splits (B up to 70, 1-3 threads), both directions, and a width too large for
    the row blocks (H = 400, which runs gru_forward's per-step loop)."""
    g = torch.Generator().manual_seed(seed)
    B = int(torch.randint(1, 70, (1,), generator=g))
    T, I = (int(torch.randint(1, 40, (1,), generator=g)) for _ in range(2))
    H = [5, 16, 33, 128, 256, 400][seed]
    reverse = bool(seed % 2)
    torch.manual_seed(seed)
    ref = rnnlab.GRU(I, H, bidirectional=True, backend="reference")
    cell = ref.cell(0, int(reverse))
    with torch.no_grad():  # non-zero biases, so a misplaced b_hn would show
        cell.bias.uniform_(-0.5, 0.5)
        cell.bias_hn.uniform_(-0.5, 0.5)
    x = torch.randn(B, T, I, generator=g)
    h0 = torch.randn(B, H, generator=g)
    with torch.no_grad():
        out_r, h_r = ref(x, torch.stack([h0, h0]))
        out_r = out_r[..., H:] if reverse else out_r[..., :H]
        weights = (cell.weight_ih, cell.weight_hh, cell.bias, cell.bias_hn)
        for threads in (1, 2, 3):
            out, h = ext.gru_infer(x, h0, *weights, reverse, threads)
            assert rel_err(out, out_r) < 1e-5, (B, T, I, H, threads)
            assert rel_err(h, h_r[int(reverse)]) < 1e-5, (B, T, I, H, threads)


@pytest.mark.parametrize("seed", range(4))
def test_bidirectional_inference_pair_kernel_matches_reference(ext: ModuleType, seed: int) -> None:
    """lstm_infer_pair runs both directions at once into one (B, T, 2H) output, the team split
    between the directions (even threads forward, odd reverse); every team size must give the
    reference's output and final states, in fp32 exactly (1e-5) and in bf16 within rounding."""
    g = torch.Generator().manual_seed(seed)
    B = int(torch.randint(1, 40, (1,), generator=g))
    T, I = (int(torch.randint(1, 30, (1,), generator=g)) for _ in range(2))
    H = [7, 32, 48, 130][seed]
    torch.manual_seed(seed)
    ref = rnnlab.LSTM(I, H, bidirectional=True, backend="reference")
    x = torch.randn(B, T, I, generator=g)
    h0, c0 = torch.randn(2, B, H, generator=g), torch.randn(2, B, H, generator=g)
    with torch.no_grad():
        out_r, (h_r, c_r) = ref(x, rnnlab.LSTMState(h0, c0))
        args = []
        for k in (0, 1):
            cell = ref.cells[k]
            args += [h0[k], c0[k], cell.weight_ih, cell.weight_hh, cell.bias]
        for threads in (1, 2, 3, 4):
            out, hf, cf, hr, cr = ext.lstm_infer_pair(x, *args, threads, False)
            assert rel_err(out, out_r) < 1e-5, (B, T, I, H, threads)
            for a, b in zip((hf, hr, cf, cr), (h_r[0], h_r[1], c_r[0], c_r[1]), strict=True):
                assert rel_err(a, b) < 1e-5, (B, T, I, H, threads)
            out_b = ext.lstm_infer_pair(x, *args, threads, True)[0]
            assert rel_err(out_b, out_r) < 2e-2, (B, T, I, H, threads)


def test_bidirectional_inference_in_train_mode_still_drops_out() -> None:
    """Under no_grad a bidirectional layer takes the pair kernel; in train mode the dropout
    between its layers must still apply (seeded: repeatable, and unlike eval mode)."""
    layer = rnnlab.LSTM(5, 16, num_layers=2, bidirectional=True, dropout=0.5, backend="compiled")
    x = torch.randn(6, 7, 5)
    with torch.no_grad():
        torch.manual_seed(1)
        first = layer(x)[0]
        torch.manual_seed(1)
        again = layer(x)[0]
        layer.eval()
        plain = layer(x)[0]
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert rel_err(first, plain) > 1e-2


def test_stacked_bidirectional_inference_matches_reference() -> None:
    """no_grad, unpadded: both layers take the pair kernel (tests/test_routing.py says so)."""
    layer = rnnlab.LSTM(3, 32, num_layers=2, bidirectional=True, backend="compiled")
    ref = copy.deepcopy(layer)
    ref.backend = "reference"
    x = torch.randn(4, 6, 3)
    with torch.no_grad():
        (out_f, fin_f), (out_r, fin_r) = layer(x), ref(x)
    assert rel_err(out_f, out_r) < 1e-5
    assert all(rel_err(a, b) < 1e-5 for a, b in zip(fin_f, fin_r, strict=True))


@pytest.mark.parametrize("padding", [None, "pre", "post"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_bf16_mode_close_to_fp32(padding: str | None, bidirectional: bool) -> None:
    """precision="bf16": only the GEMM operands are rounded to bf16 (8 significant bits), so
    outputs, states and gradients stay within about 1% of float32; all stay float32 and finite."""
    torch.manual_seed(3)
    H = 21 if padding == "post" else 40  # odd H takes the per-step bf16 GEMMs (no VNNI pack)
    I = 5 if padding == "pre" else 6  # odd I: x_t W_ih^T in fp32, the rest in bf16
    ref = rnnlab.LSTM(I, H, num_layers=2, bidirectional=bidirectional, backend="compiled")
    bf = copy.deepcopy(ref)
    bf.precision = "bf16"
    B = 19  # two row blocks of the batch on two threads
    x = torch.randn(B, 9, I)
    lengths = torch.randint(1, 10, (B,), generator=torch.Generator().manual_seed(0))
    kwargs = {} if padding is None else dict(lengths=lengths, padding=padding)
    out_r, fin_r, grads_r = run(ref, x, None, kwargs)
    out_b, fin_b, grads_b = run(bf, x, None, kwargs)
    assert out_b.dtype == torch.float32 and all(t.dtype == torch.float32 for t in fin_b)
    assert rel_err(out_b, out_r) < 2e-2
    for a, b in zip(fin_b, fin_r, strict=True):
        assert rel_err(a, b) < 2e-2
    for key in grads_r:
        assert torch.isfinite(grads_b[key]).all(), key
        assert rel_err(grads_b[key], grads_r[key]) < 3e-2, key
    with torch.no_grad():  # inference in bf16 mode (its own kernel when unpadded) agrees
        out_i = bf(x, **kwargs)[0]
    assert out_i.dtype == torch.float32
    assert rel_err(out_i, out_r) < 2e-2
    assert rel_err(out_i, out_b) < 2e-2


def test_bf16_under_autocast_and_forced_where_it_cannot_run() -> None:
    torch.manual_seed(4)
    layer = rnnlab.LSTM(6, 20, backend="compiled")
    bf = copy.deepcopy(layer)
    bf.precision = "bf16"
    x = torch.randn(3, 5, 6)
    with torch.no_grad():
        expected = bf(x)[0]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = layer(x.bfloat16())[0]  # bf16 input from an autocast layer is cast up
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected, rtol=0, atol=2e-2)
    with pytest.raises(RuntimeError, match="precision='bf16' runs the LSTM's GEMMs in bf16"):
        rnnlab.LSTM(6, 20, backend="fused", precision="bf16")(x)
    with pytest.raises(ValueError, match="expected precision 'fp32' or 'bf16', got 'fp16'"):
        rnnlab.LSTM(6, 20, precision="fp16")


def test_wide_lstm_inference_runs_per_step_and_matches_reference() -> None:
    """A one-direction float32 LSTM past the row blocks' weight budget (H = 384) infers
    through the per-step loop of the training kernel; stacked, with a given state."""
    torch.manual_seed(3)
    ref = rnnlab.LSTM(12, 384, num_layers=2, backend="reference")
    fast = copy.deepcopy(ref)
    fast.backend = "compiled"
    x = torch.randn(5, 7, 12)
    h0 = torch.randn(2, 5, 384) * 0.5
    state = rnnlab.LSTMState(h0, torch.randn(2, 5, 384) * 0.5)
    with torch.no_grad():
        out_r, (h_r, c_r) = ref(x, state)
        out_f, (h_f, c_f) = fast(x, state)
    assert rel_err(out_f, out_r) < 1e-5
    assert rel_err(h_f, h_r) < 1e-5 and rel_err(c_f, c_r) < 1e-5


@pytest.mark.parametrize("kind", ["none", "pre"])
def test_compiled_lstm_training_with_row_blocks_matches_reference(kind: str) -> None:
    """With B >= 16 the float32 LSTM kernels split the batch rows between threads (each runs
    its rows through the whole loop); uneven splits must still match the reference exactly."""
    torch.manual_seed(5)
    ref = rnnlab.LSTM(7, 24, num_layers=2, bidirectional=True, backend="reference")
    fast = copy.deepcopy(ref)
    fast.backend = "compiled"
    B, T = 37, 11
    x = torch.randn(B, T, 7)
    kwargs = {} if kind == "none" else dict(lengths=torch.randint(1, T + 1, (B,)), padding=kind)
    want = run(ref, x, None, kwargs)
    for threads in (2, 3):
        with _threads(threads):
            got = run(fast, x, None, kwargs)
        assert_runs_agree(got, want, threads)
        for p in fast.parameters():
            p.grad = None


@contextlib.contextmanager
def _threads(n: int):
    """Run a block with torch's intra-op thread count set to n."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def test_kernels_round_to_bf16_as_torch_does(ext: ModuleType) -> None:
    """The kernels' vectorised float32 -> bf16 rounding (_ext/recurrent.h, to_bf16) must give
    torch's bits: ties to even, NaN, infinities, signed zeros, subnormals, huge values."""
    special = torch.tensor(
        [0.0, -0.0, float("inf"), float("-inf"), float("nan"), 1e-45, -1e-40, 3.4e38, -3.4e38]
    )
    ties = (torch.arange(-2000, 2000, dtype=torch.int32) * 65536 + 32768).view(torch.float32)
    x = torch.cat([special, ties, torch.randn(100_003) * 10.0 ** torch.randint(-30, 30, (1,))])
    got = ext.round_bf16(x).view(torch.int16)
    want = x.to(torch.bfloat16).view(torch.int16)
    nan = torch.isnan(x)
    assert torch.equal(got[~nan], want[~nan])
    assert torch.isnan(got[nan].view(torch.bfloat16)).all()
