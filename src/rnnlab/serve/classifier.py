"""The classifiers' part of ``rnnlab serve``: reviews (:class:`TextRun`, the ``text`` page) and
digits read row by row (:class:`ImageRun`, the ``digit`` page), with their two analyses:

* ``classify`` -- the final prediction and the class probabilities had the input ended after
  each token or row (``POST /api/runs/RUN/classify``);
* ``trace`` -- the same plus every recorded gate (T, H) of one layer/direction and each unit's
  activity (``POST /api/runs/RUN/trace``).

Shape legend: T time (word positions or image rows), H hidden units, C classes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from rnnlab.inspect.trace import activity, record_gates, recurrent_layers
from rnnlab.serve.models import InputError, Lookup, ServedRun, check_analysis, rounded
from rnnlab.serve.schemas import ClassifyRequest, TraceRequest, check_text, decode_image
from rnnlab.tasks import Example, PredictError
from rnnlab.tasks.image import light_background

__all__ = ["ClassifierRun", "ImageRun", "TextRun"]


class ClassifierRun(ServedRun):
    """What both classifiers share; subclasses say what they read (:meth:`example`)."""

    analyses: ClassVar[tuple[str, ...]] = ("classify", "trace")
    field: ClassVar[str] = "text"  # the request field this kind reads

    @property
    def class_names(self) -> list[str]:
        return self.task.label_names()

    def details(self) -> dict[str, Any]:
        return {"classes": self.class_names}

    def check_loadable(self) -> None:
        recurrent_layers(self.model)  # InspectError now (a torch-backend run) rather than later

    def example(self, text: str | None, image: np.ndarray | None, invert: str) -> Example:
        """The request's input as the model reads it."""
        raise NotImplementedError

    def _prediction(self, example: Example) -> dict[str, Any]:
        probabilities = self.task.prefix_probabilities(self.model, example)  # (T, C)
        steps = np.flatnonzero(example.real)
        final = probabilities[steps[-1]]  # (C,)
        best = int(np.argmax(final))
        out = {
            "label": best,
            "label_name": self.class_names[best],
            "probability": float(final[best]),
            "probabilities": rounded(final, 6),
            "classes": self.class_names,
            "steps": [example.labels[k] for k in steps],
            "step_probabilities": rounded(probabilities[steps]),  # (n, C), real steps only
        }
        if example.oov is not None:
            out["oov"] = [bool(example.oov[k]) for k in steps]
        if example.image is not None:
            out["image"] = rounded(example.image, 3)  # as read, after any inversion
        return out

    def classify(
        self, text: str | None = None, image: np.ndarray | None = None, invert: str = "auto"
    ) -> dict[str, Any]:
        """The prediction for ``text`` (text runs) or a (28, I) ``image`` in [0, 1] (image
        runs), and ``step_probabilities`` (n, C): the prediction had the input ended after each
        of its n real steps (``steps`` names them: words, or ``row k``)."""
        return self._prediction(self.example(text, image, invert))

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
        example = self.example(text, image, invert)
        layers = len(self.config.model.hidden_sizes)
        if not 0 <= layer < layers:
            raise InputError("layer", f"expected 0..{layers - 1}, got {layer}")
        directions = 2 if self.config.model.bidirectional else 1
        if not 0 <= direction < directions:
            raise InputError("direction", f"expected 0..{directions - 1}, got {direction}")
        out = self._prediction(example)
        gates = record_gates(self.model, example.inputs, layer, direction)  # name -> (T, H)
        real = example.real
        act = activity(gates, real)  # (H,)
        out.update(
            layer=layer,
            direction=direction,
            cell=self.config.model.cell,
            gates={name: rounded(value[real]) for name, value in gates.items()},
            activity=rounded(act, 6),
            top_units=[int(u) for u in np.argsort(-act, kind="stable")],
        )
        return out

    @classmethod
    def add_routes(cls, app: Any, lookup: Lookup, work: Callable[..., Any]) -> None:
        def inputs(served: ServedRun, body: ClassifyRequest) -> dict[str, Any]:
            given = [k for k in ("text", "image", "png") if getattr(body, k) is not None]
            if len(given) != 1:
                raise InputError(
                    given[1] if len(given) > 1 else getattr(served, "field", "text"),
                    f"expected exactly one of 'text', 'image' or 'png', got "
                    f"{', '.join(repr(g) for g in given) or 'none'}",
                )
            if body.text is not None:
                check_text("text", body.text)
            return {"text": body.text, "image": decode_image(body), "invert": body.invert}

        @app.post("/api/runs/{run}/classify", tags=["api"])
        async def classify(run: str, body: ClassifyRequest) -> dict[str, Any]:
            """The prediction and, per real step (``steps``: words or image rows), the class
            probabilities had the input ended there (``step_probabilities``)."""
            served = lookup(run)
            given = inputs(served, body)  # a malformed body answers 4xx before the kind check
            check_analysis(served, "classify")
            return await work(served.classify, **given)

        @app.post("/api/runs/{run}/trace", tags=["api"])
        async def trace(run: str, body: TraceRequest) -> dict[str, Any]:
            """Classify, plus every gate of ``layer`` in ``direction`` per real step
            (``gates``: name -> steps x units), each unit's ``activity`` and ``top_units``."""
            served = lookup(run)
            given = inputs(served, body)
            check_analysis(served, "trace")
            return await work(served.trace, **given, layer=body.layer, direction=body.direction)


class TextRun(ClassifierRun):
    """A review classifier: reads ``text``."""

    title = "text classifier"
    page = "text"
    field = "text"

    def example(self, text: str | None, image: np.ndarray | None, invert: str) -> Example:
        if text is None:
            raise InputError(
                "text", f"run {self.name!r} is a text model: expected 'text', got an image"
            )
        try:
            return self.task.example(text, self.artifacts)
        except PredictError as exc:
            raise InputError("text", str(exc)) from exc

    def warm_up(self) -> None:
        self.trace(text=self.task.common_word(self.artifacts))


class ImageRun(ClassifierRun):
    """A digit classifier reading an image row by row: reads ``image`` (or ``png``)."""

    title = "image classifier"
    page = "digit"
    field = "image"

    @property
    def image_shape(self) -> tuple[int, int]:
        return self.task.size  # (rows, columns)

    def details(self) -> dict[str, Any]:
        return {**super().details(), "image_shape": list(self.image_shape)}

    def example(self, text: str | None, image: np.ndarray | None, invert: str) -> Example:
        if image is None:
            raise InputError(
                "image", f"run {self.name!r} is an image model: expected 'image' or 'png', got text"
            )
        if image.shape != self.image_shape:
            rows, cols = self.image_shape
            raise InputError("image", f"expected a {rows}x{cols} image, got {image.shape}")
        if invert == "always" or (invert == "auto" and light_background(image)):
            image = 1.0 - image  # MNIST is light on dark
        return self.task.example((image, None), self.artifacts)

    def warm_up(self) -> None:
        self.trace(image=np.zeros(self.image_shape, np.float32))
