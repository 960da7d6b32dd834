"""Using a trained run: evaluate it on a split, or run it on new inputs through its task's
hooks (reviews for text runs, image files for image runs)."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import Any

from rnnlab.runs import RunError, load_run, load_run_data
from rnnlab.runs.load import read_run_artifacts
from rnnlab.tasks import PredictError, get_task
from rnnlab.train import evaluate

__all__ = [
    "PredictError",
    "evaluate_run",
    "predict_each",
    "predict_images",
    "predict_inputs",
    "predict_texts",
]
PathLike = str | os.PathLike[str]


def evaluate_run(
    run_dir: PathLike,
    data_dir: PathLike | None = None,
    checkpoint: str = "best",
    split: str = "test",
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Loss and the task's metrics of a run's checkpoint on ``split`` ("test", "val" or
    "train"), from ``data_dir`` or by default the data the run was trained on.
    ``progress(done, total)`` is called with the batches done (a command's progress bar)."""
    if split not in ("test", "val", "train"):
        raise ValueError(f"evaluate_run expected split 'test', 'val' or 'train', got {split!r}")
    config, model, meta = load_run(run_dir, checkpoint)
    task, data = load_run_data(run_dir, data_dir, config)
    examples = {"test": data.test, "val": data.val, "train": data.train}[split]
    if examples is None:
        raise RunError(f"{run_dir}: expected a validation split, got data.validation='none'")
    source = task.batches(examples, training=False)
    total, done = len(source), 0

    def step(k: int) -> None:
        nonlocal done
        done += k
        progress(done, total)

    metrics = evaluate(model, source.epoch(0), task, progress=step if progress else None)
    unit = "tokens" if task.throughput_unit == "tokens" else "examples"
    bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
    if bad:
        raise RunError(
            f"{run_dir}: expected finite figures from checkpoint {meta['tag']}, got "
            f"{', '.join(f'{k} {v}' for k, v in bad.items())} on {split} (the model's outputs "
            "overflow: train again with a lower train.lr)"
        )
    return {
        "run": str(run_dir),
        "checkpoint": meta["tag"],
        "step": meta["state"]["step"],
        "split": split,
        # what the task counts: "examples" for a classifier, "tokens" for a language model
        unit: len(examples),
        "unit": unit,
        **metrics,
    }


_FLAGS = {"text": "--text or --file", "image": "--image", "audio": "--wav"}


def _a(word: str) -> str:
    return ("an " if word[:1] in "aeiou" else "a ") + word


def _open(run_dir: PathLike, checkpoint: str, input_kind: str | None, verb: str = "predict"):
    """``(task, model, meta, artifacts)`` of a run for ``verb`` on ``input_kind`` inputs."""
    config, model, meta = load_run(run_dir, checkpoint)
    task = get_task(config)
    task.check_verb(verb, str(run_dir))
    if input_kind is not None and task.reads != input_kind:
        raise PredictError(
            f"{run_dir}: {_FLAGS.get(input_kind, input_kind)} expected {_a(input_kind)} "
            f"model, got {_a(task.reads)} model (use {_FLAGS.get(task.reads, task.reads)})"
        )
    return task, model, meta, read_run_artifacts(run_dir, task, meta)


def _checked(results: list[dict[str, Any]], meta: dict[str, Any]) -> list[dict[str, Any]]:
    for k, result in enumerate(results):
        if not all(math.isfinite(p) for p in result.get("probabilities", ())):
            raise PredictError(
                f"input {k + 1}: expected finite probabilities from checkpoint {meta['tag']}, "
                f"got {result['probabilities']} (the model's outputs overflow: train again "
                "with a lower train.lr)"
            )
    return results


def predict_inputs(
    run_dir: PathLike,
    raw: Sequence[Any],
    checkpoint: str = "best",
    input_kind: str | None = None,
    **options: Any,
) -> list[dict[str, Any]]:
    """Run a run's model on raw inputs (what its task's ``prepare`` takes, with ``options``);
    one result per input. ``input_kind`` ("text", "image"): refuse a run whose task takes
    another kind of input. One bad input fails the call (see :func:`predict_each`)."""
    task, model, meta, artifacts = _open(run_dir, checkpoint, input_kind)
    prepared = task.prepare(list(raw), artifacts, **options)
    return _checked(task.predict(model, prepared), meta)


def predict_each(
    run_dir: PathLike,
    raw: Sequence[Any],
    checkpoint: str = "best",
    input_kind: str | None = None,
    verb: str = "predict",
    decode: dict[str, Any] | None = None,
    **options: Any,
) -> list[dict[str, Any]]:
    """As :func:`predict_inputs`, but an input the model cannot take does not fail the others:
    its result is ``{"input": ..., "error": "expected ..., got ..."}``. Errors about the run
    itself (no checkpoint, non-finite outputs) still raise. ``verb``: the command asking
    (``"transcribe"`` for a CTC run); ``decode``: options of the task's ``predict`` (``beam``)."""
    task, model, meta, artifacts = _open(run_dir, checkpoint, input_kind, verb)
    results: list[dict[str, Any] | None] = [None] * len(raw)
    good = []
    for k, item in enumerate(raw):
        try:
            task.prepare([item], artifacts, **options)
            good.append(k)
        except PredictError as exc:  # reported as this input's result, not swallowed
            message = str(exc).removeprefix("review 1: ")
            results[k] = {"input": item if isinstance(item, str) else str(item), "error": message}
    if good:
        prepared = task.prepare([raw[k] for k in good], artifacts, **options)
        answers = _checked(task.predict(model, prepared, **(decode or {})), meta)
        for k, result in zip(good, answers, strict=True):
            results[k] = result
    return [r for r in results if r is not None]


def predict_texts(
    run_dir: PathLike, texts: list[str], checkpoint: str = "best"
) -> list[dict[str, Any]]:
    """Classify reviews with a text run, encoded exactly as its training data was; each result
    says whether the review was ``truncated`` to the run's ``data.maxlen`` words."""
    return predict_inputs(run_dir, texts, checkpoint, "text")


def predict_images(
    run_dir: PathLike, paths: list[PathLike], checkpoint: str = "best", invert: str = "auto"
) -> list[dict[str, Any]]:
    """Classify image files with an image run; ``invert`` as in
    :meth:`rnnlab.tasks.ImageClassification.prepare`."""
    return predict_inputs(run_dir, paths, checkpoint, "image", invert=invert)
