"""The ``rnnlab`` command: help, presets, errors, summary, predict output."""

import json

import pytest

from rnnlab.cli import PLUGIN_VERBS, main
from rnnlab.runs import train


@pytest.mark.parametrize("verb", ["train", "evaluate", "predict", "summary", "presets"])
def test_every_verb_has_help(verb, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([verb, "--help"])
    assert exit_.value.code == 0 and "usage: rnnlab" in capsys.readouterr().out


def test_presets_lists_them(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert "mnist-seed" in out and "imdb-seed" in out and "mnist-sample" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "nope"], "unknown preset 'nope'"),
        (["train", "mnist-sample", "--set", "train.epochz=1"], "unknown key"),
        (["train", "mnist-sample", "--set", "train.epochs=x"], "expected int, got 'x'"),
        (
            ["train", "mnist-sample", "--set", "model.cell=gru", "--set", "model.precision=bf16"],
            "model.precision='bf16' expected model.cell='lstm'",
        ),
        (["train"], "expected a PRESET"),
        (["evaluate", "/nonexistent/run"], "expected an rnnlab run directory"),
        (["train", "--resume", "/nonexistent/run"], "expected an rnnlab run directory"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_summary_counts_the_tutorials_parameters(capsys):
    assert main(["summary", "imdb-seed"]) == 0
    assert "Total params: 805,186" in capsys.readouterr().out


def test_plugin_verbs_are_handed_their_arguments(monkeypatch, capsys):
    import sys
    import types

    seen = {}
    fake = types.ModuleType("rnnlab.bench")
    fake.main = lambda argv: seen.setdefault("argv", argv) and 0
    monkeypatch.setitem(sys.modules, "rnnlab.bench", fake)
    assert "bench" in PLUGIN_VERBS
    assert main(["bench", "--workloads", "A"]) == 0
    assert seen["argv"] == ["--workloads", "A"]


def test_predict_json_and_bad_files(tmp_path, capsys):
    run = tmp_path / "run"
    train(
        "imdb-sample",
        run,
        overrides=[
            "model.embedding_dim=8",
            "model.hidden_sizes=[8]",
            "data.maxlen=40",
            "train.epochs=1",
        ],
    )
    capsys.readouterr()
    reviews = tmp_path / "reviews.txt"
    reviews.write_text("a great film\n\nterrible acting and a boring plot\n")
    assert main(["predict", str(run), "--file", str(reviews), "--json"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(lines) == 2 and {"label", "probabilities"} <= set(lines[0])
    assert lines[0]["label"] in (0, 1) and len(lines[0]["probabilities"]) == 2
    binary = tmp_path / "blob.bin"
    binary.write_bytes(b"\xff\xfe\x00\x01")
    assert main(["predict", str(run), "--file", str(binary)]) == 2
    assert "expected UTF-8 text" in capsys.readouterr().err
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    assert main(["predict", str(run), "--file", str(empty)]) == 2
    assert "expected at least one non-empty line" in capsys.readouterr().err


def test_train_with_bf16_precision_end_to_end(tmp_path, capsys):
    """``rnnlab train ... --set model.precision=bf16`` trains with finite losses, learns, and its
    checkpoint rebuilds a bf16 model that evaluates to the reported accuracy."""
    import math

    from rnnlab.nn.backends import _ext
    from rnnlab.predict import evaluate_run
    from rnnlab.runs import load_run

    if _ext.load() is None:
        pytest.skip(f"compiled kernels unavailable: {_ext.unavailable_reason()}")
    out = tmp_path / "bf16"
    tiny = ["model.projection=16", "model.hidden_sizes=[16]", "train.epochs=1"]
    tiny += ["train.batch_size=250", "run.log_every=10", "model.precision=bf16"]
    argv = ["train", "mnist-sample", "--out", str(out), "--no-progress", "--threads", "1"]
    assert main([*argv, *(x for o in tiny for x in ("--set", o))]) == 0
    printed = capsys.readouterr().out
    assert "Minibatch Loss=" in printed and "Testing Accuracy:" in printed
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [x["loss"] for x in metrics if x["kind"] == "step"]
    assert len(losses) == 4 and all(math.isfinite(loss) for loss in losses)
    assert losses[-1] < losses[0]
    report = json.loads((out / "report.json").read_text())
    assert report["test_accuracy"] > 0.3  # 10 classes: chance is 0.1
    assert json.loads((out / "config.json").read_text())["model"]["precision"] == "bf16"
    model = load_run(out)[1]
    assert [layer.precision for layer in model.stack.layers] == ["bf16"]
    assert evaluate_run(out)["accuracy"] == pytest.approx(report["test_accuracy"])
