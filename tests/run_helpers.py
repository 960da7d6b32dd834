"""Helpers of the tests that start, kill, poison and resume real training runs."""

from __future__ import annotations

import math
import subprocess
import time
from pathlib import Path

import torch


def wait_for_step(run: Path, step: int, proc: subprocess.Popen) -> None:
    """Return once ``run``'s metrics.jsonl has a line of ``step`` (a checkpoint follows it), or
    fail if ``proc`` ended or 240 s passed first."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        path = run / "metrics.jsonl"
        if path.is_file() and f'"step": {step},' in path.read_text():
            return
        time.sleep(0.005)
    raise AssertionError(f"the run did not reach step {step} (exit status {proc.poll()})")


class Poison:
    """A trainer callback that makes the head's bias NaN at the end of ``step`` (before that
    step's checkpoint), so the next loss is NaN."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer, logs) -> None:
        if logs["step"] == self.step:
            with torch.no_grad():
                trainer.module.head.bias.fill_(math.nan)
