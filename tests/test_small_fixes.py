"""Issue 25, the smaller items of its point 6, each by a test that failed on the old main: the
serve Host rule as the README states it, an honest language-model ONNX sidecar, the API's
``top_p`` and its ``top_k`` rule (the CLI's), the README's generate flags, tokens counted as
tokens, the ``<unk>`` warning, a repeated ``--set`` key, and a time-budgeted preset that trains
until its budget."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import pytest

from rnnlab.cli.main import build_parser
from serve_runs import LM_SETTINGS, make_run

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("runs") / "chars", "charlm-sample", LM_SETTINGS)


def test_serve_host_rule_is_what_the_readme_says():
    from rnnlab.serve.cli import allowed_hosts

    assert allowed_hosts("127.0.0.1", "127.0.0.1") == ["127.0.0.1", "localhost", "127.0.0.1"]
    assert allowed_hosts("0.0.0.0", "0.0.0.0") is None  # every Host header
    text = " ".join(README.read_text("utf-8").split())
    assert "answers only Host headers naming the loopback (`127.0.0.1`, `localhost`)" in text
    assert "on any other address (`--host 0.0.0.0`) it answers every Host header" in text


def test_language_model_sidecar_says_its_vocabulary_and_lists_its_inputs(lm_run, tmp_path):
    pytest.importorskip("onnx")
    from rnnlab.export import export_run, load_onnx

    result = export_run(lm_run, out=tmp_path / "lm.onnx")
    sidecar = json.loads(result.sidecar.read_text())
    assert "num_classes" not in sidecar
    assert (sidecar["vocab_size"], sidecar["level"]) == (31, "char")
    assert isinstance(sidecar["inputs"], list) and sidecar["inputs"][0]["name"] == "ids"
    assert isinstance(sidecar["opset"], int) and sidecar["step"] == 3
    props = load_onnx(result.path).metadata  # the file's metadata_props: strings
    assert json.loads(props["inputs"]) == sidecar["inputs"] and props["vocab_size"] == "31"


@pytest.fixture(scope="module")
def client(lm_run):
    from fastapi.testclient import TestClient

    from rnnlab.serve.app import create_app
    from rnnlab.serve.models import load_served_run

    return TestClient(create_app([load_served_run(lm_run, "chars")]))


def _tokens(client, body: dict) -> list[str]:
    with client.stream("POST", "/api/runs/chars/generate", json=body) as response:
        assert response.status_code == 200, response.read()
        text = "".join(response.iter_text())
    return [
        json.loads(block.split("\n")[1][len("data: ") :])["token"]
        for block in text.strip().split("\n\n")
        if block.startswith("event: token")
    ]


def test_api_generate_takes_top_p_and_refuses_top_k_0_as_the_cli_does(client):
    base = {"prompt": "the ", "max_tokens": 12, "temperature": 2.0}
    greedy = _tokens(client, {**base, "top_k": 1, "seed": 1})
    # a nucleus this small keeps only the likeliest token: greedy whatever the seed
    assert _tokens(client, {**base, "top_p": 1e-6, "seed": 2}) == greedy
    for bad, field in (({"top_k": 0}, "top_k"), ({"top_p": 0}, "top_p"), ({"top_p": 1.5}, "top_p")):
        response = client.post("/api/runs/chars/generate", json={**base, **bad})
        assert response.status_code == 422
        assert [e["loc"][-1] for e in response.json()["detail"]] == [field]
    assert len(_tokens(client, {**base, "seed": 3})) == 12  # absent: the whole vocabulary


def test_the_readme_names_only_flags_generate_has():
    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    flags = {o for a in sub.choices["generate"]._actions for o in a.option_strings}
    text = README.read_text("utf-8")
    bullet = re.search(r"^- `generate` prints.*?(?=^- )", text, re.S | re.M).group(0)
    # a flag of another verb is named with its verb (`score --file`)
    named = re.findall(r"`([a-z]+ )?(--[a-z-]+)`", bullet)
    assert named and all(verb or flag in flags for verb, flag in named)
    for line in re.findall(r"^rnnlab generate .*$", text, re.M):
        used = set(re.findall(r"(?<![\w-])--[a-z-]+", line.split("#")[0]))
        assert used <= flags, line


@pytest.fixture(scope="module")
def budget_run(tmp_path_factory):
    """A tiny character model on a 6 kB text with 5 symbols (so most characters are <unk>),
    epochs 0 and a 2-second budget: many epochs of its small corpus."""
    from rnnlab.cli import main
    from tiny import cli_sets

    root = tmp_path_factory.mktemp("budget")
    text = root / "book.txt"
    text.write_text("The cat sat on the mat, and the dog ran off.\n" * 140)
    settings = [
        f"data.path={text}",
        "data.max_vocab=5",
        "data.bptt=16",
        "data.eval_tokens=0",
        "model.embedding_dim=4",
        "model.hidden_sizes=[8]",
        "train.batch_size=4",
        "train.eval_batch_size=2",
        "train.epochs=0",
        "train.time_limit=2",
        "run.log_every=0",
        "run.checkpoint_every=0",
    ]
    argv = ["train", "charlm-sample", "--out", str(root / "run"), "--threads", "1"]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        assert main([*argv, "--no-progress", *cli_sets(*settings)]) == 0
    return root / "run", out.getvalue(), err.getvalue()


def test_epochs_0_trains_until_the_time_limit_and_warns_of_unknown_tokens(budget_run):
    run, out, err = budget_run
    report = json.loads((run / "report.json").read_text())
    assert report["stopped"] == "time_limit" and report["epochs"] > 1, report
    assert "Epoch 2 - " in out  # no "/0": the number of epochs is open
    assert "rnnlab train: warning: " in err and "are <unk> (expected at most 5%)" in err
    (warning,) = json.loads((run / "corpus.json").read_text())["warnings"]
    assert "raise data.max_vocab" in warning


def test_evaluate_counts_a_language_models_tokens(budget_run, capsys):
    from rnnlab.cli import main
    from rnnlab.predict import evaluate_run

    run, _, _ = budget_run
    result = evaluate_run(run)
    assert result["unit"] == "tokens" and result["tokens"] > 0 and "examples" not in result
    assert main(["evaluate", str(run)]) == 0
    assert f"test ({result['tokens']} tokens, checkpoint" in capsys.readouterr().out


def test_epochs_0_needs_a_time_limit_and_charlm_uses_it():
    from rnnlab.config import ConfigError, load_preset

    with pytest.raises(ConfigError, match=r"train.epochs: expected an int >= 1, or 0 \(until"):
        load_preset("mnist-sample", ["train.epochs=0"])
    for name in ("charlm", "wordlm"):  # described as 30 minutes of training, whatever the corpus
        train = load_preset(name).train
        assert (train.epochs, train.time_limit) == (0, 1800.0)


def test_a_repeated_set_key_is_refused_naming_it(capsys):
    from rnnlab.cli import main
    from rnnlab.config import ConfigError, load_preset

    with pytest.raises(ConfigError, match="override 'train.lr': expected each key once, got it tw"):
        load_preset("mnist-sample", ["train.lr=0.1", "train.epochs=1", "train.lr=0.2"])
    assert main(["summary", "mnist-sample", "--set", "train.lr=1", "--set", "train.lr=2"]) == 2
    assert "'train.lr': expected each key once" in capsys.readouterr().err


def test_scoring_reports_progress_and_can_keep_no_per_token_lists(lm_run):
    from rnnlab.generation import score_run

    text = "the cat sat on the mat. " * 200  # 4,800 characters: several pieces of 1,024
    calls = []
    (full,) = score_run(lm_run, [text])
    (short,) = score_run(lm_run, [text], per_token=False, progress=lambda d, t: calls.append(d))
    assert "tokens" not in short and "log_probs" not in short
    assert short["bpc"] == pytest.approx(full["bpc"]) and short["count"] == len(text)
    assert calls == sorted(calls) and calls[-1] == len(text) and len(calls) >= 4


def test_evaluation_reports_progress_per_batch(budget_run):
    from rnnlab.predict import evaluate_run

    run, _, _ = budget_run
    calls = []
    evaluate_run(run, progress=lambda done, total: calls.append((done, total)))
    total = calls[0][1]
    assert calls == [(k, total) for k in range(1, total + 1)]
