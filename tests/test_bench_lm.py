"""Bench workloads F and G (language models) and the decoder + cross-entropy fast path."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torch import nn

from rnnlab.bench import main, suite
from rnnlab.bench.lm_models import LMRunner, build_language_model
from rnnlab.bench.workloads import WORKLOADS
from rnnlab.denormals import flush_denormals
from rnnlab.nn import decoder_loss
from rnnlab.nn.backends.compiled import compiled_unavailable
from rnnlab.nn.cells import LSTMCell
from rnnlab.nn.decoder_loss import decoder_cross_entropy
from rnnlab.nn.layers import LSTM


def _bf16_unavailable() -> str | None:
    if not torch.backends.cpu.get_cpu_capability().startswith("AVX512"):
        return "no AVX-512"
    return compiled_unavailable(LSTMCell(4, 4), torch.zeros(1, 1, 4))


def _inputs(N=48, H=24, V=70, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(N, H, generator=g, dtype=torch.float64).float().requires_grad_()
    weight = (0.3 * torch.randn(V, H, generator=g)).requires_grad_()
    bias = torch.randn(V, generator=g).requires_grad_()
    targets = torch.randint(0, V, (N,), generator=g)
    return hidden, weight, bias, targets


def _reference(hidden, weight, bias, targets):
    return nn.functional.cross_entropy(nn.functional.linear(hidden, weight, bias), targets)


def tiny_f(monkeypatch, peak: float = 1.0):
    """Workload F shrunk to seconds, in place for the bench, with GEMM peaks of ``peak`` GFLOP/s
    (measuring them at tiny shapes would take millions of calls, about 2 GFLOP per sample)."""
    tiny = dataclasses.replace(WORKLOADS["F"], batch=2, steps=5, vocab=20, inputs=8, hidden=(8, 8))
    monkeypatch.setitem(WORKLOADS, "F", tiny)
    peaks = {"mkl_gflops": peak, "onednn_gflops": peak, "onednn_bf16_gflops": peak}

    def fake(shapes, repeats, int8=False):  # int8: also the int8 product's rate (no row here)
        return {name: {"shape": list(shape), **peaks} for name, shape in shapes.items()}

    monkeypatch.setattr(suite, "gemm_peaks", fake)
    return tiny


@pytest.fixture(params=["compiled", "torch ops"])
def softmax_path(request, monkeypatch):
    """Both implementations of the fused softmax: the C++ kernel and the torch-op fallback."""
    if request.param == "compiled":
        if decoder_loss._softmax_kernel() is None:
            pytest.skip("the compiled extension does not run here")
    else:
        monkeypatch.setattr(decoder_loss, "_softmax_kernel", lambda: None)
    return request.param


@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("upstream", [1.0, -2.5])
def test_decoder_loss_matches_linear_then_cross_entropy_in_fp32(with_bias, upstream, softmax_path):
    hidden, weight, bias, targets = _inputs()
    bias = bias if with_bias else None
    params = [p for p in (hidden, weight, bias) if p is not None]
    expected = _reference(hidden, weight, bias, targets)
    got = decoder_cross_entropy(hidden, weight, bias, targets)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    for a, b in zip(
        torch.autograd.grad(got * upstream, params),
        torch.autograd.grad(expected * upstream, params),
        strict=True,
    ):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_decoder_loss_without_gradients_takes_the_loss_alone(monkeypatch):
    """Evaluation (no grad mode, or nothing requiring grad) skips the Function, whose forward
    also makes the gradient, and gives cross_entropy's value (bf16: within its rounding)."""
    hidden, weight, bias, targets = _inputs()
    expected = _reference(hidden, weight, bias, targets).detach()

    def refuse(*args):
        raise AssertionError("the Function ran where no gradient was wanted")

    monkeypatch.setattr(decoder_loss._DecoderCrossEntropy, "apply", refuse)
    with torch.no_grad():
        got = decoder_cross_entropy(hidden, weight, bias, targets)
        in_bf16 = decoder_cross_entropy(hidden, weight, bias, targets, bf16=True)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    assert abs(in_bf16.item() - expected.item()) < 2e-3 * expected.item()
    detached = [t.detach() for t in (hidden, weight, bias)]
    torch.testing.assert_close(decoder_cross_entropy(*detached, targets), expected)
    with pytest.raises(AssertionError, match="the Function ran"):  # a gradient is wanted
        decoder_cross_entropy(hidden, weight, bias, targets)


def test_decoder_loss_is_stable_for_extreme_logits(softmax_path):
    # Logits of +-1e4 overflow a naive exp; the loss of a confident right answer is ~0 and of a
    # confident wrong one is the logit gap, exactly as cross_entropy says.
    hidden = torch.tensor([[1.0], [1.0]], requires_grad=True)
    weight = torch.tensor([[1e4], [-1e4], [0.0]])
    targets = torch.tensor([0, 1])
    got = decoder_cross_entropy(hidden, weight, None, targets)
    expected = nn.functional.cross_entropy(hidden @ weight.t(), targets)
    torch.testing.assert_close(got, expected)
    assert got.item() == pytest.approx(1e4, rel=1e-6)


def test_decoder_loss_in_bf16_is_within_bf16_rounding_of_fp32():
    hidden, weight, bias, targets = _inputs(N=200, H=64, V=500, seed=1)
    expected = _reference(hidden, weight, bias, targets)
    got = decoder_cross_entropy(hidden, weight, bias, targets, bf16=True)
    assert abs(got.item() - expected.item()) < 2e-3 * expected.item()
    grads = torch.autograd.grad(got, (hidden, weight, bias))
    for a, b in zip(grads, torch.autograd.grad(expected, (hidden, weight, bias)), strict=True):
        assert a.dtype == torch.float32
        assert (a - b).abs().max() <= 2e-2 * b.abs().max()  # bf16 keeps 8 bits of mantissa


def test_decoder_loss_gradcheck_in_float64():
    hidden, weight, bias, targets = _inputs(N=6, H=4, V=7)
    args = [t.detach().double().requires_grad_() for t in (hidden, weight, bias)]
    assert torch.autograd.gradcheck(
        lambda h, w, b: decoder_cross_entropy(h, w, b, targets), args, eps=1e-6, atol=1e-5
    )


def test_decoder_loss_refuses_mismatched_shapes():
    hidden, weight, bias, targets = _inputs()
    with pytest.raises(ValueError, match=r"expected hidden \(N, H\) and weight \(V, H\)"):
        decoder_cross_entropy(hidden, weight[:, :3], bias, targets)
    with pytest.raises(ValueError, match="expected integer targets of shape"):
        decoder_cross_entropy(hidden, weight, bias, targets[:3])
    with pytest.raises(ValueError, match="expected bias of shape"):
        decoder_cross_entropy(hidden, weight, bias[:3], targets)


def test_workloads_f_and_g_are_the_issues_models():
    f, g = WORKLOADS["F"], WORKLOADS["G"]
    assert (f.batch, f.steps, f.vocab, f.inputs, f.hidden, f.tied) == (
        64,
        128,
        100,
        64,
        (512, 512),
        False,
    )
    assert (g.batch, g.steps, g.vocab, g.inputs, g.hidden, g.tied) == (
        20,
        35,
        10000,
        650,
        (650, 650),
        True,
    )
    # Zaremba et al. 2014's medium model, tied: 10000 x 650 + 2 LSTM layers + decoder bias
    lstm = 2 * 4 * 650 * (650 + 650 + 1)
    for impl in ("rnnlab", "torch"):
        model = build_language_model(g, impl)
        count = sum(p.numel() for p in model.parameters())
        torch_extra_bias = 2 * 4 * 650 if impl == "torch" else 0  # torch has b_ih and b_hh
        assert count == 10000 * 650 + lstm + torch_extra_bias + 10000


@pytest.mark.parametrize("tied", [False, True])
def test_rnnlab_and_torch_models_compute_the_same_loss(tied):
    """The bench compares the same model: with torch's weights copied into rnnlab's, the losses
    and the embedding's gradients agree."""
    w = dataclasses.replace(
        WORKLOADS["G"], batch=3, steps=6, vocab=40, inputs=16, hidden=(16, 16), tied=tied
    )
    torch_model = build_language_model(w, "torch")
    ours = build_language_model(w, "rnnlab")
    ours.model.rnn = LSTM.from_torch(torch_model.rnn)
    ours.model.embedding.weight.data.copy_(torch_model.embedding.weight.data)
    if not tied:
        ours.model.decoder.weight.data.copy_(torch_model.decoder.weight.data)
    ours.model.decoder.bias.data.copy_(torch_model.decoder.bias.data)
    x, y = torch.randint(0, 40, (3, 6)), torch.randint(0, 40, (3, 6))
    a, b = ours.loss(x, y), torch_model.loss(x, y)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    ga = torch.autograd.grad(a, ours.model.embedding.weight)[0]
    gb = torch.autograd.grad(b, torch_model.embedding.weight)[0]
    torch.testing.assert_close(ga, gb, rtol=1e-4, atol=1e-6)


@pytest.mark.skipif(_bf16_unavailable() is not None, reason="bf16 needs the compiled kernels")
def test_bf16_runner_trains_with_bf16_recurrent_and_decoder_gemms():
    w = dataclasses.replace(WORKLOADS["G"], batch=2, steps=4, vocab=30, inputs=8, hidden=(8, 8))
    runner = LMRunner(w, "rnnlab-bf16")
    assert runner.model.model.rnn.precision == "bf16"
    before = runner.model.model.embedding.weight.detach().clone()
    runner.train()
    assert not torch.equal(before, runner.model.model.embedding.weight)


def test_bench_runs_a_language_model_workload_against_torch(tmp_path, monkeypatch):
    tiny = dataclasses.replace(
        WORKLOADS["G"], batch=2, steps=5, vocab=50, inputs=16, hidden=(16, 16)
    )
    monkeypatch.setitem(WORKLOADS, "G", tiny)
    out = tmp_path / "bench.json"
    argv = ["--workloads", "G", "--impls", "rnnlab,torch,keras-torch,onnxruntime", "--quick"]
    assert main([*argv, "--modes", "train", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    rows = {r["impl"]: r for r in report["results"]}
    assert set(rows) == {"rnnlab", "torch"}  # no Keras or ONNX language models
    assert rows["torch"]["ratio_vs_torch_lstm"] == 1.0 and rows["rnnlab"]["ratio_vs_torch_lstm"] > 0


def test_bench_rows_for_mingru_and_minlstm(tmp_path, monkeypatch):
    """The 2024 cells in the same run as the LSTM: the parallel path against rnnlab's LSTM,
    the step-by-step reference against the parallel path; FLOPs without a recurrent GEMM."""
    tiny = tiny_f(monkeypatch)
    out = tmp_path / "bench.json"
    impls = "rnnlab,rnnlab-mingru,rnnlab-minlstm,rnnlab-mingru-ref,rnnlab-minlstm-ref"
    argv = ["--workloads", "F", "--impls", impls, "--quick", "--modes", "train"]
    assert main([*argv, "--json", str(out)]) == 0
    rows = {r["impl"]: r for r in json.loads(out.read_text())["results"]}
    assert rows["rnnlab-mingru"]["cell"] == "mingru" and rows["rnnlab-minlstm"]["cell"] == "minlstm"
    assert rows["rnnlab-mingru"]["baseline"] == "rnnlab"
    assert rows["rnnlab-minlstm-ref"]["baseline"] == "rnnlab-minlstm"
    runner = LMRunner(tiny, "rnnlab-mingru-ref")
    assert runner.model.model.rnn.backend == "reference" and runner.model.model.cell == "mingru"


def test_token_mode_times_one_generation_step_of_language_models_only(tmp_path, monkeypatch):
    """--modes token: language models only, one id (batch 1, T = 1) from the carried state,
    so samples/s is tokens/s; the carried steps equal one forward over the same ids."""
    tiny = tiny_f(monkeypatch)
    out = tmp_path / "bench.json"
    argv = ["--workloads", "A,F", "--impls", "rnnlab,torch,rnnlab-minlstm", "--quick"]
    assert main([*argv, "--modes", "token", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["results"]
    assert {(r["workload"], r["impl"], r["mode"]) for r in rows} == {
        ("F", "rnnlab", "token"),
        ("F", "torch", "token"),
        ("F", "rnnlab-minlstm", "token"),
    }
    for r in rows:  # one token a call
        assert r["samples_per_second"] == pytest.approx(1e3 / r["step_ms"])
    for impl in ("rnnlab", "torch", "rnnlab-minlstm"):
        runner = LMRunner(tiny, impl)
        ids = runner.x[:1]  # (1, T)
        state = None
        with torch.no_grad():
            whole, _ = runner.model.step(ids, None)
            for t in range(ids.shape[1]):
                runner.token_id = ids[:, t : t + 1]
                runner.token()
                logits, state = runner.model.step(ids[:, t : t + 1], state)
                torch.testing.assert_close(logits[:, 0], whole[:, t], rtol=1e-5, atol=1e-6)
        assert runner.model.training  # token() leaves the model as it found it


def test_bench_flags_cliffs_and_records_the_denormal_modes(tmp_path, monkeypatch, capsys):
    """A train or infer step under 10% of the GEMM peak is named under "Cliffs" (token rows,
    bound by reading the weights at batch 1, are not); --flush-denormals is recorded."""
    tiny_f(monkeypatch, peak=1e6)  # every train and infer row under 10% of it
    out = tmp_path / "bench.json"
    argv = ["--workloads", "F", "--impls", "rnnlab", "--quick", "--modes", "train,token"]
    try:
        assert main([*argv, "--flush-denormals", "--json", str(out)]) == 0
    finally:
        flush_denormals(False)
    text = capsys.readouterr().out
    cliffs = [line for line in text.splitlines() if line.startswith("Cliffs")]
    assert len(cliffs) == 1 and "F rnnlab train (0%)" in cliffs[0] and "token" not in cliffs[0]
    env = json.loads(out.read_text())["environment"]
    assert env["denormals"].startswith("flushed to zero on ")
