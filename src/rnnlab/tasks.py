"""From a configuration's ``data`` section to tensors: train, validation and test splits.

Shape legend: N examples, T time (image rows or word positions), I features per step.

* ``mnist``: images (N, H, W) uint8 become sequences (N, T=H, I=W) in [0, 1] read row by row.
  ``data.path`` loads any dataset in the MNIST IDX layout instead (e.g. Fashion-MNIST).
* ``imdb``: reviews encoded like ``keras.datasets.imdb.load_data(num_words, skip_top)`` and
  padded/truncated like ``keras.utils.pad_sequences(maxlen, padding, truncating)``, after
  dropping punctuation tokens if ``data.punctuation`` is false (Keras's own IMDB encoding has
  no punctuation; :mod:`rnnlab.data`'s tokeniser keeps it); inputs are
  ``(ids (N, T) int64, lengths (N,) int64)``, the number of real (unpadded) ids per review.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from rnnlab.config import Config, ConfigError
from rnnlab.data import (
    get_word_index,
    load_idx_dataset,
    load_imdb,
    load_mnist,
    mnist_to_sequences,
    pad_sequences,
)
from rnnlab.train.loader import Split

__all__ = ["TaskData", "drop_ids", "encode_reviews", "load_task_data", "punctuation_ids"]

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class TaskData:
    """The splits of a task (``val`` None when validation is off) and, for text, the word
    index (``{word: rank}``) a new review is encoded with."""

    train: Split
    val: Split | None
    test: Split
    word_index: dict[str, int] | None = None


def punctuation_ids(word_index: dict[str, int], index_from: int = 3) -> set[int]:
    """Ids of the tokens without a letter or digit (``,`` ``.`` ``!`` ``(`` ...)."""
    return {
        rank + index_from
        for word, rank in word_index.items()
        if not any(ch.isalnum() for ch in word)
    }


def drop_ids(sequences: list[list[int]] | np.ndarray, ids: set[int]) -> list[list[int]]:
    """Each sequence without the given ids (the start marker is never among them)."""
    return [[i for i in seq if i not in ids] for seq in sequences]


def encode_reviews(
    sequences: list[list[int]] | np.ndarray, config: Config
) -> tuple[torch.Tensor, torch.Tensor]:
    """Id lists -> ``(ids (N, maxlen) int64, lengths (N,) int64)`` with the config's padding."""
    d = config.data
    ids = pad_sequences(
        list(sequences), maxlen=d.maxlen, padding=d.padding, truncating=d.truncating, dtype="int64"
    )
    lengths = np.array([min(max(len(s), 1), d.maxlen) for s in sequences], dtype=np.int64)
    return torch.from_numpy(ids), torch.from_numpy(lengths)


def _images(config: Config, data_dir: PathLike | None) -> tuple[Split, Split]:
    d, m = config.data, config.model
    if d.path:
        (x_train, y_train), (x_test, y_test) = load_idx_dataset(d.path)
    else:
        (x_train, y_train), (x_test, y_test) = load_mnist(data_dir, sample=d.sample)
    if x_train.ndim != 3 or x_train.shape[2] != m.input_size:
        raise ConfigError(
            f"model.input_size: expected the image width {x_train.shape[2:]}, got {m.input_size}"
        )
    for y in (y_train, y_test):
        if y.min() < 0 or y.max() >= m.num_classes:
            raise ConfigError(
                f"model.num_classes: expected more than the largest label "
                f"{int(y.max())}, got {m.num_classes}"
            )
    train = Split((mnist_to_sequences(x_train),), torch.as_tensor(y_train))
    test = Split((mnist_to_sequences(x_test),), torch.as_tensor(y_test))
    return train, test


def _texts(config: Config, data_dir: PathLike | None) -> tuple[Split, Split, dict[str, int]]:
    d = config.data
    (x_train, y_train), (x_test, y_test) = load_imdb(
        num_words=d.num_words, skip_top=d.skip_top, data_dir=data_dir, sample=d.sample
    )
    word_index = get_word_index(data_dir, sample=d.sample)
    if not d.punctuation:
        dropped = punctuation_ids(word_index)
        x_train, x_test = drop_ids(x_train, dropped), drop_ids(x_test, dropped)
    train = Split(encode_reviews(x_train, config), torch.as_tensor(y_train))
    test = Split(encode_reviews(x_test, config), torch.as_tensor(y_test))
    return train, test, word_index


def load_task_data(config: Config, data_dir: PathLike | None = None) -> TaskData:
    """The splits of ``config``'s dataset; ``data_dir`` as in :func:`rnnlab.data.load_mnist`
    (ignored for ``data.sample`` and ``data.path``)."""
    d = config.data
    if d.dataset == "mnist" and config.model.kind != "sequence":
        raise ConfigError("model.kind: expected 'sequence' for data.dataset='mnist', got 'text'")
    if d.dataset == "imdb" and config.model.kind != "text":
        raise ConfigError("model.kind: expected 'text' for data.dataset='imdb', got 'sequence'")
    word_index = None
    if d.dataset == "mnist":
        train, test = _images(config, data_dir)
    else:
        train, test, word_index = _texts(config, data_dir)
    val: Split | None = test if d.validation == "test" else None
    if d.validation == "holdout":
        if d.holdout >= len(train):
            raise ConfigError(
                f"data.holdout: expected fewer than the {len(train)} training "
                f"examples, got {d.holdout}"
            )
        g = torch.Generator().manual_seed(config.train.seed)
        perm = torch.randperm(len(train), generator=g)
        train, val = train.subset(perm[d.holdout :]), train.subset(perm[: d.holdout])
    return TaskData(train, val, test, word_index)
