"""A language model's training streams: the windows of one token stream, and the trainer's carry
as the model's state (and back). Shape legend: N tokens, B rows, T bptt steps."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

from rnnlab.data.streams import batchify, num_windows, shard_rows, windows
from rnnlab.nn.cells import LSTMState
from rnnlab.nn.language_model import State
from rnnlab.nn.registry import layer_class
from rnnlab.train import Batch, Carry, Split

__all__ = ["StreamBatches", "stream_split", "to_carry", "to_state"]


class StreamBatches:
    """The windows of one token stream (a :class:`rnnlab.train.BatchSource`): (N,) ids cut
    into ``batch_size`` contiguous rows, this rank's ``batch_size / world_size`` of them, read
    ``bptt`` steps at a time. Every epoch is the same sequence of windows (a stateful model
    must see row b continue), so ``epoch`` only matters through ``start``."""

    def __init__(
        self, stream: Tensor, batch_size: int, bptt: int, rank: int = 0, world_size: int = 1
    ) -> None:
        self.data = shard_rows(batchify(stream, batch_size), rank, world_size)  # (B/W, N // B)
        self.bptt, self.world_size = bptt, world_size

    def __len__(self) -> int:
        return num_windows(self.data.shape[1], self.bptt)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        for inputs, targets in windows(self.data, self.bptt, start):  # (b, t) each
            yield (inputs,), targets

    def __iter__(self) -> Iterator[Batch]:
        return self.epoch(0)


def to_state(carry: Carry | None, cell: str) -> State | None:
    """The trainer's carry (a tuple of tensors) as the model's state, and back: :func:`to_carry`."""
    if carry is None:
        return None
    if cell == "lstm":
        return LSTMState(*carry)
    state_type = layer_class(cell).state_type  # a named tuple of states (xLSTM's), or None
    return state_type(*carry) if state_type is not None else carry[0]


def to_carry(state: State) -> Carry:
    return tuple(state) if isinstance(state, tuple) else (state,)


def stream_split(ids: np.ndarray) -> Split:
    """A token stream as a :class:`Split` of N one-token rows (inputs and targets share it;
    :class:`StreamBatches` makes the windows)."""
    stream = torch.from_numpy(np.ascontiguousarray(ids))  # (N,) small int dtype
    return Split((stream,), stream)
