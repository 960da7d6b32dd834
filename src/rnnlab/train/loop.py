"""The training loop: :class:`Trainer` (``fit``), :func:`evaluate`, and the state a checkpoint
needs to resume a run exactly.

The trainer is model-agnostic: a model is called as ``model(*inputs)`` and returns logits
(B, C); the loss is cross-entropy (a softmax layer with categorical cross-entropy on one-hot
targets, as in the tutorial's Keras model, is the same function). It never prints: everything
it has to say goes to callbacks (:mod:`rnnlab.train.callbacks`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel

from rnnlab.config import TrainConfig
from rnnlab.train.loader import IGNORE_INDEX, Batches
from rnnlab.train.schedule import learning_rate, make_optimizer

__all__ = ["TrainState", "Trainer", "DivergenceError", "evaluate", "fit"]


class DivergenceError(FloatingPointError):
    """The loss or the gradient became NaN or infinite; the weights were not updated."""


def _zero_sums() -> dict[str, float]:
    return {"loss": 0.0, "correct": 0, "n": 0, "seconds": 0.0, "batches": 0}


@dataclass
class TrainState:
    """Where a run stands; JSON-ready, saved in every checkpoint.

    ``epoch`` epochs are complete and ``batch`` batches of the next one are done; ``sums`` hold
    that epoch's running loss sum, correct count and example count so far.
    """

    epoch: int = 0
    batch: int = 0
    step: int = 0
    samples: int = 0
    train_seconds: float = 0.0
    wall_seconds: float = 0.0  # inside fit: training, validation and callbacks
    sums: dict[str, float] = field(default_factory=lambda: _zero_sums())
    history: list[dict[str, Any]] = field(default_factory=list)
    best_val_accuracy: float | None = None
    best_epoch: int | None = None
    plateau: dict[str, float] = field(
        default_factory=lambda: {"best": math.inf, "bad": 0, "scale": 1.0}
    )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainState:
        return cls(**values)


Reduce = Callable[[list[float]], list[float]]  # sums over processes (data parallelism)


@torch.no_grad()
def evaluate(model: nn.Module, batches: Batches, reduce: Reduce | None = None) -> dict[str, float]:
    """Mean cross-entropy ``loss`` and ``accuracy`` of ``model`` over ``batches`` (eval mode;
    the model's previous mode is restored). ``reduce`` sums ``[loss_sum, correct, n]`` over
    processes when each sees a shard of the data (e.g. an ``all_reduce``)."""
    was_training = model.training
    model.eval()
    loss_sum, correct, n = 0.0, 0, 0
    try:
        for inputs, targets in batches:
            logits = model(*inputs)  # (B, C)
            loss_sum += F.cross_entropy(logits, targets, reduction="sum").item()
            correct += int((logits.argmax(-1) == targets).sum())
            n += int((targets != IGNORE_INDEX).sum())  # stand-ins (see Batches) count for nothing
    finally:
        model.train(was_training)
    if reduce is not None:
        loss_sum, correct, n = reduce([loss_sum, correct, n])
    if n == 0:
        raise ValueError("evaluate expected at least one example, got none")
    return {"loss": loss_sum / n, "accuracy": correct / n}


class Trainer:
    """Fits ``model`` with the optimisation settings of ``config``; see :func:`fit`.

    Callbacks are objects with any of ``on_train_begin(trainer)``, ``on_epoch_begin(trainer,
    epoch)``, ``on_step_end(trainer, logs)``, ``on_epoch_end(trainer, record)`` and
    ``on_train_end(trainer)``; they are called in order. ``trainer.state``,
    ``trainer.model``, ``trainer.optimizer`` and ``trainer.num_batches`` are theirs to read.

    For data parallelism (:mod:`rnnlab.distributed`), ``model`` is wrapped in
    DistributedDataParallel, the batches are per-rank shards of the global batches, and
    ``reduce`` sums ``[loss_sum, correct, n]`` over processes at every step: step logs, epoch
    records, validation metrics and ``state`` (what a checkpoint holds) are all global.
    """

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig,
        callbacks: Sequence[Any] = (),
        reduce: Reduce | None = None,
    ):
        self.model, self.config, self.callbacks = model, config, list(callbacks)
        self.reduce = reduce
        self.optimizer = make_optimizer(model, config)
        self.state = TrainState()
        self.num_batches = 0
        self.world_size = 1  # processes sharing each batch; fit reads it from the batches

    @property
    def module(self) -> nn.Module:
        """The model itself, without its data-parallel wrapper: what checkpoints hold."""
        return self.model.module if isinstance(self.model, DistributedDataParallel) else self.model

    def _emit(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            method = getattr(callback, hook, None)
            if method is not None:
                method(self, *args)

    def fit(self, train: Batches, val: Batches | None = None) -> TrainState:
        """Train until ``config.epochs`` epochs are complete, from wherever ``state`` stands."""
        cfg, state = self.config, self.state
        self.num_batches, self.world_size = len(train), train.world_size
        total_steps = cfg.epochs * self.num_batches
        wall_base, wall_start = state.wall_seconds, time.perf_counter()

        def tick() -> None:
            state.wall_seconds = wall_base + time.perf_counter() - wall_start

        self._emit("on_train_begin")
        for epoch in range(state.epoch, cfg.epochs):
            self.model.train()
            self._emit("on_epoch_begin", epoch)
            started = time.perf_counter()
            for inputs, targets in train.epoch(epoch, start=state.batch):
                lr = learning_rate(cfg, state.step, epoch, total_steps, state.plateau["scale"])
                logs = self._step(inputs, targets, lr, epoch)
                seconds = time.perf_counter() - started  # this step, with fetching its batch
                state.train_seconds += seconds
                state.sums["seconds"] += seconds
                tick()
                self._emit("on_step_end", logs)
                started = time.perf_counter()
            record = self._end_epoch(epoch, val)
            tick()
            self._emit("on_epoch_end", record)
        self._emit("on_train_end")
        return state

    def _step(
        self, inputs: tuple[Tensor, ...], targets: Tensor, lr: float, epoch: int
    ) -> dict[str, Any]:
        cfg, state = self.config, self.state
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        logits = self.model(*inputs)  # (B, C)
        correct = int((logits.detach().argmax(-1) == targets).sum())
        if self.reduce is None:
            loss = F.cross_entropy(logits, targets, label_smoothing=cfg.label_smoothing)
            loss_value, n = loss.item(), len(targets)
        else:
            local = F.cross_entropy(
                logits, targets, label_smoothing=cfg.label_smoothing, reduction="sum"
            )
            n_local = int((targets != IGNORE_INDEX).sum())  # stand-ins count for nothing
            loss_sum, correct, n = self.reduce([local.item(), correct, n_local])
            # DDP averages gradients over the processes; scaling each local sum by
            # world_size / n (n global) makes that average the gradient of the global mean
            loss, loss_value = local * (self.world_size / n), loss_sum / n
        where = f"epoch {epoch + 1}, step {state.step + 1}"
        if not math.isfinite(loss_value):  # global under data parallelism: all ranks stop
            raise DivergenceError(
                f"training loss became {loss_value} at {where}; the weights "
                "were not updated (try a lower train.lr or "
                "train.clip_grad_norm)"
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        max_norm = cfg.clip_grad_norm or math.inf
        grad_norm = float(nn.utils.clip_grad_norm_(self.model.parameters(), max_norm))
        if not math.isfinite(grad_norm):
            raise DivergenceError(
                f"gradient norm became {grad_norm} at {where}; the weights "
                "were not updated (try train.clip_grad_norm or a lower lr)"
            )
        self.optimizer.step()
        state.step += 1
        state.batch += 1
        state.samples += n
        state.sums["loss"] += loss_value * n
        state.sums["correct"] += correct
        state.sums["n"] += n
        state.sums["batches"] += 1
        return {
            "epoch": epoch + 1,
            "step": state.step,
            "batch": state.batch,
            "loss": loss_value,
            "accuracy": correct / n,
            "lr": lr,
            "grad_norm": grad_norm,
        }

    def _end_epoch(self, epoch: int, val: Batches | None) -> dict[str, Any]:
        cfg, state = self.config, self.state
        sums = state.sums
        loss_sum, correct, n = sums["loss"], sums["correct"], sums["n"]  # global (see _step)
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "step": state.step,
            "loss": loss_sum / max(1, n),
            "accuracy": correct / max(1, n),
            "seconds": sums["seconds"],
            "ms_per_step": 1000 * sums["seconds"] / max(1, sums["batches"]),
        }
        if val is not None:
            started = time.perf_counter()
            metrics = evaluate(self.module, val, self.reduce)
            record["val_loss"], record["val_accuracy"] = metrics["loss"], metrics["accuracy"]
            record["val_seconds"] = time.perf_counter() - started
            if state.best_val_accuracy is None or metrics["accuracy"] > state.best_val_accuracy:
                state.best_val_accuracy, state.best_epoch = metrics["accuracy"], epoch + 1
        if cfg.lr_schedule == "plateau":
            watched = record.get("val_loss", record["loss"])
            plateau = state.plateau
            if watched < plateau["best"]:
                plateau["best"], plateau["bad"] = watched, 0
            else:
                plateau["bad"] += 1
                if plateau["bad"] >= cfg.patience:
                    plateau["scale"] *= cfg.gamma
                    plateau["bad"] = 0
        record["improved"] = state.best_epoch == epoch + 1
        state.history.append(record)
        state.epoch, state.batch = epoch + 1, 0
        state.sums = _zero_sums()
        return record


def fit(
    model: nn.Module,
    train_data: Batches,
    val_data: Batches | None,
    config: TrainConfig,
    callbacks: Sequence[Any] = (),
    state: TrainState | None = None,
) -> Trainer:
    """Train ``model`` on ``train_data`` for ``config.epochs`` epochs, evaluating ``val_data``
    after each; returns the :class:`Trainer` (its ``state`` holds history and counters).

    Seed torch (``torch.manual_seed``) before building the model for a reproducible run; the
    batch order depends only on the loader's seed and the epoch.
    """
    trainer = Trainer(model, config, callbacks)
    if state is not None:
        trainer.state = state
    trainer.fit(train_data, val_data)
    return trainer
