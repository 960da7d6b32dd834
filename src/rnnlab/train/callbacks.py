"""Training callbacks: metrics file, checkpoints, progress bar, console lines.

Each is an object with some of the :class:`~rnnlab.train.loop.Trainer` hooks. The library's
own code never prints; :class:`ProgressBar` and :class:`ConsoleLogger` write to the stream they
are given (the CLI gives stderr and stdout).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import torch
from tqdm.auto import tqdm

from rnnlab.checkpoint import save_checkpoint
from rnnlab.train.loop import DivergenceError

__all__ = ["Checkpointer", "ConsoleLogger", "MetricsWriter", "ProgressBar", "RankDropoutSeed"]


class MetricsWriter:
    """Appends to ``path`` (JSON lines) one ``{"kind": "step", ...}`` line every ``log_every``
    steps and one ``{"kind": "epoch", ...}`` line per epoch."""

    def __init__(self, path: Path, log_every: int) -> None:
        self.path, self.log_every = Path(path), log_every

    def _write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def on_step_end(self, trainer: Any, logs: dict[str, Any]) -> None:
        if self.log_every and logs["step"] % self.log_every == 0:
            self._write({"kind": "step", **logs})

    def on_epoch_end(self, trainer: Any, record: dict[str, Any]) -> None:
        self._write({"kind": "epoch", **record})


class Checkpointer:
    """Saves ``last`` every ``every`` steps inside an epoch and at each epoch end, and ``best``
    whenever the task's selection metric improves on validation. ``config`` is the resolved
    configuration, saved in each checkpoint, with ``artifacts`` (file name -> sha256)."""

    def __init__(
        self,
        folder: Path,
        config: dict[str, Any],
        every: int = 0,
        artifacts: dict[str, str] | None = None,
    ) -> None:
        self.folder, self.config, self.every = Path(folder), config, every
        self.artifacts = artifacts

    def save(self, trainer: Any, tag: str) -> Path:
        """Checkpoint ``tag``, after checking the weights are finite: a non-finite model raises
        DivergenceError and the previous (finite) checkpoint stays."""
        bad = [
            name
            for name, value in trainer.module.state_dict().items()
            if value.is_floating_point() and not torch.isfinite(value).all()
        ]
        if bad:
            kept = (self.folder / f"{tag}.json").absolute()
            raise DivergenceError(
                f"the weights became non-finite ({bad[0]}{' ...' if len(bad) > 1 else ''}) by "
                f"step {trainer.state.step}; checkpoint {tag!r} was not written over "
                f"({kept if kept.is_file() else 'none had been written'})"
            )
        return save_checkpoint(
            self.folder,
            tag,
            trainer.module,
            trainer.optimizer,
            trainer.state.to_dict(),
            self.config,
            carry=trainer.state.carry,
            artifacts=self.artifacts,
        )

    def on_step_end(self, trainer: Any, logs: dict[str, Any]) -> None:
        inside_epoch = trainer.state.batch < trainer.num_batches  # the epoch end saves anyway
        if self.every and logs["step"] % self.every == 0 and inside_epoch:
            self.save(trainer, "last")

    def on_epoch_end(self, trainer: Any, record: dict[str, Any]) -> None:
        self.save(trainer, "last")
        if record.get("improved"):
            self.save(trainer, "best")


class RankDropoutSeed:
    """Data parallelism: each rank draws its own dropout masks.

    Every rank builds the model from the same seed, so without this all ranks would continue
    from the same random state and drop the same units at the same position of their shards.
    Before each step, torch's generator is seeded from (seed, rank, step). The masks then differ
    between ranks, and a run resumed from a checkpoint draws exactly what the uninterrupted run
    drew, whatever the world size (the checkpoint's single random state is rank 0's). Single
    process runs do not use it, so their random stream is unchanged.
    """

    def __init__(self, seed: int, rank: int) -> None:
        self.seed, self.rank = seed, rank

    def stream_seed(self, step: int) -> int:
        digest = hashlib.sha256(f"dropout:{self.seed}:{self.rank}:{step}".encode()).digest()
        return int.from_bytes(digest[:8], "little") >> 1  # 63 bits: manual_seed takes it

    def on_train_begin(self, trainer: Any) -> None:
        torch.manual_seed(self.stream_seed(trainer.state.step))

    def on_step_end(self, trainer: Any, logs: dict[str, Any]) -> None:
        torch.manual_seed(self.stream_seed(trainer.state.step))  # for the next step


class ProgressBar:
    """A tqdm bar per epoch, with ETA, the running loss and the task's first metric."""

    def __init__(self, stream: TextIO | None = None, disable: bool | None = None) -> None:
        self.stream, self.disable, self.bar = stream, disable, None

    def on_epoch_begin(self, trainer: Any, epoch: int) -> None:
        total = trainer.config.epochs
        self.bar = tqdm(
            total=trainer.num_batches,
            initial=trainer.state.batch,
            file=self.stream,
            desc=f"Epoch {epoch + 1}/{total}" if total else f"Epoch {epoch + 1}",
            unit="step",
            leave=False,
            dynamic_ncols=True,
            disable=self.disable,
        )

    def on_step_end(self, trainer: Any, logs: dict[str, Any]) -> None:
        sums = trainer.state.sums
        shown = {"loss": sums["loss"] / sums["n"], **trainer.objective.metrics(sums)}
        self.bar.set_postfix(
            {_SHORT.get(k, k): f"{v:.4f}" for k, v in list(shown.items())[:2]}, refresh=False
        )
        self.bar.update(1)

    def on_epoch_end(self, trainer: Any, record: dict[str, Any]) -> None:
        self.bar.close()

    def on_train_end(self, trainer: Any) -> None:
        if self.bar is not None:
            self.bar.close()


_SHORT = {"accuracy": "acc", "perplexity": "ppl", "tokens_per_second": "tok/s"}  # Keras-like


def _number(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.4f}"


def _metric_names(record: dict[str, Any]) -> list[str]:
    """The metric keys of an epoch record, in order: those between ``loss`` and ``seconds``."""
    keys = list(record)
    return keys[keys.index("loss") : keys.index("seconds")]


def format_epoch(record: dict[str, Any], epochs: int) -> str:
    """A Keras-like line: ``Epoch 3/20 - 41s 812ms/step - loss: 0.51 - acc: 0.74 - ...``
    (every metric of the record, then every validation figure)."""
    names = _metric_names(record)
    of_total = f"/{epochs}" if epochs else ""  # epochs 0: until the time limit
    line = f"Epoch {record['epoch']}{of_total} - {record['seconds']:.0f}s "
    line += f"{record['ms_per_step']:.0f}ms/step - "
    line += " - ".join(f"{_SHORT.get(k, k)}: {_number(record[k])}" for k in names)
    if "val_loss" in record:
        # every validation figure, including those only evaluation computes (a decoder's
        # error rates), in the record's order
        shown = [k[4:] for k in record if k.startswith("val_") and k != "val_seconds"]
        line += "".join(f" - val_{_SHORT.get(k, k)}: {_number(record['val_' + k])}" for k in shown)
        line += f" ({record['val_seconds']:.0f}s)"
    return line


def format_step(logs: dict[str, Any]) -> str:
    """The step line of the ``mnist-seed`` experiment ("Iter N, Minibatch Loss= ...,
    Training Accuracy= ..."): the loss and the task's other metrics at a step."""
    keys = list(logs)
    extra = keys[keys.index("loss") + 1 : keys.index("lr")]
    line = f"Iter {logs['step']}, Minibatch Loss= {logs['loss']:.6f}"
    for k in extra:
        label = "Training Accuracy" if k == "accuracy" else f"Training {k}"
        line += f", {label}= {logs[k]:.5f}"
    return line


class ConsoleLogger:
    """Prints the tutorial's step lines every ``log_every`` steps and a Keras-like line per epoch
    through ``write`` (default: ``tqdm.write`` to ``stream``, which keeps progress bars intact)."""

    def __init__(
        self,
        log_every: int = 0,
        stream: TextIO | None = None,
        write: Callable[[str], None] | None = None,
    ) -> None:
        self.log_every = log_every
        self.write = write or (lambda line: tqdm.write(line, file=stream))

    def on_step_end(self, trainer: Any, logs: dict[str, Any]) -> None:
        if self.log_every and logs["step"] % self.log_every == 0:
            self.write(format_step(logs))

    def on_epoch_end(self, trainer: Any, record: dict[str, Any]) -> None:
        self.write(format_epoch(record, trainer.config.epochs))
