"""The ``onnxruntime`` rows of ``rnnlab bench``: a workload's model exported by ``rnnlab export``
and run by onnxruntime, inference only, on the same batch as the other implementations.

The workload's model is rebuilt as the rnnlab classifier it is (front end -> LSTM stack ->
Linear on the last layer's final hidden state: ``pooling="last"``, no masking), so the graph is
exactly the one ``rnnlab export`` writes for such a run. onnxruntime gets as many intra-op
threads as torch has.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from rnnlab.bench.workloads import Workload
from rnnlab.config import Config, DataConfig, ModelConfig

__all__ = ["OnnxRunner", "onnxruntime_unavailable"]


def onnxruntime_unavailable() -> str | None:
    """Why the onnxruntime rows cannot run here, or None."""
    for name in ("onnx", "onnxruntime"):
        try:
            __import__(name)
        except ModuleNotFoundError:
            return f"expected the {name} package, got none installed (pip install 'rnnlab[export]')"
    return None


def _config(w: Workload) -> Config:
    """The rnnlab classifier configuration of workload ``w``."""
    model = ModelConfig(
        kind="text" if w.vocab else "image",
        input_size=w.inputs,
        projection=w.dense_in or 0,
        embedding_dim=w.inputs,
        hidden_sizes=w.hidden,
        bidirectional=w.bidirectional,
        pooling="last",
        num_classes=w.classes,
    )
    data = DataConfig(dataset="imdb" if w.vocab else "mnist", num_words=w.vocab or 1000)
    return Config(data=data, model=model)


class OnnxRunner:
    """``infer()`` = one onnxruntime run of the exported model on ``x`` (no ``train``)."""

    def __init__(self, w: Workload, x: torch.Tensor) -> None:
        from rnnlab.export import export_model, load_onnx
        from rnnlab.tasks import build_model

        torch.manual_seed(0)
        model = build_model(_config(w))
        with tempfile.TemporaryDirectory() as tmp:
            path = export_model(model, Path(tmp) / f"{w.name}.onnx").path
            self.model = load_onnx(path, threads=torch.get_num_threads())
        self.feeds = [x.numpy()]
        if w.vocab:
            self.feeds.append(np.full(x.shape[0], x.shape[1], dtype=np.int64))  # (B,) all T

    def infer(self) -> None:
        self.model(*self.feeds)
