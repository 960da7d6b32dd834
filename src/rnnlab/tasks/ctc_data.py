"""The CTC task's splits: spoken digit strings from FSDD, or lines of MNIST digits.

Shape legend: N strings, T frames, F features per frame (mel bands, or a line's pixel rows),
L the longest string (``data.max_digits``).

Every split is built only from its own examples: the training recordings (images) minus the
``data.holdout`` held out for validation (drawn with ``data.holdout_seed``), the held-out
ones, and the test recordings (images), each with its own seed derived from
``data.string_seed``. A split is ``Split((x (N, T, F), lengths (N,)), targets (N, L))`` with
targets padded with -1; line images are kept as uint8 (a quarter of the memory) and made
[0, 1] floats batch by batch (:func:`model_inputs`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from rnnlab.config import Config, ConfigError
from rnnlab.data import load_mnist
from rnnlab.data.audio import features
from rnnlab.data.fsdd import load_fsdd, official_split
from rnnlab.data.strings import DigitString, spoken_strings, written_lines
from rnnlab.tasks.base import PathLike, TaskData
from rnnlab.tasks.speech import feature_spec, pad_frames
from rnnlab.train import Split

__all__ = ["load_strings", "model_inputs", "string_targets"]


def string_targets(strings: list[DigitString], max_digits: int) -> Tensor:
    """(N, L) int64 digits, padded with -1."""
    out = torch.full((len(strings), max_digits), -1, dtype=torch.long)
    for k, s in enumerate(strings):
        out[k, : len(s.digits)] = torch.tensor(s.digits)
    return out


def model_inputs(x: Tensor) -> Tensor:
    """Stored frames -> float32 model input (uint8 line pixels to [0, 1])."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x


def _holdout(n: int, config: Config) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held out) indexes of n training examples."""
    d = config.data
    if d.validation != "holdout":
        return np.arange(n), np.arange(0)
    if d.holdout >= n:
        raise ConfigError(
            f"data.holdout: expected fewer than the {n} training examples, got {d.holdout}"
        )
    perm = np.random.default_rng(d.holdout_seed).permutation(n)
    return np.sort(perm[d.holdout :]), np.sort(perm[: d.holdout])


def _spoken(config: Config, data_dir: PathLike | None) -> dict[str, list[DigitString]]:
    d = config.data
    train, test = official_split(load_fsdd(data_dir, sample=d.sample), d.speakers)
    kept, held = _holdout(len(train), config)
    parts = {"train": [train[i] for i in kept], "val": [train[i] for i in held], "test": test}
    counts = {"train": d.strings, "val": d.eval_strings, "test": d.eval_strings}
    return {
        name: spoken_strings(recs, counts[name], d.string_seed * 3 + k, d.sample_rate, d.max_digits)
        for k, (name, recs) in enumerate(parts.items())
        if recs
    }


def _written(config: Config, data_dir: PathLike | None) -> dict[str, list[DigitString]]:
    d = config.data
    (x_train, y_train), (x_test, y_test) = load_mnist(data_dir, sample=d.sample)
    kept, held = _holdout(len(x_train), config)
    parts = {
        "train": (x_train[kept], y_train[kept], kept),
        "val": (x_train[held], y_train[held], held),
        "test": (x_test, y_test, np.arange(len(x_test))),
    }
    counts = {"train": d.strings, "val": d.eval_strings, "test": d.eval_strings}
    out = {}
    for k, (name, (x, y, index)) in enumerate(parts.items()):
        if len(x):
            lines = written_lines(x, y, counts[name], d.string_seed * 3 + k, d.max_digits)
            # sources name images by their index in MNIST's own split, not in the subset
            out[name] = [
                DigitString(s.digits, tuple(str(int(index[int(i)])) for i in s.sources), s.signal)
                for s in lines
            ]
    return out


def build_strings(config: Config, data_dir: PathLike | None) -> dict[str, list[DigitString]]:
    """``{"train", "val" (with a holdout), "test"}`` -> the built strings (lines)."""
    if config.data.dataset == "fsdd":
        return _spoken(config, data_dir)
    return _written(config, data_dir)


def to_split(strings: list[DigitString], config: Config) -> Split:
    d = config.data
    if d.dataset == "fsdd":
        spec = feature_spec(config)
        x, lengths = pad_frames([features(s.signal, spec) for s in strings])
    else:  # a line (H, W) is read column by column: W frames of H pixels
        x, lengths = pad_frames([s.signal.T for s in strings], dtype=torch.uint8)
    return Split((x, lengths), string_targets(strings, d.max_digits))


def load_strings(config: Config, data_dir: PathLike | None) -> TaskData:
    """The task's splits (see the module docstring); ``artifacts`` keep nothing."""
    built = build_strings(config, data_dir)
    splits: dict[str, Any] = {name: to_split(s, config) for name, s in built.items()}
    val = splits.get("val")
    if config.data.validation == "test":
        val = splits["test"]
    return TaskData(splits["train"], val, splits["test"])
