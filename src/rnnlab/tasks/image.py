"""Image classification read row by row: MNIST (``data.dataset = "mnist"``), or any dataset in
the MNIST IDX layout via ``data.path`` (e.g. Fashion-MNIST).

Shape legend: N images, T time (image rows), I features per step (pixels per row), C classes.

Images (N, T, I) uint8 become sequences in [0, 1], read row by row by a
:class:`~rnnlab.models.SequenceClassifier`. New images for ``predict``/``inspect`` are PNG or
.npy files (:func:`load_image`); dark-on-light ones can be inverted to MNIST's light on dark.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from rnnlab.config import ConfigError
from rnnlab.data import load_idx_dataset, load_mnist, mnist_to_sequences
from rnnlab.models import SequenceClassifier, check_bf16
from rnnlab.tasks.base import (
    Example,
    Floors,
    PathLike,
    PredictError,
    Prepared,
    TaskData,
    carve_holdout,
)
from rnnlab.tasks.classify import ClassificationTask
from rnnlab.train import Split

__all__ = ["IMAGE_ROWS", "INVERT_CHOICES", "ImageClassification", "light_background", "load_image"]

IMAGE_ROWS = 28  # MNIST's height: the time steps (the width is model.input_size)
Invert = Literal["auto", "always", "never"]
INVERT_CHOICES: tuple[str, ...] = ("auto", "always", "never")


def load_image(path: PathLike, size: tuple[int, int] = (IMAGE_ROWS, IMAGE_ROWS)) -> np.ndarray:
    """A grey image in [0, 1] of shape ``size`` from a PNG (colour is averaged to grey, alpha
    ignored) or a .npy array (uint8 0..255 or float in [0, 1]). MNIST digits are light on dark;
    see :func:`light_background` for the others."""
    path = Path(path)
    if not path.is_file():
        raise PredictError(
            f"{path}: expected an image file, got "
            f"{'a directory' if path.exists() else 'no such file'}"
        )
    try:
        if path.suffix.lower() == ".npy":
            image = _load_npy(path)
        else:
            import matplotlib.image

            image = matplotlib.image.imread(str(path))
    except PredictError:
        raise
    except (OSError, ValueError, SyntaxError) as exc:
        raise PredictError(
            f"{path}: expected a PNG or .npy image, got {type(exc).__name__}: {exc}"
        ) from exc
    if image.ndim == 3 and image.shape[-1] in (3, 4):
        image = image[..., :3].mean(-1)
    if image.dtype == np.uint8:
        image = image / 255.0
    image = np.asarray(image, dtype=np.float32)
    if image.shape != size:
        raise PredictError(f"{path}: expected a {size[0]}x{size[1]} image, got shape {image.shape}")
    if not np.isfinite(image).all() or image.min() < 0 or image.max() > 1:
        raise PredictError(
            f"{path}: expected pixel values in [0, 1] (or uint8), got "
            f"[{image.min()}, {image.max()}]"
        )
    return image


def _load_npy(path: Path) -> np.ndarray:
    """A .npy file of numbers; anything else (other bytes, pickled data, an object array) is
    refused without unpickling it, and without numpy's advice to load it unsafely."""
    with open(path, "rb") as handle:
        magic = handle.read(6)
    if magic != b"\x93NUMPY":
        raise PredictError(
            f"{path}: expected a .npy file (starting with \\x93NUMPY), got other bytes "
            f"({magic!r}...); rnnlab never unpickles input files"
        )
    try:
        image = np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "pickle" not in str(exc) and "Object arrays" not in str(exc):
            raise
        raise PredictError(
            f"{path}: expected a .npy array of numbers, got an object array (pickled data); "
            "rnnlab never unpickles input files: save the pixels as a uint8 or float array"
        ) from None
    real = (np.integer, np.floating, np.bool_)
    if not any(np.issubdtype(image.dtype, kind) for kind in real):
        raise PredictError(
            f"{path}: expected a .npy array of real numbers, got dtype {image.dtype}"
        )
    return image


def light_background(image: np.ndarray) -> bool:
    """Whether a grey (rows, cols) image in [0, 1] has a light border (mean above 0.5): then it
    is dark on light, the opposite of MNIST, whose borders are black."""
    border = np.concatenate([image[0], image[-1], image[1:-1, 0], image[1:-1, -1]])
    return bool(border.mean() > 0.5)


class ImageClassification(ClassificationTask):
    """Images read row by row into a :class:`~rnnlab.models.SequenceClassifier`."""

    kind = "image"
    input_kind = "image"
    floors = Floors(
        verbs=("predict",),
        reads="image",
        serve="rnnlab.serve.classifier:ImageRun",
        inspect="rnnlab.inspect.classifier:command",
        export="rnnlab.export.classifier:classifier_graph",
    )

    @property
    def size(self) -> tuple[int, int]:
        return IMAGE_ROWS, self.config.model.input_size

    def check_config(self) -> None:
        if self.config.data.dataset != "mnist":
            raise ConfigError(
                f"data.dataset: expected 'mnist' for model.kind='image', "
                f"got {self.config.data.dataset!r}"
            )

    def load(self, data_dir: PathLike | None = None) -> TaskData:
        d, m = self.config.data, self.config.model
        if d.path:
            (x_train, y_train), (x_test, y_test) = load_idx_dataset(d.path)
        else:
            (x_train, y_train), (x_test, y_test) = load_mnist(data_dir, sample=d.sample)
        if x_train.ndim != 3 or x_train.shape[2] != m.input_size:
            raise ConfigError(
                f"model.input_size: expected the image width {x_train.shape[2:]}, "
                f"got {m.input_size}"
            )
        for y in (y_train, y_test):
            if y.min() < 0 or y.max() >= m.num_classes:
                raise ConfigError(
                    f"model.num_classes: expected more than the largest label "
                    f"{int(y.max())}, got {m.num_classes}"
                )
        train = Split((mnist_to_sequences(x_train),), torch.as_tensor(y_train))
        test = Split((mnist_to_sequences(x_test),), torch.as_tensor(y_test))
        val = test if d.validation == "test" else None
        if d.validation == "holdout":
            train, val = carve_holdout(train, self.config)
        return TaskData(train, val, test)

    def build_model(self) -> nn.Module:
        model = SequenceClassifier(self.config.model)
        check_bf16(model, self.config.model)
        return model

    def example_inputs(self, batch_size: int) -> tuple[Tensor, ...]:
        return (torch.zeros(batch_size, *self.size),)  # (B, T, I)

    def prepare(
        self, raw: Sequence[PathLike], artifacts: dict[str, Any], invert: Invert = "auto"
    ) -> Prepared:
        """Image files -> (N, T, I). ``invert="auto"`` turns dark-on-light images (a light
        border) into MNIST's light on dark; each note's ``inverted`` says whether it did."""
        if invert not in INVERT_CHOICES:
            raise PredictError(f"invert expected one of {INVERT_CHOICES}, got {invert!r}")
        if not raw:
            raise PredictError("predict expected at least one image, got none")
        images = [load_image(p, self.size) for p in raw]  # each (T, I) in [0, 1]
        flags = [invert == "always" or (invert == "auto" and light_background(x)) for x in images]
        x = np.stack([1.0 - x if f else x for x, f in zip(images, flags, strict=True)])
        notes = [{"input": str(p), "inverted": f} for p, f in zip(raw, flags, strict=True)]
        return Prepared((torch.from_numpy(x),), notes)

    def example(self, raw: PathLike | tuple[np.ndarray, int], artifacts: dict[str, Any]) -> Example:
        """An image file, or ``(pixels (T, I), target)`` from a split, read row by row."""
        if isinstance(raw, tuple):
            pixels, target = raw
        else:
            pixels, target = load_image(raw, self.size), None  # (T, I) in [0, 1]
        x = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))[None]  # (1, T, I)
        T = x.shape[1]
        labels = [f"row {k}" for k in range(T)]
        return Example((x,), np.ones(T, dtype=bool), labels, image=pixels, target=target)

    def real_steps(self, inputs: tuple[Tensor, ...]) -> Tensor:
        x = inputs[0]  # (N, T, I)
        return torch.ones(x.shape[:2], dtype=torch.bool)

    def prefix_batches(self, example: Example, chunk: int) -> list[tuple[Tensor, ...]]:
        x = example.inputs[0]  # (1, T, I)
        n = int(example.real.sum())
        prefixes = x.expand(n, -1, -1)  # (N, T, I); steps past each length are skipped
        lengths = torch.arange(1, n + 1)  # (N,)
        return [(prefixes[k : k + chunk], lengths[k : k + chunk]) for k in range(0, n, chunk)]
