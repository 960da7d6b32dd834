"""The ``rnnlab`` command: help, presets, errors, summary, predict output."""

import json

import pytest

from rnnlab.cli import PLUGIN_VERBS, main
from rnnlab.run import train


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
