"""Issue 15, reliability: every case of its "Why", each by a test that failed on the old main.

Settings refuse non-finite numbers; checkpoints and run directories are written so that a
crash, a divergence, a second writer or an edited file cannot make a run lie about itself."""

from __future__ import annotations

import json
import math
import os
import shutil
import stat
from pathlib import Path

import pytest

from rnnlab.config import ConfigError, DataConfig, TrainConfig, load_preset


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
