"""What the trainer asks of a task: the loss and metric sums of a batch, and what "best" means.

The trainer (:mod:`rnnlab.train.loop`) knows nothing about the task. Every batch it calls
``objective.batch_loss(model, inputs, targets, carry, training)`` and gets a :class:`BatchLoss`:
the loss summed over the batch's ``count`` examples (or tokens), metric numerators
(``sums``, e.g. ``{"correct": 57}``) and the recurrent ``carry`` to feed the next batch. It
adds sums over an epoch, reduces them across processes, and turns them into named metrics with
``objective.metrics(sums)`` (the mean ``loss`` is the trainer's own). ``objective.selection``
names the validation metric that picks the best checkpoint and its direction.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, Protocol

from torch import Tensor, nn

__all__ = ["Batch", "BatchLoss", "BatchSource", "Carry", "Objective", "Selection"]

Batch = tuple[tuple[Tensor, ...], Tensor]  # (model inputs, targets)
Carry = tuple[Tensor, ...]  # a recurrent state carried from batch to batch (stateful tasks)


@dataclass(frozen=True)
class Selection:
    """The best checkpoint is the epoch whose validation ``metric`` (a name that
    :meth:`Objective.metrics` returns, or ``"loss"``) is the ``mode`` ("max" or "min")."""

    metric: str
    mode: Literal["max", "min"]

    def better(self, value: float, best: float | None) -> bool:
        if best is None:
            return True
        return value > best if self.mode == "max" else value < best


@dataclass
class BatchLoss:
    """One batch's contribution: ``total`` the loss summed over its ``count`` counted examples
    (a scalar tensor that backpropagates), ``sums`` metric numerators (floats), ``carry`` the
    state for the next batch (None for tasks of independent examples)."""

    total: Tensor
    count: int
    sums: dict[str, float]
    carry: Carry | None = None


class Objective(Protocol):
    """A task as the trainer sees it (:class:`rnnlab.tasks.Task` is one)."""

    selection: Selection

    def batch_loss(
        self,
        model: nn.Module,
        inputs: tuple[Tensor, ...],
        targets: Tensor,
        carry: Carry | None,
        training: bool,
    ) -> BatchLoss:
        """The loss and metric sums of one batch (``training``: with the training-only loss
        terms, e.g. label smoothing)."""
        ...

    def metrics(self, sums: dict[str, float]) -> dict[str, float]:
        """Named metrics from summed ``sums`` (which also hold ``"loss"``, the loss sum, and
        ``"n"``, the count), in the order they are logged; ``"loss"`` itself is not among
        them."""
        ...


class BatchSource(Protocol):
    """An epoch's batches, replayable from any batch (see :class:`rnnlab.train.Batches`)."""

    world_size: int

    def __len__(self) -> int: ...

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Batch]: ...
