"""ONNX export: onnxruntime must give rnnlab's logits (within 1e-5) for every classifier variant,
at batch sizes and lengths other than any seen at export, and the same classes on real test
examples of a trained run; bad runs, paths and inputs are refused with clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rnnlab.cli import main
from rnnlab.config import load_preset
from rnnlab.tasks import build_model
from tiny import SMALL_MNIST_CLI, cli_sets, with_sets

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from rnnlab.export import ExportError, OnnxInputError, export_model, load_onnx  # noqa: E402

# (B, T) pairs: single rows, single steps and sizes no export saw
SHAPES = [(1, 1), (3, 7), (8, 13), (2, 31)]


def _perturbed(config) -> torch.nn.Module:
    """The config's model with every parameter moved off its initialisation (zero biases
    would hide a misplaced bias)."""
    model = build_model(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model


def _text_config(cell: str, bidirectional: bool, pooling: str, mask: bool, padding: str):
    return load_preset(
        "imdb-seed",
        [
            f"model.cell={cell}",
            f"model.bidirectional={str(bidirectional).lower()}",
            f"model.pooling={pooling}",
            f"model.mask={str(mask).lower()}",
            f"data.padding={padding}",
            "model.hidden_sizes=[6,5]",
            "data.num_words=50",
        ],
    )


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("pooling", ["last", "mean", "max", "meanmax"])
@pytest.mark.parametrize(
    ("bidirectional", "mask", "padding"),
    [(True, True, "pre"), (False, True, "post"), (True, False, "pre"), (True, True, "post")],
)
def test_text_models_match_onnxruntime(tmp_path, cell, pooling, bidirectional, mask, padding):
    torch.manual_seed(0)
    model = _perturbed(_text_config(cell, bidirectional, pooling, mask, padding))
    runner = load_onnx(export_model(model, tmp_path / "m.onnx").path)
    g = torch.Generator().manual_seed(1)
    for B, T in SHAPES:
        ids = torch.randint(0, 50, (B, T), generator=g)
        lengths = torch.randint(1, T + 1, (B,), generator=g)
        lengths[0] = T  # a full row beside the padded ones
        with torch.no_grad():
            want = model(ids, lengths).numpy()
        got = runner(ids.numpy(), lengths.numpy())
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5, err_msg=f"B={B} T={T}")


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize(("bidirectional", "pooling"), [(False, "last"), (True, "meanmax")])
@pytest.mark.parametrize("projection", [0, 7])
def test_image_models_match_onnxruntime(tmp_path, cell, bidirectional, pooling, projection):
    torch.manual_seed(0)
    config = load_preset(
        "mnist-seed",
        [
            f"model.cell={cell}",
            f"model.bidirectional={str(bidirectional).lower()}",
            f"model.pooling={pooling}",
            f"model.projection={projection}",
            "model.hidden_sizes=[6,5]",
        ],
    )
    model = _perturbed(config)
    runner = load_onnx(export_model(model, tmp_path / "m.onnx").path)
    for B, T in [*SHAPES, (5, 28)]:
        x = torch.rand(B, T, 28)
        with torch.no_grad():
            want = model(x).numpy()
        np.testing.assert_allclose(runner(x.numpy()), want, rtol=0, atol=1e-5)


def _train(tmp_path: Path, preset: str, *argv: str) -> Path:
    out = tmp_path / preset
    assert main(["train", preset, "--out", str(out), *argv]) == 0
    return out


def _agree(run: Path, runner, inputs: tuple[torch.Tensor, ...]) -> None:
    """rnnlab's and onnxruntime's logits on real test examples: within 1e-5, same classes."""
    from rnnlab.runs import load_run

    _, model, _ = load_run(run)
    with torch.no_grad():
        want = model(*inputs).numpy()
    got = runner(*(t.numpy() for t in inputs))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    assert (got.argmax(1) == want.argmax(1)).all()


def test_trained_image_run_exports_and_agrees_on_real_test_images(tmp_path, capsys):
    from rnnlab.tasks import get_task

    run = _train(tmp_path, "mnist-sample", *with_sets(SMALL_MNIST_CLI, "train.epochs=1"))
    assert main(["export", str(run), "--format", "onnx"]) == 0
    assert f"wrote {run / 'model.onnx'}" in capsys.readouterr().out
    runner = load_onnx(run / "model.onnx")
    assert runner.metadata["preset"] == "mnist-sample"
    assert runner.metadata["opset"] == "18" and runner.metadata["torch"] == torch.__version__
    sidecar = json.loads((run / "model.onnx.json").read_text())
    assert {k: v if isinstance(v, str) else json.dumps(v) for k, v in sidecar.items()} == (
        runner.metadata
    )
    assert sidecar["num_classes"] == 10 and sidecar["opset"] == 18
    assert [i["name"] for i in sidecar["inputs"]] == ["x"]
    test = get_task(load_preset("mnist-sample")).load().test
    _agree(run, runner, (test.inputs[0][:500],))


def test_trained_masked_text_run_agrees_on_real_test_reviews(tmp_path):
    from rnnlab.tasks import get_task

    sets = cli_sets(
        "model.embedding_dim=8",
        "model.hidden_sizes=[8]",
        "model.bidirectional=true",
        "model.mask=true",
        "model.pooling=meanmax",
        "data.maxlen=60",
        "train.epochs=1",
        "train.batch_size=250",
        "data.num_words=2000",
        "run.log_every=0",
    )
    run = _train(tmp_path, "imdb-sample", "--threads", "1", "--no-progress", *sets)
    out = tmp_path / "text.onnx"
    assert main(["export", str(run), "--out", str(out)]) == 0
    config = load_preset("imdb-sample", [s for s in sets if s != "--set"])
    ids, lengths = get_task(config).load().test.inputs
    _agree(run, load_onnx(out), (ids[:500], lengths[:500]))


def test_bad_runs_and_paths_are_refused(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nope")]) == 2
    assert "expected an rnnlab run directory" in capsys.readouterr().err
    run = _train(tmp_path, "mnist-sample", *with_sets(SMALL_MNIST_CLI, "train.epochs=1"))
    for name in ("best.json", "last.json"):
        (run / "checkpoints" / name).rename(run / name)
    assert main(["export", str(run)]) == 2
    assert "expected a trained run with checkpoints/last.json" in capsys.readouterr().err
    (run / "last.json").rename(run / "checkpoints" / "last.json")
    foreign = json.loads((run / "config.json").read_text())
    foreign["model"]["hidden_sizes"] = [7]  # the checkpoint's own configuration wins
    (run / "config.json").write_text(json.dumps(foreign))
    assert main(["export", str(run), "--checkpoint", "last"]) == 0
    assert "rnnlab export: warning: " in capsys.readouterr().err
    meta = json.loads((run / "checkpoints" / "last.json").read_text())
    meta["config"]["model"]["hidden_sizes"] = [7]  # covered by the checkpoint's sha256
    (run / "checkpoints" / "last.json").write_text(json.dumps(meta))
    (run / "model.onnx").unlink()
    assert main(["export", str(run), "--checkpoint", "last"]) == 2
    assert "expected metadata with sha256" in capsys.readouterr().err
    assert not (run / "model.onnx").exists()


def test_an_unwritable_output_leaves_nothing_behind(tmp_path, capsys):
    model = build_model(load_preset("mnist-seed", ["model.hidden_sizes=[4]"]))
    with pytest.raises(ExportError, match="expected an existing directory"):
        export_model(model, tmp_path / "missing" / "m.onnx")
    with pytest.raises(ExportError, match="expected an output file, got the directory"):
        export_model(model, tmp_path)
    with pytest.raises(ExportError, match="cannot write into /proc"):
        export_model(model, "/proc/m.onnx")
    with pytest.raises(ExportError, match=r"expected an opset in 18\.\.\d+ .*, got 13"):
        export_model(model, tmp_path / "m.onnx", opset=13)
    assert list(tmp_path.iterdir()) == []


def test_onnx_runner_names_wrong_inputs(tmp_path):
    model = build_model(_text_config("gru", False, "last", True, "pre"))
    text = load_onnx(export_model(model, tmp_path / "t.onnx").path)
    ids, lengths = np.zeros((2, 5), np.int64), np.array([5, 3])
    with pytest.raises(OnnxInputError, match=r"input 'ids' expected dtype int64, got float32"):
        text(ids.astype(np.float32), lengths)
    with pytest.raises(OnnxInputError, match=r"input 'ids' expected shape \('B', 'T'\) \(rank 2\)"):
        text(ids[0], lengths)
    with pytest.raises(OnnxInputError, match=r"expected 2 inputs \(ids, lengths\), got 1"):
        text(ids)
    with pytest.raises(OnnxInputError, match=r"expected lengths in 1\.\.5, got 0 to 3"):
        text(ids, np.array([0, 3]))
    image = load_onnx(
        export_model(build_model(load_preset("mnist-seed")), tmp_path / "i.onnx").path
    )
    with pytest.raises(OnnxInputError, match=r"expected shape \('B', 'T', 28\), got \(2, 5, 27\)"):
        image(np.zeros((2, 5, 27), np.float32))
    with pytest.raises(OnnxInputError, match="expected an exported .onnx file, got none"):
        load_onnx(tmp_path / "absent.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(OnnxInputError, match="expected an ONNX model"):
        load_onnx(tmp_path / "junk.onnx")
