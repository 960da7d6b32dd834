"""Fault injection (issue 15): a tiny run is killed with SIGKILL at 20 points spread over its
life, through the ``RNNLAB_FAULT_AT`` test hook (:mod:`rnnlab.faults`): while holding the kernel
build lock, right after claiming its directory, before loading data, mid-step, between a
checkpoint's tensors and its metadata, after the metadata, mid-evaluation, just before
``report.json``. Each killed run is then resumed with ``--resume``, or, when that is refused
(nothing to resume), started again with the same ``--out``. Every one must end with the report,
the metrics and the checkpoint tensors of an uninterrupted run, bit for bit; none may hang."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tiny import cli_sets

SRC = Path(__file__).resolve().parents[1] / "src"
# mnist-sample at batch 500: 20 steps an epoch, 2 epochs, a checkpoint every 5 steps, dropout so
# that the random state matters, two evaluation batches (test: 2,000 images) per validation.
ARGS = [
    "--threads",
    "1",
    "--no-progress",
    *cli_sets(
        "model.projection=8",
        "model.hidden_sizes=[8]",
        "model.dropout=0.3",
        "train.epochs=2",
        "train.batch_size=500",
        "run.log_every=3",
        "run.checkpoint_every=5",
    ),
]
POINTS = [
    "kernel-build:1",
    "claimed:1",
    "data-load:1",
    "step:1",
    "step:4",
    "step:8",
    "step:13",
    "step:19",
    "step:22",
    "step:29",
    "step:37",
    "step:40",
    "checkpoint-tensors:1",
    "checkpoint-tensors:4",
    "checkpoint-tensors:9",
    "checkpoint-meta:3",
    "checkpoint-meta:7",
    "evaluate:1",
    "evaluate:3",
    "report:1",
]
TIMEOUT_S = 180  # per command: a hang fails the test instead of blocking it
TIMINGS = {"seconds", "ms_per_step", "val_seconds", "wall_seconds", "train_seconds"}
VARYING = TIMINGS | {"samples_per_second", "run_dir", "machine"}


def _rnnlab(*args: str, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    env.pop("RNNLAB_FAULT_AT", None)
    if fault is not None:
        env["RNNLAB_FAULT_AT"] = fault
    command = [sys.executable, "-m", "rnnlab", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)


def _outcome(run: Path) -> dict:
    """What must not depend on a kill: report, metrics and checkpoint digests."""
    report = json.loads((run / "report.json").read_text())
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    checkpoints = {
        tag: json.loads((run / "checkpoints" / f"{tag}.json").read_text())["sha256"]
        for tag in ("last", "best")
    }
    return {
        "report": {k: v for k, v in report.items() if k not in VARYING},
        "metrics": [{k: v for k, v in m.items() if k not in TIMINGS} for m in metrics],
        "checkpoints": checkpoints,
        "status": json.loads((run / "run.json").read_text())["status"],
    }


def _kill_and_recover(point: str, run: Path) -> str:
    """Kill a run at ``point``, then resume or rerun it; returns "resumed" or "rerun"."""
    killed = _rnnlab("train", "mnist-sample", "--out", str(run), *ARGS, fault=point)
    assert killed.returncode == -9, f"{point}: expected SIGKILL, got {killed.returncode}"
    resumed = _rnnlab("train", "--resume", str(run), "--threads", "1", "--no-progress")
    if resumed.returncode == 0:
        return "resumed"
    # a clear refusal: nothing to resume (no directory, or no checkpoint in it), then a rerun
    assert resumed.returncode == 2, f"{point}: {resumed.stderr}"
    assert "Traceback" not in resumed.stderr
    refusals = ("got nothing there", "(the directory is reused)")
    assert any(r in resumed.stderr for r in refusals), f"{point}: {resumed.stderr}"
    rerun = _rnnlab("train", "mnist-sample", "--out", str(run), *ARGS)
    assert rerun.returncode == 0, f"{point}: {rerun.stderr}"
    return "rerun"


def test_killed_anywhere_a_run_resumes_or_reruns_to_identical_results(tmp_path):
    whole = tmp_path / "whole"
    done = _rnnlab("train", "mnist-sample", "--out", str(whole), *ARGS)
    assert done.returncode == 0, done.stderr
    expected = _outcome(whole)
    runs = {point: tmp_path / point.replace(":", "-") for point in POINTS}
    with ThreadPoolExecutor(max_workers=3) as pool:  # each subprocess uses one thread
        ways = dict(zip(POINTS, pool.map(_kill_and_recover, POINTS, runs.values()), strict=True))
    differing = [point for point, run in runs.items() if _outcome(run) != expected]
    figures = {
        "kills": len(POINTS),
        "resumed": sum(w == "resumed" for w in ways.values()),
        "refused then rerun": sum(w == "rerun" for w in ways.values()),
        "identical": len(POINTS) - len(differing),
        "hung": 0,  # a hang raises TimeoutExpired above
    }
    print(f"fault injection: {figures}; {ways}")
    assert not differing, differing
    # kills before the first checkpoint cannot be resumed; every later one can
    assert ways["step:4"] == "rerun" and ways["step:8"] == "resumed"
    assert ways["report:1"] == "resumed" and ways["kernel-build:1"] == "rerun"
