"""What image and text classification share: cross-entropy, accuracy, the best checkpoint by
validation accuracy, and results as labels with probabilities.

Shape legend: N examples, B batch, T time, C classes.

Cross-entropy on logits is the tutorial's Keras model's softmax layer with categorical
cross-entropy on one-hot targets: the same function (the tutorial: Olah's "Understanding LSTM
Networks" (2015) and its experiments).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from rnnlab.tasks.base import Example, MetricSpec, Prepared, Task
from rnnlab.train import BatchLoss, Carry, Selection
from rnnlab.train.loader import IGNORE_INDEX

__all__ = ["ClassificationTask", "softmax_rows"]


def softmax_rows(logits: Tensor) -> np.ndarray:
    """(N, C) logits -> (N, C) float64 probabilities."""
    return torch.softmax(logits.double(), dim=-1).numpy()


class ClassificationTask(Task):
    """Independent examples, one class each; metrics: accuracy (the best checkpoint's)."""

    metric_specs = (MetricSpec("accuracy", higher_is_better=True),)
    selection = Selection("accuracy", "max")
    class_names: ClassVar[tuple[str, ...] | None] = None  # None: the class indices

    def label_names(self) -> list[str]:
        C = self.config.model.num_classes
        if self.class_names is not None and len(self.class_names) == C:
            return list(self.class_names)
        return [str(k) for k in range(C)]

    def batch_loss(
        self,
        model: nn.Module,
        inputs: tuple[Tensor, ...],
        targets: Tensor,
        carry: Carry | None,
        training: bool,
    ) -> BatchLoss:
        logits = model(*inputs)  # (B, C)
        smoothing = self.config.train.label_smoothing if training else 0.0
        total = F.cross_entropy(logits, targets, label_smoothing=smoothing, reduction="sum")
        correct = int((logits.detach().argmax(-1) == targets).sum())
        count = int((targets != IGNORE_INDEX).sum())  # stand-ins (see Batches) count for nothing
        return BatchLoss(total, count, {"correct": correct})

    def metrics(self, sums: dict[str, float]) -> dict[str, float]:
        return {"accuracy": sums.get("correct", 0) / sums["n"]}

    def test_report(self, metrics: dict[str, float]) -> dict[str, float]:
        return {"test_accuracy": metrics["accuracy"], "test_loss": metrics["loss"]}

    @torch.no_grad()
    def predict(self, model: nn.Module, prepared: Prepared) -> list[dict[str, Any]]:
        """Per input: ``label`` (class index), ``label_name``, its ``probability`` and all
        ``probabilities``, then the input's notes."""
        names = self.label_names()
        probabilities = torch.softmax(model(*prepared.inputs), dim=-1)  # (N, C)
        out = []
        for p, notes in zip(probabilities.tolist(), prepared.notes, strict=True):
            label = int(np.argmax(p))
            out.append(
                {
                    "label": label,
                    "label_name": names[label],
                    "probability": p[label],
                    "probabilities": p,
                    **notes,
                }
            )
        return out

    def prefix_batches(self, example: Example, chunk: int) -> list[tuple[Tensor, ...]]:
        """The inputs of every prefix of ``example`` (ending at each real step), in batches of
        ``chunk``, each encoded as the model would read that shorter input."""
        raise NotImplementedError

    @torch.no_grad()
    def prefix_probabilities(
        self, model: nn.Module, example: Example, chunk: int = 64
    ) -> np.ndarray:
        """(T, C) class probabilities had the input ended after each step (NaN at padding).
        For a unidirectional model with ``"last"`` pooling this is the prediction from the state
        after that step; for a bidirectional one it is the prediction for the truncated input."""
        T = len(example.real)
        out = np.full((T, self.config.model.num_classes), np.nan)
        batches = self.prefix_batches(example, chunk)
        out[np.flatnonzero(example.real)] = np.concatenate(
            [softmax_rows(model(*b)) for b in batches]
        )
        return out
