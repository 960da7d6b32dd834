"""The training loop: :class:`Trainer` (``fit``), :func:`evaluate`, and the state a checkpoint
needs to resume a run exactly.

The trainer knows nothing about the task: the loss, the metrics, what "best" means and any
recurrent state carried from batch to batch come from an :class:`~rnnlab.train.objective.Objective`
(a :class:`rnnlab.tasks.Task`), the batches from a :class:`~rnnlab.train.objective.BatchSource`.
It never prints: everything it has to say goes to callbacks (:mod:`rnnlab.train.callbacks`).
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from rnnlab.config import TrainConfig
from rnnlab.faults import fault_point
from rnnlab.train.objective import Batch, BatchLoss, BatchSource, Carry, Objective
from rnnlab.train.schedule import group_rate, learning_rate, make_optimizer

__all__ = ["TrainState", "Trainer", "DivergenceError", "evaluate", "fit"]


class DivergenceError(FloatingPointError):
    """The loss, the gradient or the weights became NaN or infinite, or the loss stayed far
    above its start (``train.divergence_factor`` for ``train.divergence_window`` steps); the
    weights were not updated and no checkpoint was written from them."""


def _zero_sums() -> dict[str, float]:
    return {"loss": 0.0, "n": 0, "seconds": 0.0, "batches": 0}


@dataclass
class TrainState:
    """Where a run stands, saved in every checkpoint: everything but ``carry`` as JSON,
    ``carry`` (the recurrent state a stateful task hands from batch to batch, None otherwise)
    as tensors.

    ``epoch`` epochs are complete and ``batch`` batches of the next one are done; ``sums`` hold
    that epoch's running loss sum, count and the task's metric numerators so far. ``best`` is
    ``{"metric": "val_accuracy", "value": ..., "epoch": ...}`` once validation has run.
    ``stopped`` is ``"time_limit"`` once ``train.time_limit`` ended the run early.
    """

    epoch: int = 0
    batch: int = 0
    step: int = 0
    samples: int = 0
    train_seconds: float = 0.0
    wall_seconds: float = 0.0  # inside fit: training, validation and callbacks
    sums: dict[str, float] = field(default_factory=lambda: _zero_sums())
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None
    plateau: dict[str, float] = field(
        default_factory=lambda: {"best": math.inf, "bad": 0, "scale": 1.0}
    )
    # the first step's loss and how many steps in a row the loss has been far above it
    divergence: dict[str, Any] = field(default_factory=lambda: {"start": None, "above": 0})
    carry: Carry | None = None
    stopped: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON part (``carry`` is left out: checkpoints store it as tensors)."""
        return dataclasses.asdict(dataclasses.replace(self, carry=None)) | {"carry": None}

    @classmethod
    def from_dict(cls, values: dict[str, Any], carry: Carry | None = None) -> TrainState:
        values = {k: v for k, v in values.items() if k != "carry"}
        if "best_val_accuracy" in values:  # checkpoints written before metrics were generic
            value, epoch = values.pop("best_val_accuracy"), values.pop("best_epoch", None)
            best = {"metric": "val_accuracy", "value": value, "epoch": epoch}
            values["best"] = None if value is None else best
        return cls(**values, carry=carry)


Reduce = Callable[[list[float]], list[float]]  # sums over processes (data parallelism)


def _detach(carry: Carry | None) -> Carry | None:
    """Truncated backpropagation through time: the carry's values go on, its graph does not."""
    return None if carry is None else tuple(t.detach() for t in carry)


def _add(sums: dict[str, float], more: dict[str, float]) -> None:
    for key, value in more.items():
        sums[key] = sums.get(key, 0) + value


def _reduced(reduce: Reduce | None, loss_sum: float, n: float, sums: dict[str, float]):
    """``(loss_sum, n, sums)`` summed over processes (unchanged for one process)."""
    if reduce is None:
        return loss_sum, n, sums
    keys = list(sums)
    loss_sum, n, *values = reduce([loss_sum, n, *(sums[k] for k in keys)])
    return loss_sum, n, dict(zip(keys, values, strict=True))


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[Batch],
    objective: Objective,
    reduce: Reduce | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, float]:
    """Mean ``loss`` and the objective's metrics of ``model`` over ``batches`` (eval mode; the
    model's previous mode is restored). A carry goes from batch to batch, starting from None.
    ``reduce`` sums the totals over processes when each sees a shard of the data (e.g. an
    ``all_reduce``); ``progress(1)`` is called after each batch (a command's progress bar)."""
    was_training = model.training
    model.eval()
    loss_sum, n, sums, carry = 0.0, 0, {}, None
    try:
        for inputs, targets in batches:
            out = objective.batch_loss(model, inputs, targets, carry, training=False)
            loss_sum += out.total.item()
            n += out.count  # stand-ins (see Batches) count for nothing
            _add(sums, out.sums)
            carry = out.carry
            fault_point("evaluate")
            if progress is not None:
                progress(1)
    finally:
        model.train(was_training)
    loss_sum, n, sums = _reduced(reduce, loss_sum, n, sums)
    if n == 0:
        raise ValueError("evaluate expected at least one example, got none")
    return {"loss": loss_sum / n, **objective.metrics({**sums, "loss": loss_sum, "n": n})}


class Trainer:
    """Fits ``model`` to ``objective`` with the optimisation settings of ``config``; see
    :func:`fit`.

    Callbacks are objects with any of ``on_train_begin(trainer)``, ``on_epoch_begin(trainer,
    epoch)``, ``on_step_end(trainer, logs)``, ``on_epoch_end(trainer, record)`` and
    ``on_train_end(trainer)``; they are called in order. ``trainer.state``, ``trainer.model``,
    ``trainer.objective``, ``trainer.optimizer`` and ``trainer.num_batches`` are theirs to read.

    For data parallelism (:mod:`rnnlab.distributed`), ``model`` is wrapped in
    DistributedDataParallel, the batches are per-rank shards of the global batches, and
    ``reduce`` sums the loss, count and metric sums over processes at every step: step logs,
    epoch records, validation metrics and ``state`` (what a checkpoint holds) are all global.
    """

    def __init__(
        self,
        model: nn.Module,
        objective: Objective,
        config: TrainConfig,
        callbacks: Sequence[Any] = (),
        reduce: Reduce | None = None,
    ):
        self.model, self.objective, self.config = model, objective, config
        self.callbacks, self.reduce = list(callbacks), reduce
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

    def fit(self, train: BatchSource, val: BatchSource | None = None) -> TrainState:
        """Train until ``config.epochs`` epochs are complete (``epochs`` 0: until
        ``config.time_limit``), from wherever ``state`` stands.
        The carry starts each epoch at None and is detached after every step.

        With ``config.time_limit`` (seconds of training, as ``state.train_seconds`` counts
        them), the step that reaches it is the last: the epoch so far ends there as a whole
        one does (record, validation, callbacks) and ``state.stopped`` says why."""
        cfg, state = self.config, self.state
        self.num_batches, self.world_size = len(train), train.world_size
        total_steps = cfg.epochs * self.num_batches
        wall_base, wall_start = state.wall_seconds, time.perf_counter()

        def tick() -> None:
            state.wall_seconds = wall_base + time.perf_counter() - wall_start

        self._emit("on_train_begin")
        last = cfg.epochs or sys.maxsize  # epochs 0: the time limit ends the run
        for epoch in range(state.epoch, last if state.stopped is None else 0):
            self.model.train()
            if state.batch == 0:
                state.carry = None
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
                if cfg.time_limit and self._out_of_time():
                    state.stopped = "time_limit"  # a run resumed before the epoch closed
                    break  # stops again after its first step
                started = time.perf_counter()
            record = self._end_epoch(epoch, val)
            tick()
            self._emit("on_epoch_end", record)
            if state.stopped is not None:
                break
        self._emit("on_train_end")
        return state

    def _out_of_time(self) -> bool:
        """Whether ``train.time_limit`` is reached; under data parallelism, on any rank (all
        ranks stop at the same step)."""
        over = float(self.state.train_seconds >= self.config.time_limit)
        return (over if self.reduce is None else self.reduce([over])[0]) > 0

    def _loss(self, out: BatchLoss) -> tuple[Tensor, float, float, dict[str, float]]:
        """``(loss to backpropagate, global mean loss, global count, global sums)``."""
        if self.reduce is None:
            loss = out.total / out.count  # the batch mean
            return loss, loss.item(), out.count, out.sums
        loss_sum, n, sums = _reduced(self.reduce, out.total.item(), out.count, out.sums)
        # DDP averages gradients over the processes; scaling each local sum by
        # world_size / n (n global) makes that average the gradient of the global mean
        return out.total * (self.world_size / n), loss_sum / n, n, sums

    def _step(
        self, inputs: tuple[Tensor, ...], targets: Tensor, lr: float, epoch: int
    ) -> dict[str, Any]:
        cfg, state = self.config, self.state
        for group in self.optimizer.param_groups:
            group["lr"] = group_rate(group, lr, state.step, cfg)
        out = self.objective.batch_loss(self.model, inputs, targets, state.carry, training=True)
        loss, loss_value, n, sums = self._loss(out)
        where = f"epoch {epoch + 1}, step {state.step + 1}"
        if not math.isfinite(loss_value):  # global under data parallelism: all ranks stop
            raise DivergenceError(
                f"training loss became {loss_value} at {where}; the weights "
                "were not updated (try a lower train.lr or "
                "train.clip_grad_norm)"
            )
        self._watch_divergence(loss_value, where)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        max_norm = cfg.clip_grad_norm or math.inf
        grad_norm = float(nn.utils.clip_grad_norm_(self.model.parameters(), max_norm))
        fault_point("step")
        if not math.isfinite(grad_norm):
            raise DivergenceError(
                f"gradient norm became {grad_norm} at {where}; the weights "
                "were not updated (try train.clip_grad_norm or a lower lr)"
            )
        self.optimizer.step()
        state.carry = _detach(out.carry)
        state.step += 1
        state.batch += 1
        state.samples += n
        state.sums["loss"] += loss_value * n
        state.sums["n"] += n
        state.sums["batches"] += 1
        _add(state.sums, sums)
        return {
            "epoch": epoch + 1,
            "step": state.step,
            "batch": state.batch,
            "loss": loss_value,
            **self.objective.metrics({**sums, "loss": loss_value * n, "n": n}),
            "lr": lr,
            "grad_norm": grad_norm,
        }

    def _watch_divergence(self, loss: float, where: str) -> None:
        """Raise DivergenceError once the loss has stayed above ``divergence_factor`` times the
        first step's loss for ``divergence_window`` steps in a row (a finite but exploding run,
        e.g. ``train.lr=1e6``, whose loss reaches 1e7)."""
        cfg, watch = self.config, self.state.divergence
        if not (cfg.divergence_factor and cfg.divergence_window):
            return
        if watch["start"] is None:
            watch["start"] = loss
            return
        limit = cfg.divergence_factor * watch["start"]
        watch["above"] = watch["above"] + 1 if watch["start"] > 0 and loss > limit else 0
        if watch["above"] >= cfg.divergence_window:
            raise DivergenceError(
                f"training loss {loss:.4g} at {where} has stayed above {limit:.4g} "
                f"(train.divergence_factor={cfg.divergence_factor:g} times the first step's "
                f"loss {watch['start']:.4g}) for {watch['above']} steps "
                f"(train.divergence_window); the weights were not updated (try a lower "
                "train.lr or train.clip_grad_norm)"
            )

    def _end_epoch(self, epoch: int, val: BatchSource | None) -> dict[str, Any]:
        cfg, state = self.config, self.state
        sums = state.sums  # global (see _step)
        n = max(1, sums["n"])
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "step": state.step,
            "loss": sums["loss"] / n,
            **self.objective.metrics({**sums, "n": n}),
            "seconds": sums["seconds"],
            "ms_per_step": 1000 * sums["seconds"] / max(1, sums["batches"]),
        }
        if val is not None:
            started = time.perf_counter()
            metrics = evaluate(self.module, val.epoch(0), self.objective, self.reduce)
            record.update({f"val_{k}": v for k, v in metrics.items()})
            record["val_seconds"] = time.perf_counter() - started
            self._select(record, epoch)
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
        record["improved"] = state.best is not None and state.best["epoch"] == epoch + 1
        if state.stopped is not None:
            record["stopped"] = state.stopped
        state.history.append(record)
        state.epoch, state.batch = epoch + 1, 0
        state.sums = _zero_sums()
        return record

    def _select(self, record: dict[str, Any], epoch: int) -> None:
        """Update ``state.best`` with this epoch's validation metric if it is better."""
        selection, best = self.objective.selection, self.state.best
        name = f"val_{selection.metric}"
        if name not in record:
            raise KeyError(f"selection expected a validation metric {name!r}, got {sorted(record)}")
        if selection.better(record[name], None if best is None else best["value"]):
            self.state.best = {"metric": name, "value": record[name], "epoch": epoch + 1}


def fit(
    model: nn.Module,
    objective: Objective,
    train_data: BatchSource,
    val_data: BatchSource | None,
    config: TrainConfig,
    callbacks: Sequence[Any] = (),
    state: TrainState | None = None,
) -> Trainer:
    """Train ``model`` on ``train_data`` for ``config.epochs`` epochs, evaluating ``val_data``
    after each; returns the :class:`Trainer` (its ``state`` holds history and counters).

    Seed torch (``torch.manual_seed``) before building the model for a reproducible run; the
    batch order depends only on the loader's seed and the epoch.
    """
    trainer = Trainer(model, objective, config, callbacks)
    if state is not None:
        trainer.state = state
    trainer.fit(train_data, val_data)
    return trainer
