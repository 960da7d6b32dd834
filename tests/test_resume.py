"""A run killed (SIGKILL) mid-epoch and resumed ends exactly like an uninterrupted run on CPU."""

import json
import os
import subprocess
import sys
from pathlib import Path

from run_helpers import wait_for_step
from tiny import SMALL_MNIST_CLI, cli_sets

SRC = Path(__file__).resolve().parents[1] / "src"
ARGS = [*SMALL_MNIST_CLI, *cli_sets("run.checkpoint_every=7", "model.dropout=0.3")]
TIMINGS = ("seconds", "ms_per_step", "val_seconds")


def _rnnlab(*args: str, wait: bool = True) -> subprocess.Popen | subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    command = [sys.executable, "-m", "rnnlab", *args]
    if wait:
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _metrics(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(x).items() if k not in TIMINGS} for x in lines]


def test_killed_run_resumes_to_identical_metrics(tmp_path):
    whole = tmp_path / "whole"
    done = _rnnlab("train", "mnist-sample", "--out", str(whole), *ARGS)
    assert done.returncode == 0, done.stderr

    killed = tmp_path / "killed"
    proc = _rnnlab("train", "mnist-sample", "--out", str(killed), *ARGS, wait=False)
    wait_for_step(killed, 130, proc)  # epoch 2 has steps 101..200
    proc.kill()  # SIGKILL: no handler runs
    assert proc.wait() == -9
    assert not (killed / "report.json").exists()
    checkpoint = json.loads((killed / "checkpoints" / "last.json").read_text())
    assert checkpoint["state"]["epoch"] == 1 and 0 < checkpoint["state"]["batch"] < 100

    resumed = _rnnlab("train", "--resume", str(killed), "--threads", "1", "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    assert _metrics(killed) == _metrics(whole)
    a, b = (json.loads((r / "report.json").read_text()) for r in (whole, killed))
    assert a["test_accuracy"] == b["test_accuracy"] and a["steps"] == b["steps"] == 200
    wa = (whole / "checkpoints" / "last.json").read_text()
    wb = (killed / "checkpoints" / "last.json").read_text()
    assert json.loads(wa)["sha256"] == json.loads(wb)["sha256"]  # bit-identical tensors
