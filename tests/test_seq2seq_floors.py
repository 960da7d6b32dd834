"""A seq2seq run through the upper floors: ``rnnlab translate``, ``rnnlab serve``'s API,
``rnnlab inspect`` (the attention matrix and the decoder's gates) and ``rnnlab export`` (ONNX
greedy decoding equal to rnnlab's)."""

from __future__ import annotations

import gzip
import json
import shutil

import numpy as np
import pytest
from fastapi.testclient import TestClient

from rnnlab.cli.main import main as rnnlab
from rnnlab.export import export_run
from rnnlab.export.seq2seq import greedy as onnx_greedy
from rnnlab.inspect.seq2seq import inspect_seq2seq
from rnnlab.runs import load_run
from rnnlab.serve.app import create_app
from rnnlab.serve.models import load_served_run
from rnnlab.tasks import get_task
from seq2seq_helpers import train_tiny

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return train_tiny(tmp_path_factory.mktemp("s2s"))


@pytest.fixture(scope="module")
def gru_run(tmp_path_factory):
    """GRU encoder and decoder, additive attention, input feeding, two decoder layers."""
    return train_tiny(
        tmp_path_factory.mktemp("s2s-gru"),
        "model.cell=gru",
        "model.decoder_cell=gru",
        "model.attention=additive",
        "model.decoder_layers=2",
        "train.epochs=1",
    )


def test_translate_command(tiny_run, tmp_path, capsys):
    assert rnnlab(["translate", str(tiny_run), "--text", "abcd", "--text", "hhg"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in lines] == ["abcd", "hhg"]
    assert (
        rnnlab(["translate", str(tiny_run), "--text", "abcd", "--beam", "4", "--n-best", "3"]) == 0
    )
    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert [r[1] for r in rows] == ["1", "2", "3"]
    assert [float(r[3]) for r in rows] == sorted((float(r[3]) for r in rows), reverse=True)
    sources = tmp_path / "sources.txt.gz"
    sources.write_bytes(gzip.compress(b"abc\n\nbad\nzzq\n"))
    assert rnnlab(["translate", str(tiny_run), "--file", str(sources), "--json"]) == 0
    out = capsys.readouterr()
    results = [json.loads(line) for line in out.out.splitlines()]
    assert [r["source"] for r in results] == ["abc", "bad", "zzq"]
    assert out.err.count("read as <unk>") == 1 and "<unk>: 'q' 'z'" in out.err


def test_translate_command_refuses_bad_input(tiny_run, tmp_path, capsys):
    long = tmp_path / "long.txt"
    long.write_text("ab\n" + "a" * 300 + "\n", "utf-8")
    assert rnnlab(["translate", str(tiny_run), "--file", str(long)]) == 2
    err = capsys.readouterr().err
    assert f"{long}, line 2: expected at most 200 tokens (data.max_length), got 300" in err
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"ab\n\xff\xfe\x00\n")
    assert rnnlab(["translate", str(tiny_run), "--file", str(binary)]) == 2
    assert "expected UTF-8 text, got byte 0xff" in capsys.readouterr().err
    with pytest.raises(SystemExit) as refused:  # argparse refuses it, with its usage line
        rnnlab(["translate", str(tiny_run), "--text", "ab", "--beam", "65"])
    assert refused.value.code == 2
    assert "expected a beam width in 1..64, got '65'" in capsys.readouterr().err


def test_translate_refuses_a_run_of_another_kind(tiny_run, tmp_path, capsys):
    from serve_runs import TEXT_SETTINGS, make_run

    text_run = make_run(tmp_path / "reviews", "imdb-sample", TEXT_SETTINGS)
    assert rnnlab(["translate", str(text_run), "--text", "a film"]) == 2
    err = capsys.readouterr().err
    assert "translate expected a run whose kind offers it, got a 'text' run" in err


def test_serve_translates_with_n_best_and_attention(tiny_run, gru_run):
    runs = [load_served_run(tiny_run, "rev"), load_served_run(gru_run, "gru")]
    client = TestClient(create_app(runs))
    listed = {r["name"]: r for r in client.get("/api/runs").json()["runs"]}
    assert listed["rev"]["page"] == "translate" and listed["rev"]["attention"] == "general"
    assert client.get("/translate").status_code == 200
    r = client.post("/api/runs/rev/translate", json={"text": "abcd", "beam": 4, "n_best": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["source"] == list("abcd") and len(body["outputs"]) == 3
    best = body["outputs"][0]
    att = np.asarray(best["attention"])
    assert att.shape == (len(best["tokens"]) + best["finished"], 4)
    np.testing.assert_allclose(att.sum(1), 1, atol=1e-3)
    r = client.post("/api/runs/gru/translate", json={"text": "ab", "beam": 2, "n_best": 3})
    assert r.status_code == 422 and "n_best" in r.text
    r = client.post("/api/runs/rev/translate", json={"text": "a" * 300})
    assert r.status_code == 422 and "expected at most 200 tokens" in r.text


def test_inspect_draws_attention_and_decoder_gates(tiny_run, tmp_path):
    s = inspect_seq2seq(tiny_run, tmp_path / "out", text="abcde", top=4)
    assert sorted(s["files"]) == ["attention.html", "attention.png", "inspect.json"]
    att = np.asarray(s["attention"])
    assert att.shape == (len(s["output"]), 5)
    np.testing.assert_allclose(att.sum(1), 1, atol=1e-3)
    assert (tmp_path / "out" / "attention.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (tmp_path / "out" / "attention.html").read_text()
    assert page.count('class="att"') == att.size and "mean f" in page
    assert len(s["units"]) == 4


@pytest.mark.parametrize("which", ["tiny_run", "gru_run"])
def test_onnx_greedy_decoding_equals_rnnlabs(which, request, tmp_path):
    run = request.getfixturevalue(which)
    result = export_run(run, out=tmp_path / "model.onnx")
    config, model, _ = load_run(run)
    task = get_task(config)
    task.bind_run(run)
    for source in ("abcd", "hg", "aabbccdd", "e"):
        src, lengths, _ = task.encode_sources([source])
        (hyp,) = model.translate(src, lengths, beam=1, max_length=20)[0]
        tokens, scores = onnx_greedy(result.path, src[0].tolist(), max_length=20)
        assert tokens == list(hyp.tokens), source
        assert sum(scores) == pytest.approx(hyp.score, abs=1e-4)
    assert result.metadata["preset"] == "pairs"


def test_translate_reads_the_int8_model(tiny_run, tmp_path, capsys):
    run = shutil.copytree(tiny_run, tmp_path / "run")
    assert rnnlab(["quantize", str(run), "--no-measure"]) == 0
    capsys.readouterr()
    found = {}
    for tag in ("best", "int8"):
        argv = ["translate", str(run), "--text", "abcd", "--json", "--checkpoint", tag]
        assert rnnlab(argv) == 0
        found[tag] = json.loads(capsys.readouterr().out)
    assert found["int8"]["source"] == "abcd"
    assert found["int8"]["outputs"][0]["log_prob"] == pytest.approx(
        found["best"]["outputs"][0]["log_prob"], abs=0.5
    )
