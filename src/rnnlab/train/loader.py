"""Deterministic mini-batches that a resumed run can replay from any batch.

Shape legend: N examples, B batch, T time, C classes.

The order of epoch ``e`` depends only on ``(seed, e)``: a ``torch.Generator`` seeded from both
draws it, so a run resumed at batch k of epoch e rebuilds the same order and skips the first k
batches, and the rest of the run sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from rnnlab.train.objective import Batch

__all__ = ["IGNORE_INDEX", "Batches", "Split"]

IGNORE_INDEX = -100  # the target of a stand-in example: cross-entropy's default ignore_index


@dataclass(frozen=True)
class Split:
    """Examples as tensors: ``inputs`` are the model's positional arguments, each with N rows
    (``(x,)`` for sequences (N, T, I); ``(ids, lengths)`` for texts (N, T), (N,)), ``targets``
    (N,) int64 class indices."""

    inputs: tuple[Tensor, ...]
    targets: Tensor

    def __post_init__(self) -> None:
        n = len(self.targets)
        for t in self.inputs:
            if len(t) != n:
                raise ValueError(f"Split expected inputs with {n} rows (as targets), got {len(t)}")

    def __len__(self) -> int:
        return len(self.targets)

    def subset(self, index: Tensor) -> Split:
        return Split(tuple(t[index] for t in self.inputs), self.targets[index])


class Batches:
    """Mini-batches of a :class:`Split`.

    Args:
        split: the examples.
        batch_size: the global batch size (the last batch of an epoch may be smaller).
        shuffle: draw a new order each epoch from ``(seed, epoch)``; else keep the stored order.
        seed: the base of every epoch's generator.
        bucket: group examples of similar length (``inputs[1]`` holds lengths): the shuffled
            order is cut into chunks of 50 batches, each sorted by length, then the batches are
            shuffled, so padding shrinks while every epoch still differs. Without ``shuffle``,
            all examples are sorted by length (for evaluation, where order does not matter).
        trim: for ``(ids, lengths)`` inputs, cut each batch to its longest sequence, removing
            padding on side ``"pre"`` or ``"post"`` (only valid for models that mask padding).
        rank, world_size: data parallelism; each rank takes ``batch[rank::world_size]`` of every
            global batch, so per-rank batches are ``batch_size / world_size``. A rank left
            with no example (a last batch smaller than the world) gets one stand-in example
            with target :data:`IGNORE_INDEX`: it still runs forward and backward, as
            DistributedDataParallel needs, and counts for nothing.
    """

    def __init__(
        self,
        split: Split,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        bucket: bool = False,
        trim: Literal["pre", "post"] | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"Batches expected batch_size >= 1, got {batch_size}")
        if batch_size % world_size:
            raise ValueError(
                f"Batches expected a batch size divisible by the world size {world_size}, "
                f"got {batch_size}"
            )
        if (bucket or trim) and len(split.inputs) < 2:
            raise ValueError(
                "Batches expected (ids, lengths) inputs for bucket/trim, got "
                f"{len(split.inputs)} input tensor(s)"
            )
        self.split, self.batch_size, self.shuffle, self.seed = split, batch_size, shuffle, seed
        self.bucket, self.trim, self.rank, self.world_size = bucket, trim, rank, world_size

    def __len__(self) -> int:
        return -(-len(self.split) // self.batch_size)

    def generator(self, epoch: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)

    def order(self, epoch: int) -> list[Tensor]:
        """The index tensor of every global batch of ``epoch``."""
        N, B = len(self.split), self.batch_size
        if not self.shuffle:  # evaluation: stored order, or sorted by length to trim padding
            order = (
                torch.argsort(self.split.inputs[1], stable=True) if self.bucket else torch.arange(N)
            )
            return list(order.split(B))
        g = self.generator(epoch)
        perm = torch.randperm(N, generator=g)  # (N,)
        if not self.bucket:
            return list(perm.split(B))
        lengths = self.split.inputs[1]
        batches: list[Tensor] = []
        for chunk in perm.split(50 * B):
            by_length = chunk[torch.argsort(lengths[chunk], stable=True)]
            batches.extend(by_length.split(B))
        shuffled = torch.randperm(len(batches), generator=g).tolist()
        return [batches[i] for i in shuffled]

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        """The batches of ``epoch`` from batch ``start`` on (earlier ones were consumed)."""
        for index in self.order(epoch)[start:]:
            shard = index[self.rank :: self.world_size]  # (B / world_size,)
            if len(shard) == 0:
                inputs, targets = self._take(index[:1])
                yield inputs, torch.full_like(targets, IGNORE_INDEX)
            else:
                yield self._take(shard)

    def __iter__(self) -> Iterator[Batch]:
        return self.epoch(0)

    def _take(self, index: Tensor) -> Batch:
        inputs = tuple(t[index] for t in self.split.inputs)
        if self.trim is not None:
            ids, lengths = inputs[0], inputs[1]
            L = int(lengths.max())
            ids = ids[:, -L:] if self.trim == "pre" else ids[:, :L]  # (B, L)
            inputs = (ids, lengths, *inputs[2:])
        return inputs, self.split.targets[index]
