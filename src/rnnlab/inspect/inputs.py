"""Turning a review or an image into exactly what the run's model reads, and asking the model
what it would predict had the input stopped after each step.

Shape legend: N prefixes, T time (word positions or image rows), I features per step, C classes.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from rnnlab.config import Config
from rnnlab.data import pad_sequences, tokenize
from rnnlab.inspect.trace import InspectError, softmax_rows
from rnnlab.models import step_mask
from rnnlab.predict import encode_texts, load_image
from rnnlab.tasks import punctuation_ids
from rnnlab.train.loader import Split

__all__ = [
    "Example",
    "first_examples",
    "image_example",
    "prefix_probabilities",
    "test_split",
    "text_example",
]

PathLike = str | os.PathLike[str]
START, OOV, PAD = "[START]", "[OOV]", "·"


@dataclass(frozen=True)
class Example:
    """One input as the model reads it: ``inputs`` (the model's positional arguments, batch of
    1), ``real`` (T,) bool, ``labels`` one per step, ``ids`` the real steps' word ids (text) or
    ``image`` (T, I) (images), and the true ``target`` when known."""

    inputs: tuple[Tensor, ...]
    real: np.ndarray
    labels: list[str]
    ids: list[int] | None = None
    image: np.ndarray | None = None
    target: int | None = None
    oov: list[bool] | None = None


def _word_labels(
    config: Config, word_index: dict[str, int], text: str
) -> tuple[list[int], list[str], list[bool]]:
    """The ids, words and out-of-vocabulary flags of :func:`rnnlab.predict.encode_texts`, step
    by step (words it drops are dropped here too), after the run's truncation."""
    d = config.data
    words = [w for w in tokenize(text) if w in word_index]
    ids, labels = [1], [START]  # encode_text's start marker, index_from 3
    for w in words:
        ids.append(word_index[w] + 3)
        labels.append(w)
    oov = [not (d.skip_top <= i < d.num_words) for i in ids]
    ids = [2 if bad else i for i, bad in zip(ids, oov, strict=True)]
    if not d.punctuation:  # as encode_texts: drop punctuation ids after the OOV replacement
        dropped = punctuation_ids(word_index)
        keep = [k for k, i in enumerate(ids) if i not in dropped]
        ids, labels, oov = [ids[k] for k in keep], [labels[k] for k in keep], [oov[k] for k in keep]
    if len(ids) > d.maxlen:
        keep = slice(-d.maxlen, None) if d.truncating == "pre" else slice(0, d.maxlen)
        ids, labels, oov = ids[keep], labels[keep], oov[keep]
    return ids, labels, oov


def text_example(config: Config, word_index: dict[str, int], text: str) -> Example:
    """A review encoded exactly as :func:`rnnlab.predict.encode_texts` encodes it. A model that
    masks padding reads only the real steps; one that does not (the tutorial's) reads the padded
    ``maxlen`` steps, padding marked not real."""
    if not isinstance(text, str) or not text.strip():
        raise InspectError(f"--text expected non-empty text, got {text!r}")
    ids, lengths = encode_texts(config, word_index, [text])  # (1, maxlen), (1,)
    word_ids, labels, oov = _word_labels(config, word_index, text)
    n, T = len(word_ids), ids.shape[1]
    real = np.zeros(T, dtype=bool)
    if config.data.padding == "post":
        real[:n] = True
    else:
        real[T - n :] = True
    assert ids[0, torch.from_numpy(real)].tolist() == word_ids, "ids differ from encode_texts'"
    if config.model.mask:  # padding changes nothing: read the real steps only
        ids, real = ids[:, torch.from_numpy(real)], np.ones(n, dtype=bool)
        full_labels, full_oov = labels, oov
    else:
        pads = [PAD] * (T - n)
        full_labels = labels + pads if config.data.padding == "post" else pads + labels
        full_oov = [False] * T
        for k, flag in zip(np.flatnonzero(real), oov, strict=True):
            full_oov[k] = flag
    return Example((ids, lengths), real, full_labels, ids=word_ids, oov=full_oov)


def _data_dir(run_dir: Path) -> str | None:
    info = run_dir / "run.json"
    if not info.is_file():
        return None
    return json.loads(info.read_text("utf-8")).get("data_dir")


def test_split(config: Config, run_dir: PathLike, data_dir: PathLike | None = None) -> Split:
    """The run's test split, from ``data_dir`` or by default the folder it was trained on."""
    from rnnlab.tasks import load_task_data

    root = data_dir if data_dir is not None else _data_dir(Path(run_dir))
    return load_task_data(config, root).test


def first_examples(config: Config, split: Split, count: int) -> tuple[tuple[Tensor, ...], Tensor]:
    """The first ``count`` examples' inputs and their real steps (N, T) bool: every row of an
    image; a review's words, not its padding (whether or not the model masks it)."""
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= len(split):
        raise InspectError(
            f"--stats-examples expected 1..{len(split)} (the test split), got {count!r}"
        )
    inputs = tuple(t[:count] for t in split.inputs)
    if config.model.kind != "text":
        x = inputs[0]  # (N, T, I)
        return inputs, torch.ones(x.shape[:2], dtype=torch.bool)
    ids, lengths = inputs  # (N, T), (N,)
    return inputs, step_mask(lengths, ids.shape[1], config.data.padding)


def image_example(
    config: Config,
    run_dir: PathLike,
    image: PathLike | None = None,
    index: int | None = None,
    data_dir: PathLike | None = None,
) -> Example:
    """An image read row by row: from a file (PNG or .npy, see
    :func:`rnnlab.predict.load_image`) or the test split's example ``index`` (loaded from
    ``data_dir``, by default the folder the run was trained on)."""
    if (image is None) == (index is None):
        raise InspectError(
            "inspect expected exactly one of --image FILE or --index N for an "
            f"image model, got {'both' if image is not None else 'neither'}"
        )
    rows, width = 28, config.model.input_size
    target = None
    if image is not None:
        pixels = load_image(image, (rows, width))  # (T, I) in [0, 1]
    else:
        test = test_split(config, run_dir, data_dir)
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(test):
            raise InspectError(
                f"--index expected 0..{len(test) - 1} (the test split), got {index!r}"
            )
        pixels = test.inputs[0][index].numpy()  # (T, I)
        target = int(test.targets[index])
    x = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))[None]  # (1, T, I)
    T = x.shape[1]
    return Example(
        (x,), np.ones(T, dtype=bool), [f"row {k}" for k in range(T)], image=pixels, target=target
    )


@torch.no_grad()
def prefix_probabilities(
    model: nn.Module, config: Config, example: Example, chunk: int = 64
) -> np.ndarray:
    """(T, C) class probabilities had the input ended after each step (NaN at padding): the
    model run on every prefix, each encoded as the model would read that shorter input. For a
    unidirectional model with ``"last"`` pooling this is the prediction from the state after
    that step; for a bidirectional one it is the prediction for the truncated input."""
    T = len(example.real)
    steps = np.flatnonzero(example.real)  # the real steps, in order
    out = np.full((T, config.model.num_classes), np.nan)
    if example.ids is None:  # image rows: post-padded prefixes with lengths
        x = example.inputs[0]  # (1, T, I)
        n = len(steps)
        prefixes = x.expand(n, -1, -1)  # (N, T, I); steps past each length are skipped
        lengths = torch.arange(1, n + 1)  # (N,)
        batches = [(prefixes[k : k + chunk], lengths[k : k + chunk]) for k in range(0, n, chunk)]
    else:
        d = config.data
        width = len(steps) if config.model.mask else d.maxlen
        seqs = [example.ids[: k + 1] for k in range(len(steps))]
        ids = torch.from_numpy(
            pad_sequences(
                seqs, maxlen=width, padding=d.padding, truncating=d.truncating, dtype="int64"
            )
        )  # (N, W)
        lengths = torch.tensor([len(s) for s in seqs])  # (N,)
        batches = [(ids[k : k + chunk], lengths[k : k + chunk]) for k in range(0, len(seqs), chunk)]
    probabilities = np.concatenate([softmax_rows(model(*b)) for b in batches])  # (N, C)
    out[steps] = probabilities
    return out
