"""Using a trained run: evaluate it on a split, classify new reviews or images.

Shape legend: N inputs, T time, C classes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from rnnlab.config import Config
from rnnlab.data import encode_text, pad_sequences
from rnnlab.run import RunError, load_run
from rnnlab.tasks import drop_ids, load_task_data, punctuation_ids
from rnnlab.train import Batches, evaluate

__all__ = [
    "PredictError",
    "encode_texts",
    "evaluate_run",
    "label_names",
    "light_background",
    "load_image",
    "load_vocab",
    "predict_images",
    "predict_texts",
]
PathLike = str | os.PathLike[str]


class PredictError(ValueError):
    """Input that a model cannot classify: empty, not text, unknown words only, wrong size."""


def label_names(dataset: str, num_classes: int) -> list[str]:
    if dataset == "imdb" and num_classes == 2:
        return ["negative", "positive"]
    return [str(k) for k in range(num_classes)]


def evaluate_run(
    run_dir: PathLike,
    data_dir: PathLike | None = None,
    checkpoint: str = "best",
    split: str = "test",
) -> dict[str, Any]:
    """Loss and accuracy of a run's checkpoint on ``split`` ("test", "val" or "train")."""
    if split not in ("test", "val", "train"):
        raise ValueError(f"evaluate_run expected split 'test', 'val' or 'train', got {split!r}")
    config, model, meta = load_run(run_dir, checkpoint)
    if data_dir is None:
        info_path = Path(run_dir) / "run.json"
        data_dir = (
            json.loads(info_path.read_text("utf-8")).get("data_dir")
            if info_path.is_file()
            else None
        )
    data = load_task_data(config, data_dir)
    examples = {"test": data.test, "val": data.val, "train": data.train}[split]
    if examples is None:
        raise RunError(f"{run_dir}: expected a validation split, got data.validation='none'")
    trim = config.data.padding if config.model.kind == "text" and config.model.mask else None
    batches = Batches(examples, config.train.eval_batch_size, bucket=trim is not None, trim=trim)
    metrics = evaluate(model, batches)
    return {
        "run": str(run_dir),
        "checkpoint": meta["tag"],
        "step": meta["state"]["step"],
        "split": split,
        "examples": len(examples),
        **metrics,
    }


@torch.no_grad()
def _classify(
    model: torch.nn.Module, inputs: tuple[torch.Tensor, ...], names: list[str]
) -> list[dict[str, Any]]:
    probabilities = torch.softmax(model(*inputs), dim=-1)  # (N, C)
    out = []
    for p in probabilities.tolist():
        label = int(np.argmax(p))
        out.append(
            {
                "label": label,
                "label_name": names[label],
                "probability": p[label],
                "probabilities": p,
            }
        )
    return out


def load_vocab(run_dir: PathLike) -> dict[str, int]:
    """The word index (``{word: rank}``) a text run was trained with."""
    path = Path(run_dir) / "vocab.json"
    if not path.is_file():
        raise RunError(f"{run_dir}: expected a text run with vocab.json, got no such file")
    return json.loads(path.read_text("utf-8"))


def encode_texts(
    config: Config, word_index: dict[str, int], texts: list[str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reviews -> ``(ids (N, maxlen) int64, lengths (N,))``, exactly as the run's training data
    (:func:`rnnlab.data.encode_text` with its options, then padded and truncated like it)."""
    d = config.data
    if not texts:
        raise PredictError("predict expected at least one review, got none")
    encoded, dropped = [], punctuation_ids(word_index)
    for k, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise PredictError(f"review {k + 1}: expected non-empty text, got {text!r}")
        ids = encode_text(text, word_index, num_words=d.num_words, skip_top=d.skip_top)
        if not d.punctuation:
            ids = drop_ids([ids], dropped)[0]
        if len(ids) <= 1:  # the start marker alone: no word the model was trained on
            raise PredictError(
                f"review {k + 1}: expected at least one known word, got none in {text[:60]!r}"
            )
        encoded.append(ids)
    ids = pad_sequences(
        encoded, maxlen=d.maxlen, padding=d.padding, truncating=d.truncating, dtype="int64"
    )  # (N, T)
    lengths = torch.tensor([min(len(s), d.maxlen) for s in encoded])  # (N,)
    return torch.from_numpy(ids), lengths


def predict_texts(
    run_dir: PathLike, texts: list[str], checkpoint: str = "best"
) -> list[dict[str, Any]]:
    """Classify reviews with a text run (encoded by :func:`encode_texts`)."""
    config, model, _ = load_run(run_dir, checkpoint)
    if config.model.kind != "text":
        raise PredictError(
            f"{run_dir}: --text expected a text model, got an image model (use --image)"
        )
    inputs = encode_texts(config, load_vocab(run_dir), texts)
    results = _classify(model, inputs, label_names(config.data.dataset, config.model.num_classes))
    for text, result in zip(texts, results, strict=True):
        result["input"] = text
    return results


Invert = Literal["auto", "always", "never"]
INVERT_CHOICES: tuple[str, ...] = ("auto", "always", "never")


def load_image(path: PathLike, size: tuple[int, int] = (28, 28)) -> np.ndarray:
    """A grey image in [0, 1] of shape ``size`` from a PNG (colour is averaged to grey, alpha
    ignored) or a .npy array (uint8 0..255 or float in [0, 1]). MNIST digits are light on dark;
    :func:`predict_images` can turn dark-on-light images around (:func:`light_background`)."""
    path = Path(path)
    if not path.is_file():
        raise PredictError(
            f"{path}: expected an image file, got "
            f"{'a directory' if path.exists() else 'no such file'}"
        )
    try:
        if path.suffix.lower() == ".npy":
            image = np.load(path, allow_pickle=False)
        else:
            import matplotlib.image

            image = matplotlib.image.imread(str(path))
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


def light_background(image: np.ndarray) -> bool:
    """Whether a grey (rows, cols) image in [0, 1] has a light border (mean above 0.5): then it
    is dark on light, the opposite of MNIST, whose borders are black."""
    border = np.concatenate([image[0], image[-1], image[1:-1, 0], image[1:-1, -1]])
    return bool(border.mean() > 0.5)


def predict_images(
    run_dir: PathLike, paths: list[PathLike], checkpoint: str = "best", invert: Invert = "auto"
) -> list[dict[str, Any]]:
    """Classify image files (see :func:`load_image`) with an image run. ``invert="auto"`` turns
    dark-on-light images (a light border) into MNIST's light on dark; each result's
    ``inverted`` says whether that happened."""
    if invert not in INVERT_CHOICES:
        raise PredictError(f"invert expected one of {INVERT_CHOICES}, got {invert!r}")
    config, model, _ = load_run(run_dir, checkpoint)
    if config.model.kind != "sequence":
        raise PredictError(
            f"{run_dir}: --image expected an image model, got a text model (use --text or --file)"
        )
    if not paths:
        raise PredictError("predict expected at least one image, got none")
    size = (28, config.model.input_size)
    raw = [load_image(p, size) for p in paths]  # each (T, I) in [0, 1]
    inverted = [invert == "always" or (invert == "auto" and light_background(x)) for x in raw]
    images = np.stack([1.0 - x if inv else x for x, inv in zip(raw, inverted, strict=True)])
    results = _classify(
        model,
        (torch.from_numpy(images),),
        label_names(config.data.dataset, config.model.num_classes),
    )
    for path, result, inv in zip(paths, results, inverted, strict=True):
        result["input"] = str(path)
        result["inverted"] = inv
    return results
