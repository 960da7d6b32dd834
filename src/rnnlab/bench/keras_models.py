"""The same workloads in Keras 3 (on its torch backend), for the comparison the issue asks for.

Keras picks its backend when first imported, from ``KERAS_BACKEND``; :func:`keras_unavailable`
says why Keras cannot be benchmarked here (not installed, or already imported with another
backend), so the suite can report it instead of failing.
"""

from __future__ import annotations

import importlib.util
import os
import sys

import numpy as np

from rnnlab.bench.workloads import Workload

__all__ = ["keras_unavailable", "KerasRunner"]


def keras_unavailable() -> str | None:
    if importlib.util.find_spec("keras") is None:
        return "keras is not installed"
    if "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = "torch"
    import keras

    if keras.backend.backend() != "torch":
        return f"keras was already imported with backend {keras.backend.backend()!r}, not torch"
    return None


class KerasRunner:
    """A compiled Keras model of workload ``w``: ``train()`` is one ``train_on_batch`` (forward,
    backward, Adam step), ``infer()`` one ``predict_on_batch``."""

    def __init__(self, w: Workload, x, y) -> None:
        import keras
        from keras import layers

        shape = (w.steps,) if w.vocab else (w.steps, w.inputs)
        inputs = keras.Input(shape, batch_size=w.batch)
        h = inputs
        if w.vocab:
            h = layers.Embedding(w.vocab, w.inputs)(h)
        if w.dense_in:
            h = layers.Dense(w.dense_in)(h)
        for k, H in enumerate(w.hidden):
            rnn = layers.LSTM(H, return_sequences=k < len(w.hidden) - 1)
            h = layers.Bidirectional(rnn)(h) if w.bidirectional else rnn(h)
        outputs = layers.Dense(w.classes)(h)
        self.model = keras.Model(inputs, outputs)
        loss = (
            keras.losses.BinaryCrossentropy(from_logits=True)
            if w.classes == 1
            else keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        )
        self.model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss)
        self.x, self.y = np.asarray(x), np.asarray(y)

    def train(self) -> None:
        self.model.train_on_batch(self.x, self.y)

    def infer(self) -> None:
        self.model.predict_on_batch(self.x)
