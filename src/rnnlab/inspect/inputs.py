"""Inputs for ``inspect``, made by the run's task exactly as it made its training data, and the
model's prediction had the input stopped after each step.

Shape legend: N examples, T time (word positions or image rows), C classes.
"""

from __future__ import annotations

import os

import numpy as np
from torch import Tensor, nn

from rnnlab.config import Config
from rnnlab.inspect.trace import InspectError
from rnnlab.runs import load_run_data
from rnnlab.tasks import Example, get_task
from rnnlab.train import Split

__all__ = [
    "first_examples",
    "image_example",
    "prefix_probabilities",
    "test_split",
    "text_example",
]

PathLike = str | os.PathLike[str]


def text_example(config: Config, word_index: dict[str, int], text: str) -> Example:
    """A review encoded exactly as the text task encodes training data and ``predict`` inputs
    (:meth:`rnnlab.tasks.TextClassification.example`)."""
    if not isinstance(text, str) or not text.strip():
        raise InspectError(f"--text expected non-empty text, got {text!r}")
    return get_task(config).example(text, {"vocab.json": word_index})


def test_split(config: Config, run_dir: PathLike, data_dir: PathLike | None = None) -> Split:
    """The run's test split, from ``data_dir`` or by default the folder it was trained on."""
    return load_run_data(run_dir, data_dir, config)[1].test


def first_examples(config: Config, split: Split, count: int) -> tuple[tuple[Tensor, ...], Tensor]:
    """The first ``count`` examples' inputs and their real steps (N, T) bool: every row of an
    image; a review's words, not its padding (whether or not the model masks it)."""
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= len(split):
        raise InspectError(
            f"--stats-examples expected 1..{len(split)} (the test split), got {count!r}"
        )
    inputs = tuple(t[:count] for t in split.inputs)
    return inputs, get_task(config).real_steps(inputs)


def image_example(
    config: Config,
    run_dir: PathLike,
    image: PathLike | None = None,
    index: int | None = None,
    data_dir: PathLike | None = None,
) -> Example:
    """An image read row by row: from a file (PNG or .npy, see
    :func:`rnnlab.tasks.image.load_image`) or the test split's example ``index`` (loaded from
    ``data_dir``, by default the folder the run was trained on)."""
    if (image is None) == (index is None):
        raise InspectError(
            "inspect expected exactly one of --image FILE or --index N for an "
            f"image model, got {'both' if image is not None else 'neither'}"
        )
    task = get_task(config)
    if image is not None:
        return task.example(image, {})
    test = test_split(config, run_dir, data_dir)
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(test):
        raise InspectError(f"--index expected 0..{len(test) - 1} (the test split), got {index!r}")
    pixels = test.inputs[0][index].numpy()  # (T, I)
    return task.example((pixels, int(test.targets[index])), {})


def prefix_probabilities(
    model: nn.Module, config: Config, example: Example, chunk: int = 64
) -> np.ndarray:
    """(T, C) class probabilities had the input ended after each step (NaN at padding); see
    :meth:`rnnlab.tasks.classify.ClassificationTask.prefix_probabilities`."""
    return get_task(config).prefix_probabilities(model, example, chunk)
