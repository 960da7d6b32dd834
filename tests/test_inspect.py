"""rnnlab inspect: what it records agrees with the model, the files it writes, and every bad
input refused with nothing written. Tiny runs on the packaged sample data."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from rnnlab.config import load_preset
from rnnlab.inspect import InspectError, inspect_run, main
from rnnlab.inspect.inputs import text_example
from rnnlab.inspect.trace import record_gates
from rnnlab.predict import PredictError, predict_images, predict_texts
from rnnlab.runs import RunError, load_run, train
from rnnlab.tasks import build_model
from tiny import TINY_IMDB_NO_LOGS as TINY_IMDB
from tiny import merge_settings

TINY_MNIST = [
    "model.projection=16",
    "model.hidden_sizes=[16]",
    "train.epochs=1",
    "train.batch_size=500",
    "run.log_every=0",
    "run.checkpoint_every=0",
]
# the tutorial's layout: pre-padding read as words (no mask), two stacked layers, last state
SEEDLIKE_GRU = merge_settings(
    TINY_IMDB,
    "model.cell=gru",
    "model.hidden_sizes=[6, 5]",
    "model.mask=false",
    "model.bidirectional=false",
    "model.pooling=last",
    "data.padding=pre",
    "train.bucket=false",
    "data.maxlen=12",
    "data.punctuation=false",
)
REVIEW = "A wonderful film, but the ending was not good at all."


def _vocab(run_dir):
    return json.loads((run_dir / "vocab.json").read_text("utf-8"))


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "mnist"
    train("mnist-sample", out, overrides=TINY_MNIST)
    return out


@pytest.fixture(scope="module")
def imdb_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "imdb"
    train("imdb-sample", out, overrides=TINY_IMDB)
    return out


@pytest.fixture(scope="module")
def gru_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "gru"
    train("imdb-sample", out, overrides=SEEDLIKE_GRU)
    return out


def test_mnist_files_and_predictions_agree_with_the_model(mnist_run, tmp_path):
    result = inspect_run(mnist_run, tmp_path / "out", index=7)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "gates.png",
        "inspect.json",
        "prediction.png",
        "saturation.json",
        "saturation.png",
    ]
    summary = json.loads((tmp_path / "out" / "inspect.json").read_text())
    assert summary == json.loads(json.dumps(result.summary))
    assert summary["input"]["test_index"] == 7 and summary["steps"] == 28
    assert summary["units"] == result.summary["units"] and len(summary["units"]) == 16
    # the recorded (reference) path and the fused path give the same prediction
    config, model, _ = load_run(mnist_run)
    from rnnlab.inspect.inputs import image_example

    x = image_example(config, mnist_run, index=7).inputs[0]  # (1, 28, 28)
    expected = torch.softmax(model(x), -1)[0].tolist()
    np.testing.assert_allclose(summary["prediction"]["probabilities"], expected, rtol=1e-5)
    stats = json.loads((tmp_path / "out" / "saturation.json").read_text())
    assert set(stats["gates"]) == {"i", "f", "o"} and stats["steps"] == 28
    for gate in stats["gates"].values():
        assert len(gate["left"]) == 16 == len(gate["right"])
        assert all(0 <= a + b <= 1 for a, b in zip(gate["left"], gate["right"], strict=True))


def test_prediction_after_each_row_is_the_head_on_that_rows_state(mnist_run):
    """For a one-layer LSTM read to its last state, the prediction after row t must be the
    head applied to h_t: checks the prefix predictions against the recorded gates."""
    from rnnlab.inspect.inputs import image_example, prefix_probabilities

    config, model, _ = load_run(mnist_run)
    example = image_example(config, mnist_run, index=3)
    gates = record_gates(model, example.inputs, 0, 0)  # h: (28, 16)
    with torch.no_grad():
        by_state = torch.softmax(model.head(torch.from_numpy(gates["h"])), -1).numpy()
    np.testing.assert_allclose(
        prefix_probabilities(model, config, example), by_state, rtol=1e-4, atol=1e-6
    )
    # c_t = f_t c_{t-1} + i_t g_t, recorded step by step
    c_prev = np.vstack([np.zeros((1, 16)), gates["c"][:-1]])
    np.testing.assert_allclose(
        gates["c"], gates["f"] * c_prev + gates["i"] * gates["g"], rtol=1e-5, atol=1e-6
    )


def test_image_file_gives_the_same_trace_as_its_index(mnist_run, tmp_path):
    config, _, _ = load_run(mnist_run)
    from rnnlab.inspect.inputs import image_example

    pixels = image_example(config, mnist_run, index=5).image
    np.save(tmp_path / "digit.npy", (pixels * 255).round().astype(np.uint8))
    by_file = inspect_run(mnist_run, tmp_path / "a", image=tmp_path / "digit.npy").summary
    by_index = inspect_run(mnist_run, tmp_path / "b", index=5).summary
    np.testing.assert_allclose(
        by_file["prediction"]["probabilities"], by_index["prediction"]["probabilities"], rtol=1e-5
    )
    p = predict_images(mnist_run, [tmp_path / "digit.npy"])[0]["probabilities"]
    np.testing.assert_allclose(by_file["prediction"]["probabilities"], p, rtol=1e-5)


def test_text_page_has_one_token_per_word_read_and_the_final_prediction(imdb_run, tmp_path):
    result = inspect_run(imdb_run, tmp_path / "out", text=REVIEW, units=[3, 1], mode="f")
    assert sorted(result.files) == [
        "gates.png",
        "inspect.json",
        "saturation.json",
        "saturation.png",
        "tokens.html",
    ]
    page = result.files["tokens.html"].read_text()
    config, _, _ = load_run(imdb_run)
    n = len(text_example(config, _vocab(imdb_run), REVIEW).ids)
    assert page.count('class="tok"') == n == result.summary["real_steps"]
    assert "[START]" in page and "<script src" not in page and "<link" not in page
    assert "http://" not in page and "https://" not in page  # self-contained
    assert result.summary["units"] == [3, 1] and 'value="3" selected' in page
    assert 'value="f" selected' in page
    expected = predict_texts(imdb_run, [REVIEW])[0]["probabilities"]
    np.testing.assert_allclose(result.summary["prediction"]["probabilities"], expected, rtol=1e-5)


def test_unmasked_two_layer_gru_draws_padding_and_the_chosen_layer(gru_run, tmp_path):
    result = inspect_run(gru_run, tmp_path / "out", text="Good, good. good! bad", layer=1)
    s = result.summary
    assert s["cell"] == "gru" and s["steps"] == 12 and s["real_steps"] == 5  # [START] + 4
    assert max(s["units"]) < 5 and len(s["units"]) == 5  # top 16 of 5 units: all
    stats = json.loads(result.files["saturation.json"].read_text())
    assert set(stats["gates"]) == {"r", "z"} and stats["steps"] == 5
    assert result.files["tokens.html"].read_text().count('class="tok"') == 5
    with pytest.raises(InspectError, match=r"--layer expected 0\.\.1, got 2"):
        inspect_run(gru_run, tmp_path / "x", text="good", layer=2)
    with pytest.raises(InspectError, match=r"--direction expected 0\.\.0"):
        inspect_run(gru_run, tmp_path / "x", text="good", direction=1)
    assert not (tmp_path / "x").exists()


def test_saturation_over_test_examples(imdb_run, tmp_path):
    result = inspect_run(imdb_run, tmp_path / "out", text=REVIEW, stats_examples=20, direction=1)
    stats = json.loads(result.files["saturation.json"].read_text())
    assert stats["examples"] == 20 and stats["steps"] > 20 * 5
    with pytest.raises(InspectError, match="--stats-examples expected 1.."):
        inspect_run(imdb_run, tmp_path / "bad", text=REVIEW, stats_examples=10**7)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(text="qqqzx vvvwq"), PredictError, "expected at least one known word"),
        (dict(text="   "), InspectError, "expected non-empty text"),
        (dict(index=0), InspectError, "a text model expected --text"),
        (
            dict(text=REVIEW, units=[0, 99]),
            InspectError,
            r"--units expected indices in 0\.\.7, "
            r"got \[99\]",
        ),
        (dict(text=REVIEW, units=[]), InspectError, "at least one unit"),
        (dict(text=REVIEW, mode="z"), ValueError, "expected mode in"),
    ],
)
def test_bad_text_input_writes_nothing(imdb_run, tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        inspect_run(imdb_run, tmp_path / "out", **kwargs)
    assert list(tmp_path.iterdir()) == []  # no output, no temporary folder left


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(text="good"), InspectError, "an image model expected --image FILE or --index N"),
        (dict(), InspectError, "exactly one of --image FILE or --index N"),
        (dict(index=10**6), InspectError, r"--index expected 0\.\."),
        (dict(image="wrong.npy"), PredictError, r"expected a 28x28 image, got shape \(20, 28\)"),
        (dict(image="missing.png"), PredictError, "expected an image file"),
    ],
)
def test_bad_image_input_writes_nothing(mnist_run, tmp_path, kwargs, error, match):
    np.save(tmp_path / "wrong.npy", np.zeros((20, 28), dtype=np.float32))
    if "image" in kwargs:
        kwargs = {"image": tmp_path / kwargs["image"]}
    with pytest.raises(error, match=match):
        inspect_run(mnist_run, tmp_path / "out", **kwargs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wrong.npy"]


def test_foreign_untrained_and_torch_backend_runs_are_refused(mnist_run, tmp_path):
    with pytest.raises(RunError, match="expected an rnnlab run directory"):
        inspect_run(tmp_path / "nothing", tmp_path / "o", index=0)
    (tmp_path / "foreign").mkdir()
    with pytest.raises(RunError, match="config.json"):
        inspect_run(tmp_path / "foreign", tmp_path / "o", index=0)
    untrained = tmp_path / "untrained"
    untrained.mkdir()
    (untrained / "config.json").write_text((mnist_run / "config.json").read_text())
    with pytest.raises(RunError, match="expected a trained run with checkpoints"):
        inspect_run(untrained, tmp_path / "o", index=0)
    assert not (tmp_path / "o").exists()


def test_a_torch_backend_model_records_the_gates_of_the_same_parameters():
    """Gates are a per-call request routed to the reference loop: a model.backend=torch model
    records them without any attribute of its layers changing."""
    torch.manual_seed(0)
    config = load_preset("mnist-sample", ["model.backend=torch", "model.hidden_sizes=[4]"])
    model = build_model(config).eval()
    reference = build_model(config.override(["model.backend=reference"])).eval()
    reference.load_state_dict(model.state_dict())
    x = torch.rand(1, 28, 28)
    gates = record_gates(model, (x,), 0, 0)
    for name, value in record_gates(reference, (x,), 0, 0).items():
        np.testing.assert_array_equal(gates[name], value)
    assert [layer.backend for layer in model.stack.layers] == ["torch"]


def test_out_folder_rules(imdb_run, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(InspectError, match="expected a writable location"):
        inspect_run(imdb_run, blocker / "sub", text=REVIEW)
    with pytest.raises(InspectError, match="--units expected"):  # no parent folders left behind
        inspect_run(imdb_run, tmp_path / "new" / "deeper" / "out", text=REVIEW, units=[99])
    assert not (tmp_path / "new").exists()
    with pytest.raises(InspectError, match="expected a folder, got a file"):
        inspect_run(imdb_run, blocker, text=REVIEW)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(InspectError, match="expected a new or empty folder"):
        inspect_run(imdb_run, other, text=REVIEW)
    assert [p.name for p in other.iterdir()] == ["notes.txt"]
    # an earlier inspect output is replaced whole, when asked to (force)
    first = inspect_run(imdb_run, tmp_path / "out", text=REVIEW)
    with pytest.raises(InspectError, match="got an earlier inspect output"):
        inspect_run(imdb_run, tmp_path / "out", text="Terrible.", units=[0])
    second = inspect_run(imdb_run, tmp_path / "out", text="Terrible.", units=[0], force=True)
    assert second.summary["units"] == [0] and first.summary["units"] != [0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "other", "out"]


def test_a_failure_while_rendering_leaves_nothing(imdb_run, tmp_path, monkeypatch):
    import rnnlab.inspect.classifier as api

    def broken(*args, **kwargs):
        raise RuntimeError("renderer broke")

    monkeypatch.setattr(api, "saturation_scatter", broken)
    with pytest.raises(RuntimeError, match="renderer broke"):
        inspect_run(imdb_run, tmp_path / "out", text=REVIEW)
    assert list(tmp_path.iterdir()) == []


def test_command_prints_files_and_errors_cleanly(imdb_run, tmp_path, capsys):
    assert main([str(imdb_run), "--text", REVIEW, "--out", str(tmp_path / "o"), "--top", "4"]) == 0
    out = capsys.readouterr().out
    assert "prediction" in out and str(tmp_path / "o" / "tokens.html") in out
    assert len(json.loads((tmp_path / "o" / "inspect.json").read_text())["units"]) == 4
    assert (
        main([str(imdb_run), "--text", REVIEW, "--units", "42", "--out", str(tmp_path / "p")]) == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("rnnlab inspect: error: --units expected indices in 0..7, got [42]")
    assert not (tmp_path / "p").exists()


def test_rnnlab_command_hands_inspect_to_this_package(mnist_run, tmp_path, capsys):
    from rnnlab.cli import main as rnnlab

    assert rnnlab(["inspect", str(mnist_run), "--index", "1", "--out", str(tmp_path / "o")]) == 0
    assert "prediction.png" in capsys.readouterr().out


def test_probabilities_are_nan_only_at_padding(gru_run):
    from rnnlab.inspect.inputs import prefix_probabilities

    config, model, _ = load_run(gru_run)
    example = text_example(config, _vocab(gru_run), "good bad good")
    probs = prefix_probabilities(model, config, example)  # (12, 2)
    assert np.isnan(probs[~example.real]).all() and not np.isnan(probs[example.real]).any()
    assert all(math.isclose(p.sum(), 1.0, rel_tol=1e-9) for p in probs[example.real])


def test_read_only_folder_is_refused(imdb_run, tmp_path):
    import os

    if os.geteuid() == 0:
        pytest.skip("permissions do not bind root")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(InspectError, match="no write permission"):
            inspect_run(imdb_run, locked / "out", text=REVIEW)
    finally:
        locked.chmod(0o700)


def test_bf16_model_gates_are_recorded_in_fp32_and_its_precision_restored():
    """bf16 lives in the compiled kernels and gates come from the reference loop, so a bf16
    model's gates are those of the same weights in float32; the model stays bf16 afterwards."""
    from rnnlab.nn.backends import _ext

    if _ext.load() is None:
        pytest.skip(f"compiled kernels unavailable: {_ext.unavailable_reason()}")
    torch.manual_seed(0)
    overrides = ["model.projection=16", "model.hidden_sizes=[16]"]
    bf16 = build_model(load_preset("mnist-sample", [*overrides, "model.precision=bf16"])).eval()
    fp32 = build_model(load_preset("mnist-sample", overrides)).eval()
    fp32.load_state_dict(bf16.state_dict())
    x = torch.rand(1, 28, 28)  # (B, T, I)
    gates = record_gates(bf16, (x,), 0, 0)
    expected = record_gates(fp32, (x,), 0, 0)
    assert sorted(gates) == ["c", "f", "g", "h", "i", "o"] and gates["c"].shape == (28, 16)
    for name, value in expected.items():
        np.testing.assert_array_equal(gates[name], value)
    layer = bf16.stack.layers[0]
    assert (layer.backend, layer.precision) == ("auto", "bf16")
