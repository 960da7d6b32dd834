"""Keras-compatible ``pad_sequences`` and ``to_categorical`` in plain numpy.

Both follow ``keras.utils.pad_sequences`` / ``keras.utils.to_categorical`` (Keras 3) value for
value, dtype for dtype; ``tests/test_data_sequence.py`` checks that against Keras itself on
hundreds of random cases. Invalid input raises ``ValueError`` with what was expected and what
came, where Keras sometimes fails with a numpy error or silently wraps negative labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike


def pad_sequences(
    sequences: Sequence[Any],
    maxlen: int | None = None,
    dtype: DTypeLike = "int32",
    padding: str = "pre",
    truncating: str = "pre",
    value: Any = 0.0,
) -> np.ndarray:
    """Pad (or truncate) sequences to one length; returns an array (len(sequences), maxlen, ...).

    Args:
        sequences: a list of sequences (lists or arrays; elements may themselves be arrays of
            one common shape, which becomes the trailing shape of the result).
        maxlen: the output length; default the longest sequence's length.
        dtype: dtype of the result (``object`` for strings of varying length).
        padding: ``"pre"`` puts ``value`` before each short sequence, ``"post"`` after it.
        truncating: ``"pre"`` drops the start of each long sequence, ``"post"`` its end.
        value: the padding value.

    Example: ``pad_sequences([[1], [2, 3], [4, 5, 6]], maxlen=2)`` -> ``[[0, 1], [2, 3], [5, 6]]``.
    """
    if padding not in ("pre", "post"):
        raise ValueError(f'pad_sequences expected padding "pre" or "post", got {padding!r}')
    if truncating not in ("pre", "post"):
        raise ValueError(f'pad_sequences expected truncating "pre" or "post", got {truncating!r}')
    if not hasattr(sequences, "__len__"):
        raise ValueError(f"pad_sequences expected a list of sequences, got {type(sequences)}")
    lengths: list[int] = []
    sample_shape: tuple[int, ...] | None = None  # fixed by the first non-empty sequence (Keras)
    for seq in sequences:
        if not hasattr(seq, "__len__"):
            raise ValueError(f"pad_sequences expected a list of sequences, got element {seq!r}")
        lengths.append(len(seq))
        if sample_shape is None and len(seq):
            sample_shape = np.asarray(seq).shape[1:]
    sample_shape = sample_shape or ()
    if maxlen is None:
        if not lengths:
            raise ValueError("pad_sequences expected maxlen or at least one sequence, got neither")
        maxlen = max(lengths)
    if maxlen < 0:
        raise ValueError(f"pad_sequences expected maxlen >= 0, got {maxlen}")
    is_text = np.issubdtype(dtype, np.str_) or np.issubdtype(dtype, np.bytes_)
    if isinstance(value, str) and dtype is not object and not is_text:
        raise ValueError(f"pad_sequences expected dtype=object for a string value, got {dtype}")

    out = np.full((len(sequences), maxlen) + sample_shape, value, dtype=dtype)
    for row, seq in enumerate(sequences):
        if not len(seq) or maxlen == 0:
            continue
        kept = np.asarray(seq[-maxlen:] if truncating == "pre" else seq[:maxlen], dtype=dtype)
        if kept.shape[1:] != sample_shape:
            raise ValueError(
                f"pad_sequences expected elements of shape {sample_shape} (from the first "
                f"non-empty sequence), got {kept.shape[1:]} in sequence {row}"
            )
        if padding == "post":
            out[row, : len(kept)] = kept
        else:
            out[row, -len(kept) :] = kept
    return out


def to_categorical(y: ArrayLike, num_classes: int | None = None) -> np.ndarray:
    """One-hot encode integer class labels; returns float64 of shape ``y.shape + (num_classes,)``.

    A trailing axis of size 1 is dropped first (labels of shape (N, 1) give (N, C)), as in Keras.
    ``num_classes`` defaults to ``max(y) + 1``.
    """
    labels = np.array(y, dtype="int64")
    shape = labels.shape
    if shape and shape[-1] == 1 and len(shape) > 1:
        shape = shape[:-1]
    labels = labels.reshape(-1)
    if not num_classes:
        if labels.size == 0:
            raise ValueError("to_categorical expected num_classes or at least one label, got none")
        num_classes = int(labels.max()) + 1
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"to_categorical expected labels in [0, {num_classes - 1}], got values in "
            f"[{labels.min()}, {labels.max()}]"
        )
    categorical = np.zeros((labels.size, num_classes))
    categorical[np.arange(labels.size), labels] = 1
    return categorical.reshape(shape + (num_classes,))
