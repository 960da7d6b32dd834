"""Issue 15, reliability: every case of its "Why", each by a test that failed on the old main.

Settings refuse non-finite numbers; checkpoints and run directories are written so that a
crash, a divergence, a second writer or an edited file cannot make a run lie about itself."""

from __future__ import annotations

import json
import math
import os
import pickle
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rnnlab.config import ConfigError, DataConfig, TrainConfig, load_preset
from run_helpers import Poison
from tiny import cli_sets, merge_settings

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.mark.parametrize(
    "override",
    [
        "train.lr=inf",
        "train.lr=1e400",
        "train.clip_grad_norm=inf",
        "train.gamma=inf",
        "train.min_lr_ratio=inf",
        "train.weight_decay=nan",
        "train.momentum=-inf",
        "model.forget_bias=inf",
        "model.dropout=nan",
        "train.divergence_factor=inf",
    ],
)
def test_settings_refuse_inf_and_nan(override):
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=rf"{key}: expected a finite number, got (-?inf|nan)"):
        load_preset("mnist-sample", [override])


def test_the_finite_check_covers_sections_built_in_python():
    with pytest.raises(ConfigError, match="train.lr: expected a finite number, got inf"):
        TrainConfig(lr=math.inf)
    with pytest.raises(ConfigError, match="data.holdout_seed: expected an int >= 0, got -1"):
        DataConfig(holdout_seed=-1)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.seed=-1", "train.seed: expected an int >= 0, got -1"),
        ("data.maxlen=99999999999999999999999", "data.maxlen: expected an int that fits in 64"),
        ("train.lr=1" + "0" * 400, "train.lr: expected a finite number, got 1000"),
        ("train.divergence_factor=0.5", "train.divergence_factor: expected 0 .off. or > 1"),
        ("train.divergence_window=-1", "train.divergence_window: expected >= 0, got -1"),
        ("model.hidden_sizes=[100000]", r"model: expected at most 2,147,483,648 parameters"),
    ],
)
def test_absurd_numbers_are_refused(override, message):
    with pytest.raises(ConfigError, match=message):
        load_preset("mnist-sample", [override])


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_writes_follow_the_umask(tmp_path, umask):
    from rnnlab.files import atomic_write

    old = os.umask(umask)
    try:
        atomic_write(tmp_path / "a.json", b"{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o666 & ~umask


TINY = [
    "model.projection=8",
    "model.hidden_sizes=[8]",
    "train.epochs=2",
    "train.batch_size=500",
    "run.log_every=5",
    "run.checkpoint_every=5",
]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A finished tiny mnist-sample run (40 steps); tests copy it before changing it."""
    from rnnlab.runs import train

    out = tmp_path_factory.mktemp("runs") / "tiny"
    return out, train("mnist-sample", out, overrides=TINY)


def _copy(run: Path, dest: Path, unfinished: bool = False) -> Path:
    shutil.copytree(run, dest)
    if unfinished:
        (dest / "report.json").unlink()
    return dest


def test_edited_checkpoint_metadata_is_refused_by_its_digest(tiny_run, tmp_path):
    from rnnlab.checkpoint import CheckpointError, load_checkpoint
    from rnnlab.runs import resume

    run = _copy(tiny_run[0], tmp_path / "run", unfinished=True)
    lines_before = (run / "metrics.jsonl").read_text()
    meta_path = run / "checkpoints" / "last.json"
    meta = json.loads(meta_path.read_text())
    meta["state"]["step"] = 3
    meta_path.write_text(json.dumps(meta))
    expected = rf"{meta_path.absolute()}: expected metadata with sha256 \w+, got \w+; .* changed"
    with pytest.raises(CheckpointError, match=expected):
        load_checkpoint(run / "checkpoints", "last")
    with pytest.raises(CheckpointError, match="use the other checkpoint"):
        resume(run)
    assert (run / "metrics.jsonl").read_text() == lines_before  # no logged line deleted


def test_damaged_tensors_are_named_by_full_path(tiny_run, tmp_path):
    from rnnlab.checkpoint import CheckpointError, load_checkpoint

    run = _copy(tiny_run[0], tmp_path / "run")
    tensors = next((run / "checkpoints").glob("best-*.safetensors"))
    data = bytearray(tensors.read_bytes())
    data[-1] ^= 1
    tensors.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=rf"{tensors.absolute()}: expected sha256 .*restore"):
        load_checkpoint(run / "checkpoints", "best")


def test_non_finite_weights_never_replace_a_finite_checkpoint(tmp_path):
    from rnnlab.checkpoint import load_checkpoint
    from rnnlab.runs import RunError, train

    out = tmp_path / "run"
    last = (out / "checkpoints" / "last.json").absolute()
    expected = (
        rf"weights became non-finite \(head.bias\) by step 10.*was not written over.*"
        rf"last checkpoint \(finite weights\) is kept: {last} \(step 5\)"
    )
    with pytest.raises(RunError, match=expected):
        train("mnist-sample", out, overrides=TINY, callbacks=[Poison(10)])
    tensors, meta = load_checkpoint(out / "checkpoints", "last")
    assert meta["state"]["step"] == 5
    assert all(torch.isfinite(t).all() for k, t in tensors.items() if k.startswith("model."))
    assert json.loads((out / "run.json").read_text())["status"] == "diverged"


def test_a_finite_but_exploding_loss_stops_the_run(tmp_path):
    from rnnlab.runs import RunError, train

    out = tmp_path / "run"
    settings = [*TINY, "train.lr=1e6", "train.divergence_window=5"]
    with pytest.raises(RunError, match=r"has stayed above .* for 5 steps.*step \d+\)"):
        train("mnist-sample", out, overrides=settings)
    assert not (out / "report.json").exists()


def _rewrite(run: Path, tag: str, change) -> None:
    """Write checkpoint ``tag`` of ``run`` again with ``change(model)`` applied to its weights,
    through the library (so the digests are right)."""
    from rnnlab.checkpoint import load_checkpoint, restore_optimizer, save_checkpoint
    from rnnlab.runs import load_run
    from rnnlab.train import make_optimizer

    config, model, _ = load_run(run, tag)
    tensors, meta = load_checkpoint(run / "checkpoints", tag)
    optimizer = make_optimizer(model, config.train)
    restore_optimizer(optimizer, tensors, meta)
    with torch.no_grad():
        change(model)
    save_checkpoint(run / "checkpoints", tag, model, optimizer, meta["state"], meta["config"])


def _overflowing(model) -> None:
    """Finite weights whose logits overflow: every gate saturates open (h near 1), the head's
    weights near float32's largest value."""
    for p in model.parameters():
        p.fill_(1e3)
    model.head.weight.fill_(3e38)
    model.head.bias.fill_(3e38)


def test_evaluate_and_predict_refuse_non_finite_outputs(tiny_run, tmp_path):
    from rnnlab.checkpoint import CheckpointError
    from rnnlab.cli import main
    from rnnlab.predict import PredictError, evaluate_run, predict_images
    from rnnlab.runs import RunError

    image = tmp_path / "digit.npy"
    np.save(image, np.zeros((28, 28), dtype=np.float32))
    huge = _copy(tiny_run[0], tmp_path / "huge")
    _rewrite(huge, "best", _overflowing)
    with pytest.raises(RunError, match=r"expected finite figures from checkpoint best, got loss"):
        evaluate_run(huge)
    with pytest.raises(PredictError, match=r"input 1: expected finite probabilities"):
        predict_images(huge, [image])
    nan = _copy(tiny_run[0], tmp_path / "nan")
    _rewrite(nan, "best", lambda m: m.head.bias.fill_(math.nan))
    with pytest.raises(CheckpointError, match=r"best.json: expected finite weights, got non"):
        evaluate_run(nan)
    assert main(["evaluate", str(nan), "--json"]) == 2
    assert main(["predict", str(huge), "--image", str(image)]) == 2


def test_the_checkpoint_config_wins_over_an_edited_config_json(tiny_run, tmp_path, capsys):
    from rnnlab.cli import main
    from rnnlab.predict import evaluate_run
    from rnnlab.runs import RunWarning

    run = _copy(tiny_run[0], tmp_path / "run")
    before = evaluate_run(run)
    config = json.loads((run / "config.json").read_text())
    config["model"]["pooling"] = "mean"
    config["train"]["lr"] = 0.5
    (run / "config.json").write_text(json.dumps(config))
    path = (run / "config.json").absolute()
    with pytest.warns(RunWarning, match=rf"{path} differs .* \(model.pooling, train.lr\); using"):
        after = evaluate_run(run)
    assert after == before
    assert main(["evaluate", str(run)]) == 0
    assert "rnnlab evaluate: warning: " in capsys.readouterr().err


_HOLD = """
import sys
from pathlib import Path
from rnnlab.runs.lock import RunLock
RunLock.acquire(Path(sys.argv[1]))
print("held", flush=True)
sys.stdin.read()
"""


def _hold_lock(run: Path) -> subprocess.Popen:
    """Another process holding ``run``'s lock until its stdin closes."""
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(run)],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_is_refused_naming_the_holder(tiny_run, tmp_path):
    from rnnlab.runs import RunError, resume, train

    run = _copy(tiny_run[0], tmp_path / "run", unfinished=True)
    holder = _hold_lock(run)
    try:
        expected = rf"expected no other process writing this run, got PID {holder.pid} holding"
        with pytest.raises(RunError, match=expected):
            resume(run)
        fresh = tmp_path / "fresh"
        fresh.mkdir()
        other = _hold_lock(fresh)
        with pytest.raises(RunError, match=rf"got PID {other.pid} holding"):
            train("mnist-sample", fresh, overrides=TINY)
        other.communicate("", timeout=60)
    finally:
        holder.communicate("", timeout=60)  # its end releases the lock
    report = resume(run)  # now the run is ours
    assert report.steps == tiny_run[1].steps


def test_an_abandoned_claim_is_reused_and_anything_else_refused(tmp_path):
    from rnnlab.runs import RunError, train
    from rnnlab.runs.lock import LOCK_NAME

    out = tmp_path / "run"  # what a run killed during data loading or before step 5 leaves
    (out / "checkpoints").mkdir(parents=True)
    for name in (LOCK_NAME, "config.json", "run.json", "metrics.jsonl", ".run.json.1a2b.tmp"):
        (out / name).write_text("{}")
    (out / "checkpoints" / "last-00000005.safetensors").write_bytes(b"cut short")
    train("mnist-sample", out, overrides=merge_settings(TINY, "train.epochs=1"))
    assert (out / "report.json").is_file() and not (out / ".run.json.1a2b.tmp").exists()

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / LOCK_NAME).write_text("")
    (foreign / "thesis.tex").write_text("mine")
    with pytest.raises(RunError, match="expected a new or empty directory, got an existing non"):
        train("mnist-sample", foreign, overrides=TINY)
    assert (foreign / "thesis.tex").read_text() == "mine"


def test_two_concurrent_trains_of_one_out_have_one_winner(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    args = ["train", "mnist-sample", "--out", str(out), "--threads", "1", "--no-progress"]
    settings = cli_sets(*merge_settings(TINY, "train.epochs=1"))
    command = [sys.executable, "-m", "rnnlab", *args, *settings]
    procs = [
        subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    assert sorted(code for code, _ in results) == [0, 2], results
    loser = next(err for code, err in results if code == 2)
    assert "got PID" in loser or "got an existing non-empty directory" in loser
    assert json.loads((out / "report.json").read_text())["steps"] == 20


def test_a_data_dir_is_never_silently_ignored(tiny_run, tmp_path, capsys):
    from rnnlab.cli import main
    from rnnlab.predict import evaluate_run
    from rnnlab.runs import RunError, train

    out = tmp_path / "run"
    with pytest.raises(RunError, match=r"expected no --data-dir for a run that reads the sample"):
        train("mnist-sample", out, data_dir=tmp_path, overrides=TINY)
    with pytest.raises(RunError, match=r"--data-dir .*nope: expected an existing directory"):
        train("mnist-sample", out, data_dir=tmp_path / "nope", overrides=TINY)
    assert not out.exists()
    with pytest.raises(RunError, match=r"--data-dir .*nope: expected an existing directory"):
        evaluate_run(tiny_run[0], data_dir=tmp_path / "nope")
    assert main(["evaluate", str(tiny_run[0]), "--data-dir", str(tmp_path / "nope")]) == 2
    assert "expected an existing directory, got nothing there" in capsys.readouterr().err


@pytest.fixture(scope="module")
def imdb_run(tmp_path_factory):
    from rnnlab.runs import train

    out = tmp_path_factory.mktemp("runs") / "imdb"
    settings = ["model.embedding_dim=8", "model.hidden_sizes=[8]", "data.maxlen=20"]
    train("imdb-sample", out, overrides=[*settings, "train.epochs=1", "data.num_words=2000"])
    return out


def test_predict_file_answers_good_lines_and_numbers_bad_ones(imdb_run, tmp_path, capsys):
    from rnnlab.cli import main

    reviews = tmp_path / "reviews.txt"
    long = " ".join(["a wonderful moving film with great acting"] * 10)
    reviews.write_text(f"a great film\n\nterrible acting\n\nqqqzx vvvwq\n{long}\n")
    assert main(["predict", str(imdb_run), "--file", str(reviews)]) == 1
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 3  # lines 1, 3 and 6 answered
    assert f"error: {reviews} line 5: expected at least one known word" in captured.err
    assert f"note: {reviews} line 6 is longer than the model reads" in captured.err
    assert "1 of 4 inputs failed" in captured.err
    assert main(["predict", str(imdb_run), "--file", str(reviews), "--json"]) == 1
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["line"] for x in lines] == [1, 3, 5, 6]
    assert "error" in lines[2] and "label" not in lines[2]
    assert [x.get("truncated") for x in lines] == [False, False, None, True]


def test_npy_pickles_and_object_arrays_are_refused_without_unsafe_advice(tiny_run, tmp_path):
    from rnnlab.predict import PredictError, predict_images

    objects = tmp_path / "objects.npy"
    np.save(objects, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    pickled = tmp_path / "pickled.npy"
    pickled.write_bytes(pickle.dumps([1, 2]))
    for path, message in [
        (objects, "expected a .npy array of numbers, got an object array"),
        (pickled, r"expected a .npy file \(starting with .*\), got other bytes"),
    ]:
        with pytest.raises(PredictError, match=message) as caught:
            predict_images(tiny_run[0], [path])
        assert "allow_pickle" not in str(caught.value)
        assert "never unpickles" in str(caught.value)


def test_run_directory_files_follow_the_umask(tmp_path):
    from rnnlab.runs import train

    out = tmp_path / "run"
    old = os.umask(0o027)
    try:
        train("mnist-sample", out, overrides=merge_settings(TINY, "train.epochs=1"))
    finally:
        os.umask(old)
    modes = {
        str(p.relative_to(out)): stat.S_IMODE(p.stat().st_mode)
        for p in out.rglob("*")
        if p.is_file()
    }
    assert len(modes) >= 8 and set(modes.values()) == {0o640}, modes
