"""The seq2seq task: training a run on a pairs file, its figures, translating, bad input."""

from __future__ import annotations

import json
import re

import pytest
import torch

from rnnlab.config import ConfigError, load_preset
from rnnlab.data import DataError
from rnnlab.predict import evaluate_run
from rnnlab.runs import load_run, train
from rnnlab.tasks import PredictError, get_task
from rnnlab.tasks.seq2seq_metrics import closest, edit_distance, sequence_sums
from seq2seq_helpers import TINY, reversal_pairs, tiny, train_tiny, write_pairs


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A pairs run (word -> reversed word, characters) trained for a few seconds. Ten epochs:
    after six, the test token error rate ranged 0.26-0.62 over four seeds (dropout masks
    alone moved it), after ten 0.12-0.32, so the figure checked below is learning, not luck."""
    return train_tiny(tmp_path_factory.mktemp("s2s"), "train.epochs=10")


def test_edit_distance_and_the_closest_reference():
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance([], [1, 2]) == 2
    assert closest([1, 2, 3], [[1, 2], [1, 2, 3]]) == (0, 3)
    sums = sequence_sums([[1, 2], [3]], [[[9, 9, 9], [1, 2]], [[4, 5]]])
    assert sums == {"edits": 2.0, "ref_tokens": 4.0, "wrong": 1.0, "sequences": 2.0}


def test_a_run_keeps_its_vocabularies_and_reports_decoded_figures(tiny_run):
    report = json.loads((tiny_run / "report.json").read_text())
    vocab = json.loads((tiny_run / "vocab.json").read_text())
    assert vocab["source"]["tokens"][:4] == ["<pad>", "<unk>", "<s>", "</s>"]
    assert set(vocab["source"]["tokens"][4:]) == set("abcdefgh")
    assert report["selection"] == "val_token_error_rate (min)"
    assert report["test_token_error_rate"] < 0.5
    assert 0 <= report["test_sequence_error_rate"] <= 1
    last = json.loads((tiny_run / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"val_token_error_rate", "val_sequence_error_rate", "token_accuracy"} <= set(last)
    figures = evaluate_run(tiny_run, split="test")
    assert figures["token_error_rate"] == pytest.approx(report["test_token_error_rate"])


def test_translate_greedy_and_n_best(tiny_run):
    config, model, _ = load_run(tiny_run)
    task = get_task(config)
    task.bind_run(tiny_run)
    out = task.translate(model, ["abcd", "hgf"], beam=4, n_best=3, attention=True)
    assert [len(o["outputs"]) for o in out] == [3, 3]
    best = out[0]["outputs"]
    assert [o["ranking"] for o in best] == sorted((o["ranking"] for o in best), reverse=True)
    assert len(best[0]["attention"][0]) == 4
    assert sum(best[0]["attention"][0]) == pytest.approx(1.0, abs=1e-5)
    greedy = task.translate(model, ["abcd"])[0]["outputs"][0]
    assert greedy["text"] == "".join(greedy["tokens"])
    unknown = task.translate(model, ["abzzc"])[0]
    assert unknown["unknown"] == ["z"]


@pytest.mark.parametrize(
    ("sources", "options", "message"),
    [
        ([""], {}, "source 1: expected non-empty text, got ''"),
        (["a\x00b"], {}, "source 1: expected text, got binary data"),
        (["a" * 201], {}, "source 1: expected at most 200 tokens (data.max_length), got 201"),
        (["ab"], {"beam": 0}, "translate: expected beam an int in 1..64, got 0"),
        (["ab"], {"beam": 2, "n_best": 3}, "translate: expected n_best an int in 1..beam=2, got 3"),
        ([], {}, "translate expected at least one source, got none"),
    ],
)
def test_translate_refuses_bad_input(tiny_run, sources, options, message):
    config, model, _ = load_run(tiny_run)
    task = get_task(config)
    task.bind_run(tiny_run)
    with pytest.raises(PredictError, match=re.escape(message)):
        task.translate(model, sources, **options)


def test_a_bad_pairs_file_leaves_no_run_directory(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("abc\tcba\nno tab here\n", "utf-8")
    run = tmp_path / "run"
    with pytest.raises(DataError, match="line 2: expected source<TAB>target"):
        train("pairs", out=run, overrides=[f"data.path={bad}", *TINY])
    assert not run.exists()


def test_seq2seq_settings_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="data.path: expected a pairs file"):
        get_task(load_preset("pairs"))
    with pytest.raises(ConfigError, match="equal even sizes"):
        get_task(load_preset("g2p", ["model.hidden_sizes=[33]"]))
    with pytest.raises(ConfigError, match="data.dataset: expected 'cmudict' or 'pairs'"):
        get_task(load_preset("g2p", ["data.dataset=imdb"]))


def test_word_level_pairs_report_bleu_and_chrf(tmp_path):
    pairs = [(f"{a} {b}", f"{b} {a}") for a, b in reversal_pairs(200, seed=1)]
    path = write_pairs(tmp_path / "words.tsv", pairs)
    report = train(
        "pairs",
        out=tmp_path / "run",
        overrides=tiny(
            f"data.path={path}",
            "data.source_tokens=word",
            "data.target_tokens=word",
            "train.epochs=1",
        ),
    )
    test = report.to_json()
    assert 0 <= test["test_bleu"] <= 100 and 0 <= test["test_chrf"] <= 100


def test_the_sample_preset_trains_on_the_shipped_dictionary(tmp_path):
    report = train(
        "g2p-sample",
        out=tmp_path / "run",
        overrides=[
            "train.time_limit=0",
            "train.epochs=3",
            "model.hidden_sizes=[32]",
            "model.embedding_dim=8",
            "train.batch_size=256",
            "run.log_every=0",
        ],
    )
    report = report.to_json()
    assert report["train_examples"] > 8000
    assert report["test_token_accuracy"] > 0.3  # the commonest phoneme (AH) is about 0.1
    assert report["test_token_error_rate"] >= 0 and torch.isfinite(
        torch.tensor(report["test_loss"])
    )


def test_summary_runs_the_model_on_all_its_inputs(capsys):
    from rnnlab.cli.main import main

    assert main(["summary", "g2p-sample"]) == 0
    table = capsys.readouterr().out
    assert "encoder (LSTM)" in table and "Total params: 205,739" in table
