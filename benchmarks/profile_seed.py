"""Where one epoch of a seed preset's training goes, by torch.profiler (issue 24).

Trains ``PRESET`` for one epoch through :func:`rnnlab.runs.session.train` (exactly what
``rnnlab train`` runs: data, model, trainer, checkpoints, validation) with a callback that
profiles from the start of the epoch to its end (its validation included), and prints:

* the phases by wall clock: the training steps (step timings as the trainer counts them, batch
  fetch included), the rest of the epoch (validation and the epoch record), and before/after;
* torch.profiler's ``key_averages`` tables, by self CPU time and by total CPU time;
* labelled ranges (``phase:`` rows, from wrappers this script puts around the trainer's step,
  the task's training forward and loss, ``clip_grad_norm_`` and ``evaluate``; the library is not
  changed), so the step splits into forward, backward (the step less everything else),
  optimizer, gradient norm and batch fetch (the trainer's step time less the step);
* the self CPU time outside the recurrent layers' ops (``--lstm-pattern``, matched against the
  op names), per training step, and the copies grouped by input shape.

Example::

    PYTHONPATH=src python benchmarks/profile_seed.py mnist-seed --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile, record_function

import rnnlab.train.loop
from rnnlab.runs.session import train


def labelled(name: str, fn, when=lambda *a, **k: True):
    """``fn`` inside ``record_function(name)`` (when ``when`` says so for the call)."""

    def call(*args, **kwargs):
        if not when(*args, **kwargs):
            return fn(*args, **kwargs)
        with record_function(name):
            return fn(*args, **kwargs)

    return call


class ProfileEpoch:
    """A trainer callback: profile the first epoch, time its steps and the rest of it."""

    def __init__(self) -> None:
        self.prof: profile | None = None
        self.marks: dict[str, float] = {}
        self.steps = 0

    def on_train_begin(self, trainer) -> None:
        trainer._step = labelled("phase: step", trainer._step)
        training = lambda *a, training, **k: training  # noqa: E731
        loss = trainer.objective.batch_loss
        trainer.objective.batch_loss = labelled("phase: forward+loss", loss, training)

    def on_epoch_begin(self, trainer, epoch: int) -> None:
        if epoch == 0:
            self.prof = profile(activities=[ProfilerActivity.CPU], record_shapes=True)
            self.prof.__enter__()
            self.marks["epoch_begin"] = time.perf_counter()

    def on_step_end(self, trainer, logs) -> None:
        self.steps += 1
        self.marks["last_step_end"] = time.perf_counter()

    def on_epoch_end(self, trainer, record) -> None:
        if self.prof is not None and "epoch_end" not in self.marks:
            self.marks["epoch_end"] = time.perf_counter()
            self.prof.__exit__(None, None, None)
            self.record = record


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("preset")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rows", type=int, default=25)
    p.add_argument(
        "--lstm-pattern",
        default=r"rnnlab|lstm|scan|mkldnn_rnn|rnn_layer",
        help="regex (case-insensitive) naming the recurrent layers' ops",
    )
    p.add_argument("--out", default=None, help="JSON of the figures")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cb = ProfileEpoch()
    nn.utils.clip_grad_norm_ = labelled("phase: clip_grad_norm_", nn.utils.clip_grad_norm_)
    rnnlab.train.loop.evaluate = labelled("phase: evaluate", rnnlab.train.loop.evaluate)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        train(args.preset, Path(tmp) / "run", args.data_dir, ["train.epochs=1"], callbacks=[cb])
    end = time.perf_counter()
    m, prof = cb.marks, cb.prof
    assert prof is not None
    steps_s = cb.record["seconds"]
    phases = {
        "before_epoch_s": m["epoch_begin"] - start,
        "train_steps_s": steps_s,
        "epoch_steps_wall_s": m["last_step_end"] - m["epoch_begin"],
        "validation_and_record_s": m["epoch_end"] - m["last_step_end"],
        "val_seconds": cb.record.get("val_seconds"),
        "after_epoch_s": end - m["epoch_end"],
        "steps": cb.steps,
        "ms_per_step": cb.record["ms_per_step"],
    }
    print(
        f"{args.preset}, one epoch, {torch.get_num_threads()} thread(s), torch {torch.__version__}"
    )
    print(json.dumps(phases, indent=1))
    events = prof.key_averages()
    print(events.table(sort_by="self_cpu_time_total", row_limit=args.rows))
    print(events.table(sort_by="cpu_time_total", row_limit=args.rows))
    lstm = re.compile(args.lstm_pattern, re.IGNORECASE)
    self_us = {e.key: e.self_cpu_time_total for e in events}
    total_us = {e.key: e.cpu_time_total for e in events}
    n = cb.steps
    per_step = {
        k[len("phase: ") :]: v / 1e3 / n for k, v in total_us.items() if k.startswith("phase:")
    }
    per_step["optimizer.step"] = (
        sum(v for k, v in total_us.items() if k.startswith("Optimizer.step#")) / 1e3 / n
    )
    per_step["zero_grad"] = (
        sum(v for k, v in total_us.items() if k.startswith("Optimizer.zero_grad#")) / 1e3 / n
    )
    inside = ("forward+loss", "clip_grad_norm_", "optimizer.step", "zero_grad")
    per_step["backward and the rest of the step"] = per_step["step"] - sum(
        per_step.get(k, 0.0) for k in inside
    )
    per_step["batch fetch and callbacks (trainer's step time less the step)"] = (
        1e3 * steps_s / n - per_step["step"]
    )
    per_step["evaluate (once, ms)"] = per_step.pop("evaluate", 0.0) * n
    print("ms per training step under the profiler (evaluate: ms for the whole pass):")
    for k, v in per_step.items():
        print(f"  {v:9.3f}  {k}")
    total = sum(v for k, v in self_us.items() if not k.startswith("phase:"))
    in_lstm = sum(v for k, v in self_us.items() if lstm.search(k))
    rows = sorted(
        ((v, k) for k, v in self_us.items() if not lstm.search(k) and not k.startswith("phase:")),
        reverse=True,
    )
    print(
        f"profiled self CPU: {total / 1e6:.2f} s; ops matching /{args.lstm_pattern}/: "
        f"{in_lstm / 1e6:.2f} s; the rest {(total - in_lstm) / 1e6:.2f} s"
    )
    print("largest self CPU outside them (ms per training step, evaluation included):")
    for v, k in rows[: args.rows]:
        print(f"  {v / 1e3 / n:8.3f}  {k}")
    by_shape = prof.key_averages(group_by_input_shape=True)
    copies = sorted(
        (e for e in by_shape if e.key in ("aten::copy_", "aten::clone", "aten::contiguous")),
        key=lambda e: e.self_cpu_time_total,
        reverse=True,
    )
    print("copies by input shape (self CPU ms in the epoch, calls):")
    for e in copies[:12]:
        print(f"  {e.self_cpu_time_total / 1e3:9.1f}  {e.count:6d}  {e.key} {e.input_shapes}")
    if args.out:
        result = {
            "phases": phases,
            "per_step_ms": per_step,
            "self_cpu_us": self_us,
            "lstm_pattern": args.lstm_pattern,
        }
        Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
