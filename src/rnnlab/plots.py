"""The learning-curve figure of a run (matplotlib, Agg backend, no display needed)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rnnlab.files import atomic_write

__all__ = ["plot_learning_curve"]


def plot_learning_curve(records: Sequence[dict[str, Any]], path: Path, title: str = "") -> Path:
    """Loss and the task's first metric (accuracy for classifiers) against steps: the logged
    minibatch values (faint), the per-epoch training means and the validation values. Written
    atomically to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    steps = [r for r in records if r.get("kind") == "step"]
    epochs = [r for r in records if r.get("kind") == "epoch"]
    fig = Figure(figsize=(10, 4), dpi=100)
    for k, key in enumerate(("loss", _first_metric(epochs))):
        ax = fig.add_subplot(1, 2, k + 1)
        if steps:
            ax.plot(
                [r["step"] for r in steps],
                [r[key] for r in steps],
                color="tab:blue",
                alpha=0.3,
                linewidth=0.8,
                label=f"minibatch {key}",
            )
        if epochs:
            ax.plot(
                [r["step"] for r in epochs],
                [r[key] for r in epochs],
                "o-",
                color="tab:blue",
                label=f"train {key} (epoch mean)",
            )
            val = [r for r in epochs if f"val_{key}" in r]
            if val:
                ax.plot(
                    [r["step"] for r in val],
                    [r[f"val_{key}"] for r in val],
                    "s-",
                    color="tab:orange",
                    label=f"validation {key}",
                )
        ax.set_xlabel("step")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    atomic_write(Path(path), buffer.getvalue())
    return Path(path)


def _first_metric(epochs: Sequence[dict[str, Any]]) -> str:
    """The first metric after ``loss`` in the epoch records (they list loss, the task's
    metrics, then seconds), or ``"accuracy"`` before any epoch ended."""
    if not epochs:
        return "accuracy"
    keys = list(epochs[0])
    names = keys[keys.index("loss") + 1 : keys.index("seconds")]
    return names[0] if names else "loss"
