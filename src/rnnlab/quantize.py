"""``rnnlab quantize RUN``: a trained run's int8 model, written beside its checkpoints, with its
accuracy measured against the float32 model it came from.

The int8 model (:mod:`rnnlab.nn.quantized`) has dynamically quantized int8 matrix products in
its recurrent layers (the input projection of all steps as one product, then h_{t-1} W_hh^T
per step) and its Linear layers (head, projection, decoder), on torch's own kernels; weights
int8 with one scale per output row, activations quantized per call, gates and state float32.
It lives in ``RUN_DIR/int8.safetensors`` (:mod:`rnnlab.runs.quantized`: one atomic file that
names the checkpoint it came from) and a human-readable sidecar ``RUN_DIR/int8.json`` with the
scheme, the sizes and the figures measured here. ``rnnlab evaluate RUN --checkpoint int8``
evaluates it, as ``predict``, ``score``, ``generate``, ``transcribe`` and ``translate`` answer
with it: :func:`rnnlab.runs.load_run` loads it under the name ``"int8"``.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rnnlab.files import atomic_write, check_output
from rnnlab.nn.backends.quantized import activation_bits
from rnnlab.nn.quantized import QuantizationError, int8_layers, quantize_model
from rnnlab.runs import RunError, load_run, load_run_data
from rnnlab.runs.quantized import INT8_FILE, write_int8
from rnnlab.train import evaluate

__all__ = ["INT8_FILE", "SIDECAR", "quantize_run"]

SIDECAR = "int8.json"
PathLike = str | os.PathLike[str]
Progress = Callable[[str, int, int], None]  # (what, batches done, batches in all)


def _state_bytes(model: nn.Module) -> int:
    """Bytes of a model's tensors as a file stores them (a tied tensor once)."""
    seen, total = set(), 0
    for value in model.state_dict().values():
        ptr = value.untyped_storage().data_ptr()
        if ptr not in seen:
            seen.add(ptr)
            total += value.numel() * value.element_size()
    return total


def _measure(
    model: nn.Module, task, data, split: str, label: str, progress: Progress | None
) -> dict[str, float]:
    """The task's loss and metrics of ``model`` on ``split`` of ``data``, checked finite."""
    examples = {"test": data.test, "val": data.val, "train": data.train}[split]
    if examples is None:
        raise RunError(f"expected a {split} split to measure on, got none (data.validation)")
    source = task.batches(examples, training=False)
    total, done = len(source), 0

    def step(k: int) -> None:
        nonlocal done
        done += k
        progress(label, done, total)

    metrics = evaluate(model, source.epoch(0), task, progress=step if progress else None)
    bad = {k: v for k, v in metrics.items() if not math.isfinite(v)}
    if bad:
        raise RunError(f"expected finite figures from the {label} model, got {bad} on {split}")
    return metrics


def quantize_run(
    run_dir: PathLike,
    checkpoint: str = "best",
    per_channel: bool = True,
    force: bool = False,
    measure: bool = True,
    data_dir: PathLike | None = None,
    split: str = "test",
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Quantize ``checkpoint`` of ``run_dir`` into ``RUN_DIR/int8.safetensors`` and, with
    ``measure``, evaluate the float32 and the int8 model on ``split`` (the same batches) and
    record both. Returns what ``int8.json`` holds.

    Raises:
        RunError: not a trained run, a model with layers int8 cannot take (the cells of 2024),
            torch without its x86 quantized engines, or a split the run does not have.
        OutputRefusedError: ``int8.safetensors`` or ``int8.json`` exists and not ``force``.
    """
    if split not in ("test", "val", "train"):
        raise ValueError(f"quantize_run expected split 'test', 'val' or 'train', got {split!r}")
    run_dir = Path(run_dir)
    config, model, meta = load_run(run_dir, checkpoint)  # the errors of a missing or bad run
    out, sidecar = run_dir / INT8_FILE, run_dir / SIDECAR
    check_output(out, force, flag="int8 model")  # refused before any work
    check_output(sidecar, force, flag="int8 model's sidecar")
    try:
        int8 = quantize_model(model, per_channel=per_channel)
    except QuantizationError as exc:
        raise RunError(f"{run_dir}: {exc}") from exc
    layers = int8_layers(int8)
    engine = layers[0][1].engine
    source = {
        "tag": meta["tag"],
        "step": meta["state"]["step"],
        "sha256": meta["sha256"],
        "meta_sha256": meta.get("meta_sha256"),
    }
    scheme = {
        "weights": "int8, symmetric (zero point 0), scale max|W|/127 "
        + ("per output row" if per_channel else "per matrix"),
        "activations": "uint8, per tensor, scale and zero point from each call's min and max "
        "(torch.ops.quantized.linear_dynamic)",
        "activation_bits_when_written": activation_bits(engine),
        "per_channel": bool(per_channel),
        "engine_when_written": engine,
        "int8_layers": [name for name, _ in layers],
        "float_layers": "embeddings, biases, gate arithmetic, states, pooling, softmax",
    }
    report: dict[str, Any] = {
        "run": str(run_dir),
        "file": str(out),
        "source": source,
        "scheme": scheme,
        "bytes": {"float32": _state_bytes(model), "int8": _state_bytes(int8)},
    }
    if measure:
        task, data = load_run_data(run_dir, data_dir, config)
        started = time.perf_counter()
        before = _measure(model, task, data, split, "float32", progress)
        middle = time.perf_counter()
        after = _measure(int8, task, data, split, "int8", progress)
        report["measured"] = {
            "split": split,
            "float32": before,
            "int8": after,
            "change": {k: after[k] - before[k] for k in before},
            "seconds": {"float32": middle - started, "int8": time.perf_counter() - middle},
            "threads": torch.get_num_threads(),
        }
    path, written = write_int8(run_dir, int8, source, scheme)
    report["tensors_sha256"] = written["tensors_sha256"]
    report["versions"] = written["versions"]
    atomic_write(sidecar, (json.dumps(report, indent=2) + "\n").encode("utf-8"))
    return report
