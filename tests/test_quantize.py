"""int8 inference (issue 23): the kernels, the modules, ``rnnlab quantize`` and its files.

Tolerances. The int8 layers differ from float32 by quantization alone: int8 weights (one scale
per output row) and activations quantized per call. On the random two-layer models here
(Glorot and orthogonal weights, inputs N(0, 1), 9 steps) the outputs (in [-1, 1]) stay within
``INT8_ATOL`` of float32: 0.02 for LSTM and GRU, 0.1 for the vanilla RNN, whose error no gate
damps (measured over 5 seeds, both directions, every padding: at most 0.004, 0.009 and 0.059);
logits stay within 3% of their spread. Exactness is
checked where it holds: with the products made float (the dequantized weights, the same
scans), the int8 path equals the float32 reference loop within 1e-5, so masks, directions,
carried states, the bias of each product and the gate layout are right; and a model saved
and loaded gives the very same outputs.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

import rnnlab
from rnnlab.bench import run_benchmarks
from rnnlab.checkpoint import meta_digest
from rnnlab.cli.main import main
from rnnlab.nn.backends import quantized as kernels
from rnnlab.nn.backends.quantized import Int8Weight, QuantizationError, packing_engine
from rnnlab.nn.cells import LSTMState
from rnnlab.nn.language_model import LanguageModel
from rnnlab.nn.quantized import (
    Int8LanguageModel,
    QuantizedLinear,
    QuantizedRecurrent,
    load_int8_state,
    quantize_model,
)
from rnnlab.nn.validation import make_mask
from tests.serve_runs import LM_SETTINGS, make_run
from tests.tiny import SMALL_MNIST_CLI

INT8_ATOL = {"lstm": 0.02, "gru": 0.02, "rnn": 0.1}
LAYERS = {"lstm": rnnlab.LSTM, "gru": rnnlab.GRU, "rnn": rnnlab.RNN}


def _state(layer, B: int, g: torch.Generator):
    LD, H = layer.num_layers * layer.num_directions, layer.hidden_size
    h = torch.randn(LD, B, H, generator=g) * 0.5  # (L*D, B, H)
    if isinstance(layer, rnnlab.LSTM):
        return LSTMState(h, torch.randn(LD, B, H, generator=g) * 0.5)
    return h


def _h(state):
    return state.h if isinstance(state, tuple) else state


def _batch(seed: int, B: int = 5, T: int = 9, I: int = 12):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, I, generator=g)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    lengths[0] = T
    return x, lengths, g


@pytest.mark.parametrize("cell", list(LAYERS))
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("padding", [None, "post", "pre"])
def test_int8_layer_within_tolerance_of_float32(cell, bidirectional, padding):
    torch.manual_seed(1)
    layer = LAYERS[cell](12, 16, num_layers=2, bidirectional=bidirectional).eval()
    int8 = quantize_model(layer)
    assert isinstance(int8, QuantizedRecurrent)
    x, lengths, g = _batch(2)
    state = _state(layer, x.shape[0], g)
    kwargs = {} if padding is None else {"lengths": lengths, "padding": padding}
    with torch.no_grad():
        out, final = layer(x, state, **kwargs)
    out8, final8 = int8(x, state, **kwargs)
    assert out8.shape == out.shape and type(final8) is type(final)
    assert (out8 - out).abs().max() <= INT8_ATOL[cell]
    pairs = zip(final8, final, strict=True) if cell == "lstm" else [(final8, final)]
    for a, b in pairs:  # h (and c): (L*D, B, H)
        assert (a - b).abs().max() <= INT8_ATOL[cell]
    if padding is not None:  # padded steps output exactly zero
        mask = make_mask("test", lengths, None, padding, x.shape[0], x.shape[1], x.device)
        assert bool((out8[~mask] == 0).all())


@pytest.fixture
def float_products(monkeypatch):
    """Every int8 product made a float32 product with the dequantized weight: what is left
    of the int8 path is its plumbing (scans, masks, directions, biases)."""

    def product(self, x):
        return nn.functional.linear(x, self.dequantize(), self.bias)

    monkeypatch.setattr(Int8Weight, "__call__", product)


@pytest.mark.parametrize("cell", list(LAYERS))
@pytest.mark.parametrize("padding", ["post", "pre"])
@pytest.mark.parametrize("seed", [0, 1])
def test_int8_scans_equal_the_reference_loop_given_float_products(
    float_products, monkeypatch, cell, padding, seed
):
    if seed == 1:  # input projections in chunks of steps (LSTM 1, GRU 2, RNN 6 and 1), as large
        # batches get them
        monkeypatch.setattr(kernels, "XW_CHUNK_BYTES", 2 * 5 * 3 * 8 * 4)
    torch.manual_seed(seed)
    B, T, I, H = 4 + seed, 7, 6, 5 + 3 * seed
    layer = LAYERS[cell](I, H, num_layers=2, bidirectional=True, backend="reference").eval()
    int8 = quantize_model(layer)
    with torch.no_grad():  # the float layer on the int8 model's weights
        for cell_f, cell_q in zip(layer.cells, int8.cells, strict=True):
            w_ih, w_hh = cell_q.dequantized()
            cell_f.weight_ih.copy_(w_ih)
            cell_f.weight_hh.copy_(w_hh)
    x, lengths, g = _batch(seed, B, T, I)
    state = _state(layer, B, g)
    with torch.no_grad():
        out, final = layer(x, state, lengths=lengths, padding=padding)
    out8, final8 = int8(x, state, lengths=lengths, padding=padding)
    torch.testing.assert_close(out8, out, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(_h(final8), _h(final), rtol=1e-5, atol=1e-6)
    if cell == "lstm":
        torch.testing.assert_close(final8.c, final.c, rtol=1e-5, atol=1e-6)


def test_int8_linear_is_torchs_dynamic_kernel_on_the_same_weights():
    torch.manual_seed(0)
    linear = nn.Linear(24, 10)
    ours = quantize_model(linear)
    assert isinstance(ours, QuantizedLinear)
    w = ours._int8  # the same int8 values, packed by torch's own dynamic Linear
    zero = torch.zeros(10, dtype=torch.long)
    qweight = torch._make_per_channel_quantized_tensor(w.q, w.scale.double(), zero, 0)
    theirs = torch.ao.nn.quantized.dynamic.Linear(24, 10)
    with packing_engine(w.engine):  # torch packs with its process-wide engine
        theirs.set_weight_bias(qweight, linear.bias.detach())
    x = torch.randn(7, 24)
    expected = torch.ops.quantized.linear_dynamic(
        x, theirs._packed_params._packed_params, w.reduce_range
    )
    assert torch.equal(ours(x), expected)
    if w.reduce_range:  # 7-bit activations: exactly what torch's module runs
        assert torch.equal(ours(x), theirs(x))
    assert (ours(x) - linear(x)).abs().max() < 0.05 * linear(x).abs().max()


def test_weights_are_int8_with_one_scale_per_row():
    torch.manual_seed(0)
    weight = torch.randn(6, 5)
    w = Int8Weight.quantize(weight, None)
    assert w.q.dtype == torch.int8 and int(w.q.abs().max()) == 127
    torch.testing.assert_close(w.scale, weight.abs().amax(1) / 127)
    assert (w.dequantize() - weight).abs().max() <= w.scale.max() / 2 + 1e-7
    per_tensor = Int8Weight.quantize(weight, None, per_channel=False)
    assert per_tensor.scale.unique().numel() == 1
    zero_row = Int8Weight.quantize(torch.zeros(2, 3), None)  # no division by zero
    assert torch.equal(zero_row(torch.ones(1, 3)), torch.zeros(1, 2))


def _lm(cell: str = "lstm") -> LanguageModel:
    torch.manual_seed(0)
    return LanguageModel(30, 8, 16, num_layers=2, cell=cell).eval()


def test_int8_language_model_loss_and_generation():
    model = _lm()
    int8 = quantize_model(model)
    assert type(int8) is Int8LanguageModel and type(model) is LanguageModel  # a copy
    ids = torch.randint(0, 30, (3, 11), generator=torch.Generator().manual_seed(1))
    targets = ids.roll(-1, dims=1)
    logits8, state8 = int8(ids)
    with torch.no_grad():
        logits, _ = model(ids)
    spread = float(logits.max() - logits.min())
    assert (logits8 - logits).abs().max() <= 0.03 * spread
    loss8, _ = int8(ids, targets=targets)  # the int8 decoder's logits, not the float weight
    expected = nn.functional.cross_entropy(logits8.flatten(0, 1), targets.flatten())
    torch.testing.assert_close(loss8, expected)
    # one token at a time from the carried state: the full forward's last state, to rounding
    state = None
    for t in range(ids.shape[1]):
        _, state = int8(ids[:, t : t + 1], state)
    assert (state.h - state8.h).abs().max() <= INT8_ATOL["lstm"]
    tokens = list(int8.generate([1, 2, 3], 5, seed=0))
    assert len(tokens) == 5 and all(0 <= t < 30 for t in tokens)


def test_int8_classifiers_within_tolerance():
    from rnnlab.config import load_preset
    from rnnlab.tasks import build_model

    for preset, settings, example in (
        ("mnist-sample", ["model.projection=16", "model.hidden_sizes=[12]"], None),
        ("imdb-sample", ["model.hidden_sizes=[8,8]", "model.bidirectional=true"], "ids"),
    ):
        torch.manual_seed(0)
        model = build_model(load_preset(preset, settings)).eval()
        int8 = quantize_model(model)
        names = {type(m).__name__ for m in int8.modules()}
        assert "Linear" not in names and "LSTM" not in names
        g = torch.Generator().manual_seed(0)
        x = torch.randint(1, 100, (6, 20), generator=g) if example else torch.rand(6, 28, 28)
        with torch.no_grad():
            logits = model(x)
        spread = float(logits.max() - logits.min())
        assert (int8(x) - logits).abs().max() <= 0.03 * spread + 1e-3


def test_int8_state_round_trip_gives_the_same_outputs(tmp_path):
    model = _lm("gru")
    int8 = quantize_model(model)
    save_file(int8.state_dict(), tmp_path / "m.safetensors")
    torch.manual_seed(5)  # the same architecture, other weights
    fresh = quantize_model(LanguageModel(30, 8, 16, num_layers=2, cell="gru"))
    load_int8_state(fresh, load_file(tmp_path / "m.safetensors"))
    ids = torch.randint(0, 30, (2, 7))
    assert torch.equal(fresh(ids)[0], int8(ids)[0])


def test_int8_refusals():
    layer = quantize_model(rnnlab.LSTM(4, 5))
    with pytest.raises(QuantizationError, match="return_gates=False"):
        layer(torch.randn(2, 3, 4), return_gates=True)
    with pytest.raises(QuantizationError, match="no backend or precision"):
        layer(torch.randn(2, 3, 4), backend="fused")
    with pytest.raises(ValueError, match=r"shape \(B, T, 4\)"):
        layer(torch.randn(2, 3, 5))
    with pytest.raises(QuantizationError, match="MinGRU at rnn"):
        quantize_model(_lm("mingru"))
    with pytest.raises(QuantizationError, match="torch.nn.LSTM at 0"):
        quantize_model(nn.Sequential(nn.LSTM(4, 5)))
    with pytest.raises(QuantizationError, match="expected an engine"):
        quantize_model(rnnlab.LSTM(4, 5), engine="qnnpack")
    with pytest.raises(QuantizationError, match="with none"):
        quantize_model(nn.Sequential(nn.Embedding(3, 4)))


# -- the command line, on tiny trained runs ----------------------------------------------------
@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("q") / "mnist"
    assert main(["train", "mnist-sample", "--out", str(run), *SMALL_MNIST_CLI]) == 0
    return run


def test_quantize_command_writes_and_measures(mnist_run, capsys):
    assert main(["quantize", str(mnist_run), "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "int8 model of checkpoint best" in out and "accuracy: float32" in out
    report = json.loads((mnist_run / "int8.json").read_text())
    measured = report["measured"]
    assert abs(measured["change"]["accuracy"]) <= 0.05  # 20-step model, 500 test images
    assert report["scheme"]["int8_layers"] == ["projection", "stack.layers.0", "head"]
    assert report["bytes"]["int8"] < report["bytes"]["float32"] / 2
    assert not list(mnist_run.glob(".*.tmp")) and not (mnist_run / "checkpoints/int8").exists()
    # evaluate reads the file and finds the figures quantize measured
    assert main(["evaluate", str(mnist_run), "--checkpoint", "int8", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["checkpoint"] == "int8"
    assert result["accuracy"] == pytest.approx(measured["int8"]["accuracy"])
    # an existing int8 model is replaced only with --force
    assert main(["quantize", str(mnist_run), "--no-measure"]) == 2
    assert "add --force" in capsys.readouterr().err
    assert main(["quantize", str(mnist_run), "--no-measure", "--force", "--per-tensor"]) == 0


def test_a_changed_int8_file_or_run_is_refused(mnist_run, tmp_path, capsys):
    assert main(["quantize", str(mnist_run), "--no-measure", "--force"]) == 0
    path = mnist_run / "int8.safetensors"
    original = path.read_bytes()
    tensors = load_file(path)
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        metadata = f.metadata()
    tensors["head.bias"] = tensors["head.bias"] + 1
    save_file(tensors, path, metadata=metadata)
    assert main(["evaluate", str(mnist_run), "--checkpoint", "int8"]) == 2
    assert "the file was changed" in capsys.readouterr().err
    path.write_bytes(original)
    best = mnist_run / "checkpoints" / "best.json"
    kept = best.read_text()
    meta = json.loads(kept)
    later = {**meta, "sha256": "0" * 64}  # as a later best would say, digest included
    later["meta_sha256"] = meta_digest(later)
    try:
        best.write_text(json.dumps(later))
        assert main(["evaluate", str(mnist_run), "--checkpoint", "int8"]) == 2
        assert "changed since it was quantized" in capsys.readouterr().err
        best.write_text(json.dumps({**meta, "state": {**meta["state"], "step": 1}}))
        assert main(["evaluate", str(mnist_run), "--checkpoint", "int8"]) == 2
        assert "the file was edited" in capsys.readouterr().err
    finally:
        best.write_text(kept)
    assert main(["evaluate", str(mnist_run), "--checkpoint", "int8"]) == 0


def test_quantize_errors_write_nothing(tmp_path, capsys):
    assert main(["quantize", str(tmp_path / "nothing")]) == 2
    assert "expected an rnnlab run directory" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path / "nothing"), "--checkpoint", "int8"]) == 2
    minimal = make_run(tmp_path / "min", "charlm-sample", [*LM_SETTINGS, "model.cell=mingru"])
    assert main(["quantize", str(minimal)]) == 2
    assert "cells of 2024 have no int8 path" in capsys.readouterr().err
    chars = make_run(tmp_path / "chars", "charlm-sample", LM_SETTINGS)
    assert main(["evaluate", str(chars), "--checkpoint", "int8"]) == 2
    assert "make it with `rnnlab quantize" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["quantize", str(chars), "--data-dir", str(empty)]) == 2  # measuring fails
    capsys.readouterr()
    assert sorted(p.name for p in chars.iterdir() if "int8" in p.name) == []


def test_quantize_a_language_model_run(tmp_path, capsys):
    chars = make_run(tmp_path / "chars", "charlm-sample", LM_SETTINGS)
    assert main(["quantize", str(chars), "--json", "--threads", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert abs(report["measured"]["change"]["bpc"]) < 0.05  # an untrained model, 10 units
    assert main(["evaluate", str(chars), "--checkpoint", "int8", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["bpc"] == pytest.approx(report["measured"]["int8"]["bpc"])


def test_every_reading_command_takes_the_int8_model(mnist_run, tmp_path, capsys):
    """predict, score and generate read ``--checkpoint int8`` as evaluate does (transcribe and
    translate are checked beside their own runs, in test_transcribe and test_seq2seq_floors)."""
    assert main(["quantize", str(mnist_run), "--no-measure", "--force"]) == 0
    capsys.readouterr()
    image = tmp_path / "digit.npy"
    np.save(image, np.random.default_rng(0).uniform(0, 1, (28, 28)).astype(np.float32))
    answers = {}
    for tag in ("best", "int8"):
        argv = ["predict", str(mnist_run), "--image", str(image), "--json", "--checkpoint", tag]
        assert main(argv) == 0
        answers[tag] = json.loads(capsys.readouterr().out)
    assert answers["int8"]["probability"] == pytest.approx(answers["best"]["probability"], abs=0.05)
    chars = make_run(tmp_path / "chars", "charlm-sample", LM_SETTINGS)
    assert main(["quantize", str(chars), "--no-measure"]) == 0
    capsys.readouterr()
    scores = {}
    for tag in ("last", "int8"):
        assert (
            main(["score", str(chars), "--text", "the cat sat", "--json", "--checkpoint", tag]) == 0
        )
        scores[tag] = json.loads(capsys.readouterr().out)["bpc"]
    assert (
        scores["int8"] == pytest.approx(scores["last"], abs=0.05)
        and scores["int8"] != scores["last"]
    )
    argv = ["generate", str(chars), "--prompt", "the", "--length", "20", "--seed", "3"]
    assert main([*argv, "--checkpoint", "int8"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("the") and len(text.rstrip("\n")) >= 20
    assert main([*argv, "--checkpoint", "int8"]) == 0
    assert capsys.readouterr().out == text  # the same seed, the same text
    assert (
        main(["predict", str(tmp_path / "nothing"), "--image", str(image), "--checkpoint", "int8"])
        == 2
    )


# -- the bench rows ----------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:torch.ao.quantization is deprecated:DeprecationWarning")
def test_bench_int8_rows_are_inference_only_against_their_float_rows():
    from rnnlab.bench.cli import format_report
    from rnnlab.bench.int8 import int8_runner
    from rnnlab.bench.workloads import WORKLOADS, build_model, make_batch

    w = WORKLOADS["A"]
    x, _ = make_batch(w)
    runner = int8_runner(w, "rnnlab-int8", x)
    torch.manual_seed(0)  # the runner's float model: the rnnlab row's
    with torch.no_grad():
        want = build_model(w, "rnnlab").eval()(x)
        got = runner.model(x)
    assert (got - want).abs().max() <= 0.03 * float(want.max() - want.min())

    impls = ("rnnlab", "rnnlab-int8", "torch", "torch-int8")
    report = run_benchmarks(["A"], impls, ("train", "infer"), 1, 0.05, False)
    rows = {(r["impl"], r["mode"]): r for r in report["results"]}
    assert ("rnnlab-int8", "train") not in rows and ("torch-int8", "train") not in rows
    assert rows[("rnnlab-int8", "infer")]["baseline"] == "rnnlab"
    assert rows[("torch-int8", "infer")]["baseline"] == "torch"
    assert "int8_dynamic_gflops" in report["gemm"]["2048^3"]
    text = format_report(report)
    assert "A infer rnnlab-int8:" in text and "x torch int8" in text
