"""The one place where ``rnnlab serve`` touches models: every call into the model code goes
through :class:`ServedRun`, which asks the run's task (:mod:`rnnlab.tasks`: ``example``,
``prefix_probabilities``, ``label_names``, ``read_artifacts``) and records gates with
:func:`rnnlab.inspect.trace.record_gates`. The web layer (:mod:`rnnlab.serve.app`) only sees plain
dicts and lists. Language models (``model.kind = "lm"``) are served through
:mod:`rnnlab.serve.language`.

Shape legend: T time (word positions or image rows), H hidden units, C classes.

What the web layer calls, and what the coordinator rewires:

* :func:`load_served_run` -- load a run once (config, model in eval mode, vocabulary) and
  :meth:`ServedRun.warm_up` it;
* :attr:`ServedRun.kind` -- "text", "image" or "lm": which page and which analyses;
* :meth:`ServedRun.describe` -- what the pages need to know about a run (kind, classes, layers);
* :meth:`ServedRun.classify` -- text or a 28-row image -> the final prediction and the class
  probabilities had the input ended after each token or row;
* :meth:`ServedRun.trace` -- the same plus every recorded gate (T, H) of one layer/direction and
  each unit's activity;
* :meth:`ServedRun.generate` and :meth:`ServedRun.score` -- language models (the steps are in
  :mod:`rnnlab.serve.language`); classifiers raise :class:`UnsupportedError` for them, and
  language models for classify and trace (answered 400 naming the run's kind).

Models are not thread-safe here (:func:`rnnlab.inspect.trace.record_gates` switches the layers to
their reference loop while it records), so every model call holds the run's ``lock``; a
generation takes it per token, so other requests interleave with a long stream.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rnnlab.inspect.trace import activity, record_gates, recurrent_layers
from rnnlab.runs import load_run
from rnnlab.serve import language
from rnnlab.tasks import Example, PredictError, Task, get_task
from rnnlab.tasks.image import IMAGE_ROWS, light_background

__all__ = ["InputError", "ServedRun", "UnsupportedError", "load_served_run"]

PathLike = str | os.PathLike[str]


class InputError(ValueError):
    """An input the model cannot read; ``field`` names the request field at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class UnsupportedError(ValueError):
    """An analysis the run's kind of model does not offer (e.g. generate on a classifier)."""


def _rounded(values: np.ndarray, digits: int = 4) -> list:
    """numpy -> nested lists of floats, NaN as None (JSON has no NaN)."""
    out = np.round(values.astype(np.float64), digits)
    return np.where(np.isnan(out), None, out).tolist()


@dataclass
class ServedRun:
    """A run loaded once for serving: its task (:mod:`rnnlab.tasks`, which encodes inputs and
    computes the prefix predictions) and the task's artifacts (a text run's or a language model's
    vocabulary). ``kind`` is "text" (review classifier), "image" (digit classifier) or "lm"
    (language model)."""

    name: str
    run_dir: Path
    config: Any
    model: torch.nn.Module
    meta: dict[str, Any]
    task: Task
    artifacts: dict[str, Any]
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def kind(self) -> str:
        return {"text": "text", "lm": "lm"}.get(self.config.model.kind, "image")

    @property
    def class_names(self) -> list[str]:
        return [] if self.kind == "lm" else self.task.label_names()

    def describe(self) -> dict[str, Any]:
        """What a page needs to draw controls: kind, cell, layers, directions, hidden sizes,
        class names, the image size (image runs), the vocabulary (language models: its
        ``level``, ``size`` and ``figure``, bpc or perplexity) and the checkpoint served."""
        m = self.config.model
        out = {
            "name": self.name,
            "kind": self.kind,
            "cell": m.cell,
            "layers": len(m.hidden_sizes),
            "directions": 2 if m.bidirectional else 1,
            "hidden_sizes": list(m.hidden_sizes),
            "classes": self.class_names,
            "checkpoint": self.meta["tag"],
            "step": self.meta["state"]["step"],
            "analyses": ["generate", "score"] if self.kind == "lm" else ["classify", "trace"],
        }
        if self.kind == "image":
            out["image_shape"] = [IMAGE_ROWS, m.input_size]
        if self.kind == "lm":
            vocab = self.artifacts["vocab.json"]
            out.update(level=vocab.level, vocab_size=len(vocab), figure=self.task.figure)
        return out

    # -- inputs -------------------------------------------------------------------------------

    def _example(self, text: str | None, image: np.ndarray | None, invert: str) -> Example:
        """The request's input as the model reads it; exactly one of ``text`` or ``image``, the
        one matching the run's kind."""
        if self.kind == "lm":
            raise UnsupportedError(
                f"run {self.name!r} is a language model: classify and trace expect a "
                "classifier run (use generate or score)"
            )
        if self.kind == "text":
            if text is None:
                raise InputError(
                    "text", f"run {self.name!r} is a text model: expected 'text', got an image"
                )
            try:
                return self.task.example(text, self.artifacts)
            except PredictError as exc:
                raise InputError("text", str(exc)) from exc
        if image is None:
            raise InputError(
                "image", f"run {self.name!r} is an image model: expected 'image' or 'png', got text"
            )
        shape = (IMAGE_ROWS, self.config.model.input_size)
        if image.shape != shape:
            raise InputError("image", f"expected a {shape[0]}x{shape[1]} image, got {image.shape}")
        if invert == "always" or (invert == "auto" and light_background(image)):
            image = 1.0 - image  # MNIST is light on dark
        return self.task.example((image, None), self.artifacts)

    def _prediction(self, example: Example) -> dict[str, Any]:
        probabilities = self.task.prefix_probabilities(self.model, example)  # (T, C)
        steps = np.flatnonzero(example.real)
        final = probabilities[steps[-1]]  # (C,)
        best = int(np.argmax(final))
        out = {
            "label": best,
            "label_name": self.class_names[best],
            "probability": float(final[best]),
            "probabilities": _rounded(final, 6),
            "classes": self.class_names,
            "steps": [example.labels[k] for k in steps],
            "step_probabilities": _rounded(probabilities[steps]),  # (n, C), real steps only
        }
        if example.oov is not None:
            out["oov"] = [bool(example.oov[k]) for k in steps]
        if example.image is not None:
            out["image"] = _rounded(example.image, 3)  # as read, after any inversion
        return out

    # -- analyses -----------------------------------------------------------------------------

    def classify(
        self, text: str | None = None, image: np.ndarray | None = None, invert: str = "auto"
    ) -> dict[str, Any]:
        """The prediction for ``text`` (text runs) or a (28, I) ``image`` in [0, 1] (image
        runs), and ``step_probabilities`` (n, C): the prediction had the input ended after each
        of its n real steps (``steps`` names them: words, or ``row k``)."""
        example = self._example(text, image, invert)
        with self.lock:
            return self._prediction(example)

    def trace(
        self,
        text: str | None = None,
        image: np.ndarray | None = None,
        invert: str = "auto",
        layer: int = 0,
        direction: int = 0,
    ) -> dict[str, Any]:
        """:meth:`classify` plus ``gates``: name -> (n, H) over the real steps of ``layer`` in
        ``direction`` (LSTM i, f, g, o, c, h; GRU r, z, n, h; RNN h), ``activity`` (H,) (the
        spread of each unit's c or h) and ``top_units``, most active first."""
        example = self._example(text, image, invert)
        layers = len(self.config.model.hidden_sizes)
        if not 0 <= layer < layers:
            raise InputError("layer", f"expected 0..{layers - 1}, got {layer}")
        directions = 2 if self.config.model.bidirectional else 1
        if not 0 <= direction < directions:
            raise InputError("direction", f"expected 0..{directions - 1}, got {direction}")
        with self.lock:
            out = self._prediction(example)
            gates = record_gates(self.model, example.inputs, layer, direction)  # name -> (T, H)
        real = example.real
        act = activity(gates, real)  # (H,)
        out.update(
            layer=layer,
            direction=direction,
            cell=self.config.model.cell,
            gates={name: _rounded(value[real]) for name, value in gates.items()},
            activity=_rounded(act, 6),
            top_units=[int(u) for u in np.argsort(-act, kind="stable")],
        )
        return out

    def generate(
        self,
        prompt: str,
        max_tokens: int,
        temperature: float,
        top_k: int,
        unit: int,
        *,
        layer: int = 0,
        state: str | None = None,
        seed: int | None = None,
        every_unit: bool = False,
    ) -> Iterator[dict[str, Any]]:
        """Language models: an iterator of one dict per generated token ``{"token", "id",
        "probability", "top": [{"token", "probability"}] (the 5 likeliest), "value": the
        ``state`` ("c", the default for LSTMs, or "h") of ``unit`` in ``layer`` after it}``,
        stepping the carried state (never re-reading the prompt) and taking the lock per step.
        ``top_k`` 0 samples from the whole vocabulary; ``seed`` makes the draw repeatable;
        ``every_unit`` adds ``values``, every unit's value of ``layer`` (H,).
        Everything is checked here, before the first token (:class:`InputError` naming the
        field)."""
        model = self._language_model("generate")
        state = state or ("c" if model.cell == "lstm" else "h")
        try:
            language.check_generation(model, temperature, top_k, layer, unit, state)
            ids, _, _ = self.task.prompt_ids(prompt, "prompt")  # type: ignore[attr-defined]
        except language.LanguageInputError as exc:
            raise InputError(exc.field, str(exc)) from exc
        except PredictError as exc:
            raise InputError("prompt", str(exc)) from exc
        return language.generate_tokens(
            self.task,  # type: ignore[arg-type]
            model,
            self.lock,
            ids,
            max_tokens,
            temperature,
            top_k,
            layer,
            unit,
            state,
            seed,
            every_unit,
        )

    def score(self, text: str) -> dict[str, Any]:
        """Language models: ``text``'s ``tokens`` and their natural-log probabilities
        (``log_probs``, each given the text before it and the start of a line), the mean
        ``loss``, ``bpc`` (characters) or ``perplexity`` (words) (``figure`` says which),
        ``count`` and the ``unknown`` tokens."""
        model = self._language_model("score")
        try:
            return language.score_text(self.task, model, self.lock, text)  # type: ignore[arg-type]
        except language.LanguageInputError as exc:
            raise InputError(exc.field, str(exc)) from exc

    def _language_model(self, analysis: str) -> Any:
        if self.kind != "lm":
            raise UnsupportedError(
                f"run {self.name!r} is a {self.kind} classifier: {analysis} expects a language "
                "model run"
            )
        return self.model

    def warm_up(self) -> None:
        """Run one input through both paths (the model's own and the recording one), so the
        first request does not pay for building the compiled kernels (which can take a minute
        the first time on a machine)."""
        if self.kind == "lm":
            language.warm_up(self.model, self.lock)
        elif self.kind == "text":
            vocab = self.artifacts["vocab.json"]
            word = min(vocab, key=vocab.get)  # the most frequent word
            self.trace(text=word)
        else:
            self.trace(image=np.zeros((IMAGE_ROWS, self.config.model.input_size), np.float32))


def load_served_run(run_dir: PathLike, name: str, checkpoint: str = "best") -> ServedRun:
    """Load ``run_dir``'s ``checkpoint`` once (see :func:`rnnlab.runs.load_run`) and warm it up
    (:meth:`ServedRun.warm_up`); a classifier whose layers record no gates
    (``model.backend='torch'``) is refused here, before serving."""
    run_dir = Path(run_dir)
    config, model, meta = load_run(run_dir, checkpoint)
    if config.model.kind != "lm":
        recurrent_layers(model)  # InspectError now rather than on the first trace
    task = get_task(config)
    served = ServedRun(name, run_dir, config, model, meta, task, task.read_artifacts(run_dir))
    served.warm_up()
    return served
