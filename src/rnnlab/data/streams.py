"""Token streams as contiguous columns, and the windows of truncated backpropagation through time.

A stream of N ids is cut into B equal contiguous pieces, one per row of a batch-first (B, L)
tensor, ``L = N // B`` (the last ``N % B`` ids are dropped), as char-rnn and PyTorch's
``word_language_model`` example do (the example keeps them as (L, B) columns; rnnlab is batch
first, so row b is piece b)::

    ids   a b c d e f g h i j k l m        batchify(ids, 3) -> [[a b c d]
                                                              [e f g h]
                                                              [i j k l]]   (m dropped)

Windows walk the rows together, ``bptt`` steps at a time: inputs ``data[:, t : t + bptt]`` and
targets shifted by one, ``data[:, t + 1 : t + 1 + bptt]``. Row b of one window continues row b
of the previous one, so a model may carry its state from window to window (detached, for
truncated BPTT). For data parallelism, each of W ranks takes B / W whole rows
(:func:`shard_rows`): contiguous streams of its own, the state of each row staying on one rank.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

from rnnlab.data.errors import DataError

# batchify and windows are rnnlab's public API (re-exported by rnnlab.data); the others serve the
# language-model task
__all__ = ["batchify", "check_stream", "num_windows", "shard_rows", "windows"]


def batchify(ids: np.ndarray | Tensor, batch_size: int) -> Tensor:
    """(N,) ids -> (B, N // B) contiguous rows (see the module docstring), dtype kept.

    Raises:
        DataError: fewer than 2 ids per row (no input/target pair at all).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batchify expected a positive int batch_size, got {batch_size!r}")
    data = torch.as_tensor(ids)  # (N,)
    if data.dim() != 1:
        raise ValueError(f"batchify expected ids of shape (N,), got {tuple(data.shape)}")
    length = data.shape[0] // batch_size
    if length < 2:
        raise DataError(
            f"token stream: expected at least {2 * batch_size} tokens for batch size "
            f"{batch_size} (2 per row), got {data.shape[0]}"
        )
    return data[: length * batch_size].reshape(batch_size, length)  # (B, L)


def check_stream(ids: np.ndarray | Tensor, batch_size: int, bptt: int, name: str) -> None:
    """Raise :class:`DataError` unless stream ``name`` fills at least one whole window, i.e. has
    ``batch_size * (bptt + 1)`` tokens (bptt inputs plus the shifted target per row)."""
    need = batch_size * (bptt + 1)
    if len(ids) < need:
        raise DataError(
            f"{name}: expected at least {need} tokens for batch size {batch_size} x bptt {bptt} "
            f"(+1 for the shifted target), got {len(ids)} (use a smaller batch or bptt, or more "
            "text)"
        )


def shard_rows(data: Tensor, rank: int, world_size: int) -> Tensor:
    """Rows ``rank * B/W .. (rank + 1) * B/W`` of (B, L) ``data``: (B / W, L), for rank ``rank``
    of ``world_size``. ``batch_size`` is the global batch, so the ranks together see what one
    process would."""
    B = data.shape[0]
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"shard_rows expected 0 <= rank < world_size, got {rank} of {world_size}")
    if B % world_size:
        raise ValueError(
            f"shard_rows expected a batch size divisible by world_size {world_size}, got {B}"
        )
    per_rank = B // world_size
    return data[rank * per_rank : (rank + 1) * per_rank]  # (B/W, L)


def num_windows(length: int, bptt: int, drop_last: bool = False) -> int:
    """How many windows :func:`windows` yields over rows of ``length`` ids."""
    steps = length - 1  # the last id is only ever a target
    return steps // bptt if drop_last else -(-steps // bptt)


def windows(
    data: Tensor, bptt: int, start: int = 0, drop_last: bool = False
) -> Iterator[tuple[Tensor, Tensor]]:
    """``(inputs, targets)`` windows of (B, L) ``data``, both (B, t) int64 with ``t = bptt``,
    except a shorter last window unless ``drop_last``; targets are the inputs shifted by one.

    ``start`` skips the first ``start`` windows (to resume mid-epoch).
    """
    if isinstance(bptt, bool) or not isinstance(bptt, int) or bptt < 1:
        raise ValueError(f"windows expected a positive int bptt, got {bptt!r}")
    if data.dim() != 2:
        raise ValueError(f"windows expected data of shape (B, L), got {tuple(data.shape)}")
    length = data.shape[1]
    for k in range(start, num_windows(length, bptt, drop_last)):
        t0 = k * bptt
        t = min(bptt, length - 1 - t0)
        inputs = data[:, t0 : t0 + t].long()  # (B, t)
        targets = data[:, t0 + 1 : t0 + 1 + t].long()  # (B, t)
        yield inputs, targets
