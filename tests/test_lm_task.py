"""The language-model task end to end through the command line: train (sample presets, a text
file), generate, score, evaluate; kill -9 mid-epoch and resume; time limit; bad inputs."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rnnlab.config import ConfigError, load_preset
from rnnlab.tasks import LanguageModelTask, get_task
from rnnlab.train import Split
from run_helpers import wait_for_step
from tiny import cli_sets, with_sets

SRC = Path(__file__).resolve().parents[1] / "src"
TIMINGS = ("seconds", "ms_per_step", "val_seconds", "tokens_per_second")
TINY = cli_sets(
    "model.embedding_dim=16",
    "model.hidden_sizes=[32]",
    "data.bptt=16",
    "train.batch_size=8",
    "train.eval_batch_size=4",
    "data.eval_tokens=4000",
    "run.log_every=5",
)


def _rnnlab(*args: str, wait: bool = True, timeout: float = 300):
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    command = [sys.executable, "-m", "rnnlab", *args]
    if wait:
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _corpus(tmp_path: Path, lines: int = 600) -> Path:
    """A small English-like text file: a few sentences, shuffled with a fixed seed."""
    words = [
        "the",
        "cat",
        "sat",
        "on",
        "a",
        "mat",
        "and",
        "the",
        "dog",
        "ran",
        "to",
        "the",
        "park",
        "(",
        "quietly",
        ")",
        "while",
        '"birds"',
        "sang",
    ]
    g = torch.Generator().manual_seed(0)
    text = []
    for _ in range(lines):
        n = int(torch.randint(4, 12, (), generator=g))
        idx = torch.randint(0, len(words), (n,), generator=g).tolist()
        text.append(" ".join(words[i] for i in idx) + ".")
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(text) + "\n", encoding="utf-8")
    return path


def _metrics(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if k not in TIMINGS} for x in lines]


@pytest.mark.parametrize(
    ("preset", "figure"), [("charlm-sample", "bpc"), ("wordlm-sample", "perplexity")]
)
def test_sample_presets_train_generate_score_evaluate(tmp_path, preset, figure):
    run = tmp_path / "run"
    # epochs enough that the 3 s limit, not the epoch count, ends the run on any host
    limits = ("train.time_limit=3", "train.epochs=10000")
    sets = cli_sets(*limits, "model.embedding_dim=16", "model.hidden_sizes=[16]")
    done = _rnnlab("train", preset, "--out", str(run), "--threads", "1", "--no-progress", *sets)
    assert done.returncode == 0, done.stderr
    report = json.loads((run / "report.json").read_text())
    assert math.isfinite(report[f"test_{figure}"]) and report["stopped"] == "time_limit"
    short = {"bpc": "bpc", "perplexity": "ppl"}[figure]  # the epoch line's abbreviation
    assert f"Test {figure}:" in done.stdout and f"val_{short}: " in done.stdout
    assert report["throughput_unit"] == "tokens" and " tokens/s). Run saved in " in done.stdout
    epoch = [r for r in _metrics(run) if r["kind"] == "epoch"][-1]
    assert epoch["stopped"] == "time_limit" and f"val_{figure}" in epoch
    vocab = json.loads((run / "vocab.json").read_text())
    assert vocab["format"] == "rnnlab.vocabulary" and vocab["level"] in ("char", "word")

    gen = _rnnlab("generate", str(run), "--prompt", "This movie", "--length", "20", "--seed", "3")
    assert gen.returncode == 0, gen.stderr
    again = _rnnlab("generate", str(run), "--prompt", "This movie", "--length", "20", "--seed", "3")
    assert gen.stdout == again.stdout and gen.stdout.startswith("This movie")
    assert len(gen.stdout) > len("This movie") + 10

    score = _rnnlab("score", str(run), "--text", "This movie was great.", "--json")
    assert score.returncode == 0, score.stderr
    result = json.loads(score.stdout)
    mean = -sum(result["log_probs"]) / len(result["log_probs"])
    assert result["loss"] == pytest.approx(mean)
    expected = mean / math.log(2) if figure == "bpc" else math.exp(mean)
    assert result[figure] == pytest.approx(expected)

    ev = _rnnlab("evaluate", str(run), "--json")
    assert ev.returncode == 0, ev.stderr
    assert json.loads(ev.stdout)[figure] == pytest.approx(report[f"test_{figure}"], rel=1e-6)


def test_killed_lm_run_resumes_to_identical_metrics(tmp_path):
    """The carry (the LSTM state after the last window) is in the checkpoint: without it the
    resumed run would start its window from zeros and its losses would differ."""
    corpus = _corpus(tmp_path, lines=1500)
    args = [
        "charlm-sample",
        "--threads",
        "1",
        "--no-progress",
        *with_sets(
            TINY,
            f"data.path={corpus}",
            "model.hidden_sizes=[96]",
            "model.dropout=0.3",
            "train.time_limit=0",
            "train.epochs=2",
            "run.checkpoint_every=7",
            "run.log_every=1",
        ),
    ]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    done = _rnnlab("train", *args[:1], "--out", str(whole), *args[1:])
    assert done.returncode == 0, done.stderr
    per_epoch = json.loads((whole / "checkpoints" / "last.json").read_text())["state"]["step"] // 2
    assert per_epoch > 40

    proc = _rnnlab("train", *args[:1], "--out", str(killed), *args[1:], wait=False)
    wait_for_step(killed, per_epoch + 20, proc)
    proc.kill()  # SIGKILL: no handler runs
    assert proc.wait() == -9
    assert not (killed / "report.json").exists()
    state = json.loads((killed / "checkpoints" / "last.json").read_text())["state"]
    assert state["epoch"] == 1 and 0 < state["batch"] < per_epoch  # mid-epoch, carry saved

    resumed = _rnnlab("train", "--resume", str(killed), "--threads", "1", "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert _metrics(killed) == _metrics(whole)
    a, b = (json.loads((r / "report.json").read_text()) for r in (whole, killed))
    assert a["test_bpc"] == b["test_bpc"]


def test_stream_batches_shard_rows_per_rank():
    """Each rank reads whole contiguous rows; together they are the one-process batch."""
    config = load_preset("charlm-sample", ["data.bptt=5", "train.batch_size=4"])
    task = get_task(config)
    assert isinstance(task, LanguageModelTask)
    stream = torch.arange(103)
    split = Split((stream,), stream)
    one = list(task.batches(split, training=True).epoch(0))
    ranks = [list(task.batches(split, True, rank=r, world_size=2).epoch(0)) for r in range(2)]
    assert len(one) == len(ranks[0]) == 5  # rows of 25 ids: 24 steps in windows of 5
    for k, ((x,), y) in enumerate(one):
        assert torch.equal(x, torch.cat([ranks[0][k][0][0], ranks[1][k][0][0]]))
        assert torch.equal(y, x + 1)  # targets are the next token of the same row
    assert one[1][0][0][0, 0] == one[0][0][0][0, -1] + 1  # row 0 continues across windows


def test_lm_config_errors():
    with pytest.raises(ConfigError, match="expected 'holdout'"):
        get_task(load_preset("charlm-sample", ["data.validation=test"]))
    with pytest.raises(ConfigError, match="tie_weights: expected model.embedding_dim"):
        get_task(load_preset("wordlm-sample", ["model.embedding_dim=64"]))
    with pytest.raises(ConfigError, match="expected equal sizes"):
        get_task(load_preset("charlm-sample", ["model.hidden_sizes=[32, 16]"]))
    with pytest.raises(ConfigError, match="data.bptt: expected a positive int, got 0"):
        load_preset("charlm-sample", ["data.bptt=0"])
    with pytest.raises(ConfigError, match="train.time_limit: expected >= 0"):
        load_preset("charlm-sample", ["train.time_limit=-1"])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("lm")
    run = tmp / "run"
    sets = cli_sets(f"data.path={_corpus(tmp)}", "train.time_limit=0", "train.epochs=1")
    done = _rnnlab(
        "train", "charlm-sample", "--out", str(run), "--threads", "1", "--no-progress", *TINY, *sets
    )
    assert done.returncode == 0, done.stderr
    return run


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--temperature", "0"], "--temperature: expected a number > 0 (finite), got '0'"),
        (["--top-p", "1.5"], "--top-p: expected a probability in (0, 1] (finite), got '1.5'"),
        (["--top-p", "0"], "--top-p: expected a probability in (0, 1] (finite), got '0'"),
        (["--length", "100001"], "--length: expected a token count in 1..100000, got '100001'"),
        (["--top-k", "0"], "--top-k: expected an int >= 1, got '0'"),
    ],
)
def test_generate_bad_arguments(tiny_run, args, message):
    out = _rnnlab("generate", str(tiny_run), "--prompt", "the", *args)
    assert out.returncode == 2 and message in out.stderr and out.stdout == ""


def test_generate_says_unknown_characters_once(tiny_run):
    out = _rnnlab(
        "generate", str(tiny_run), "--prompt", "the ☃☃ cat", "--length", "5", "--seed", "0"
    )
    assert out.returncode == 0, out.stderr
    assert out.stderr.count("outside the vocabulary") == 1 and "2 prompt token(s)" in out.stderr


def test_score_bad_files(tiny_run, tmp_path):
    empty, binary = tmp_path / "empty.txt", tmp_path / "binary.dat"
    empty.write_text("")
    binary.write_bytes(b"abc\x00\x01\x02")
    for path, message in ((empty, "got an empty file"), (binary, "got a NUL byte")):
        out = _rnnlab("score", str(tiny_run), "--file", str(path))
        assert out.returncode == 2 and message in out.stderr


def test_vocabulary_not_matching_the_checkpoint(tiny_run, tmp_path):
    run = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(tiny_run), str(run)], check=True)
    vocab = json.loads((run / "vocab.json").read_text())
    vocab["tokens"].append("☃")
    vocab["size"] += 1
    (run / "vocab.json").write_text(json.dumps(vocab))
    for verb in (
        ["generate", str(run)],
        ["score", str(run), "--text", "the cat"],
        ["evaluate", str(run)],
    ):
        out = _rnnlab(*verb)
        assert out.returncode == 2, out.stderr
        assert (
            f"vocabulary: expected {vocab['size'] - 1} tokens (the size of the embedding"
            in out.stderr
        )


def test_corpus_smaller_than_one_window_leaves_no_run(tmp_path):
    small = tmp_path / "small.txt"
    small.write_text("a short text, far less than a batch of windows.\n" * 2)
    run = tmp_path / "run"
    out = _rnnlab(
        "train", "charlm-sample", "--out", str(run), *TINY, *cli_sets(f"data.path={small}")
    )
    assert out.returncode == 2
    assert "expected enough text to split" in out.stderr or "expected at least" in out.stderr
    assert not run.exists()
    medium = tmp_path / "medium.txt"
    medium.write_text("the cat sat on the mat.\n" * 50)  # 1200 chars: valid has 60 < 4 x 17
    out = _rnnlab(
        "train", "charlm-sample", "--out", str(run), *TINY, *cli_sets(f"data.path={medium}")
    )
    assert out.returncode == 2 and "valid split: expected at least 68 tokens" in out.stderr
    assert not run.exists()


def test_binary_corpus_is_refused(tmp_path):
    binary = tmp_path / "blob.bin"
    binary.write_bytes(bytes(range(256)) * 40)
    out = _rnnlab(
        "train", "charlm-sample", "--out", str(tmp_path / "run"), *cli_sets(f"data.path={binary}")
    )
    assert out.returncode == 2 and "expected UTF-8 text, got a NUL byte" in out.stderr
    assert not (tmp_path / "run").exists()


def test_public_name():
    import rnnlab
    from rnnlab.nn.language_model import LanguageModel

    assert rnnlab.LanguageModel is LanguageModel


def test_text_features_by_hand():
    from rnnlab.inspect.language import text_features

    f = text_features(list('a "b" (c)\n<i>'))
    #                  a _ " b " _ ( c ) \n < i >
    assert f["quote"].tolist() == [0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    assert f["brackets"].tolist() == [0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0]
    assert f["html_tag"].tolist() == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0]
    assert f["line_position"].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 1, 2]
    assert "comment" not in f  # constant in this text: nothing to correlate with
    # A quote or bracket left open at the end of a line does not run on into the next one.
    f = text_features(list('"a (b\nc'))
    assert f["quote"].tolist() == [1, 1, 1, 1, 1, 0, 0]
    assert f["brackets"].tolist() == [0, 0, 0, 1, 1, 0, 0]


def test_inspect_language_model(tiny_run, tmp_path):
    out = tmp_path / "inspect"
    text = 'the cat said "the dog ran" (quietly) to the park.\nthe mat "sat" (a dog).'
    done = _rnnlab("inspect", str(tiny_run), "--text", text, "--find-units", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "quote" in done.stdout and "r = " in done.stdout
    page = (out / "tokens.html").read_text()
    assert page.count('class="tok"') == len(text)  # one per character
    assert page.count("<br>") == 5 * len(text)  # the top-5 next characters under each
    found = json.loads((out / "units.json").read_text())
    assert {row["feature"] for row in found} >= {"quote", "brackets", "line_position"}
    assert all(-1.0 <= row["r"] <= 1.0 for row in found)
    bad = _rnnlab("inspect", str(tiny_run), "--index", "3")
    assert bad.returncode == 2 and "expected --text" in bad.stderr


def test_predict_on_a_language_model_points_to_score(tiny_run):
    out = _rnnlab("predict", str(tiny_run), "--text", "the cat")
    assert out.returncode == 2 and "use `rnnlab generate` or `rnnlab score`" in out.stderr


def test_find_units_within_lines_ignores_a_unit_that_drifts_over_the_text():
    from rnnlab.inspect.language import find_units, line_index, text_features

    # Two lines; the second is mostly quoted. Unit 0 only counts characters (it drifts over
    # the whole text); unit 1 is on exactly inside quotes.
    text = 'ab "c" defghij\nk "lmnopqrstu" v'
    labels = list(text)
    features = text_features(labels)
    counter = np.arange(len(labels), dtype=float)
    detector = features["quote"] + 0.01 * np.sin(np.arange(len(labels)))
    gates = [{"c": np.stack([counter, detector], axis=1)}]
    overall = {(u["feature"], u["unit"]): u["r"] for u in find_units(gates, features, best=2)}
    assert overall[("quote", 0)] > 0.3  # the spurious correlation the within-line view removes
    within = find_units(gates, features, best=2, lines=line_index(labels))
    quote = [u for u in within if u["feature"] == "quote"]
    assert quote[0]["unit"] == 1 and quote[0]["r"] > 0.99
    assert abs(quote[1]["r"]) < abs(overall[("quote", 0)])
    assert line_index(labels).tolist() == [0] * 15 + [1] * 16
