"""Small runs and a server process for the ``rnnlab serve`` tests.

The runs are built directly (a freshly initialised model saved as a checkpoint beside its
config, vocabulary, metrics and report), which takes well under a second: the serve tests check
the server, not what training learns.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import torch

from rnnlab.checkpoint import save_checkpoint
from rnnlab.config import load_preset
from rnnlab.data.vocab import Vocabulary
from rnnlab.tasks import build_model, get_task

SRC = Path(__file__).resolve().parents[1] / "src"

TEXT_SETTINGS = ["model.embedding_dim=8", "model.hidden_sizes=[8]", "data.maxlen=60"]
IMAGE_SETTINGS = ["model.projection=16", "model.hidden_sizes=[12]"]
LM_SETTINGS = ["model.embedding_dim=8", "model.hidden_sizes=[10]"]
CHARACTERS = "\n etaoinshrdlucmfwypvbgk.,\"'()"  # the character vocabulary, after <unk>
_WORD_LIST = (
    "the a and of to is was it film movie this that not but good great wonderful loved bad "
    "awful boring slow acting story ending minute hour first last every i very at all , ."
)
WORDS = _WORD_LIST.split(" ")  # the vocabulary, most frequent first
REVIEW = "The first hour was slow and the acting was not good, but the ending was wonderful."


def make_run(folder: Path, preset: str, settings: list[str], seed: int = 0) -> Path:
    """A run directory as ``rnnlab train`` leaves it (config.json, vocab.json for text,
    checkpoints/last, metrics.jsonl, run.json, report.json) with an untrained model."""
    config = load_preset(preset, settings)
    torch.manual_seed(seed)
    folder.mkdir(parents=True)
    if config.model.kind == "lm":
        vocab = Vocabulary("chars", ("<unk>", *CHARACTERS))
        (folder / "vocab.json").write_text(vocab.to_json(), "utf-8")
        task = get_task(config)
        task.bind_run(folder)
        model = task.build_model()
    else:
        model = build_model(config)
    (folder / "config.json").write_text(json.dumps(config.to_dict()), "utf-8")
    if config.model.kind == "text":
        vocab = {word: rank for rank, word in enumerate(WORDS, start=1)}
        (folder / "vocab.json").write_text(json.dumps(vocab), "utf-8")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    save_checkpoint(folder / "checkpoints", "last", model, optimizer, {"step": 3}, config.to_dict())
    records = [
        {"kind": "step", "epoch": 1, "step": s, "loss": 2.0 / s, "accuracy": 0.3 + 0.1 * s}
        for s in (1, 2, 3)
    ]
    records.append({"kind": "epoch", "epoch": 1, "step": 3, "val_loss": 0.9, "val_accuracy": 0.6})
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), "utf-8")
    (folder / "run.json").write_text(json.dumps({"status": "finished"}), "utf-8")
    (folder / "report.json").write_text(json.dumps({"test_accuracy": 0.5, "steps": 3}), "utf-8")
    return folder


def make_runs(root: Path) -> tuple[Path, Path, Path]:
    """A text run (imdb-sample, LSTM of 8 units, bidirectional), an image run (mnist-sample,
    LSTM of 12 units) and a character language model (charlm-sample, LSTM of 10 units over
    :data:`CHARACTERS`) under ``root``."""
    return (
        make_run(root / "reviews", "imdb-sample", TEXT_SETTINGS),
        make_run(root / "digits", "mnist-sample", IMAGE_SETTINGS),
        make_run(root / "chars", "charlm-sample", LM_SETTINGS),
    )


def start_server(*args: str) -> tuple[subprocess.Popen, str]:
    """``rnnlab serve ARGS --port 0`` in a child process; returns it and the URL it printed.
    Always loopback: the tests never listen on another address."""
    env = {**os.environ, "PYTHONPATH": str(SRC), "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "rnnlab", "serve", *args, "--host", "127.0.0.1"]
    process = subprocess.Popen(
        [*command, "--port", "0", "--threads", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    watchdog = threading.Timer(180, process.kill)  # a server that never starts fails the test
    watchdog.start()
    lines = []
    try:
        for line in process.stdout:  # until the server prints its URL (or dies)
            lines.append(line)
            if line.startswith("rnnlab serve: http://"):
                return process, line.split()[2]
    finally:
        watchdog.cancel()
    process.wait(30)
    raise RuntimeError(f"rnnlab serve exited {process.returncode}: {lines} {process.stderr.read()}")


def stop_server(process: subprocess.Popen, timeout: float = 30) -> tuple[int, str, str]:
    """Ctrl-C (SIGINT) the server; returns its exit status, the rest of stdout, and stderr."""
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err
