"""The int8 rows of ``rnnlab bench`` (issue 23): inference only.

* ``rnnlab-int8``: the workload's rnnlab model (the ``rnnlab`` row's: backend auto, float32)
  made int8 by :func:`rnnlab.nn.quantized.quantize_model`: its LSTM layers and its Linear
  layers (head, projection, decoder) with int8 products on torch's dynamic-quantization
  kernels. Its baseline is the ``rnnlab`` row (float32).
* ``torch-int8``: the ``torch`` row's model (torch.nn.LSTM, nn.Linear) made int8 by
  ``torch.ao.quantization.quantize_dynamic`` (``nn.LSTM`` and ``nn.Linear``, qint8), packed
  by the same engine as ``rnnlab-int8``, so both run the same kernels and differ in how the
  layers use them. Its baseline is the ``torch`` row (float32).

Language-model workloads (F, G) time the loss under ``no_grad``, as their ``infer`` rows do,
and one generated token (``token`` mode).
"""

from __future__ import annotations

import torch
from torch import nn

from rnnlab.bench.lm_models import LMRunner
from rnnlab.bench.workloads import Workload, build_model
from rnnlab.nn.backends.quantized import default_engine, packing_engine
from rnnlab.nn.quantized import quantize_model

__all__ = ["INT8_IMPLS", "Int8LMRunner", "Int8Runner", "int8_engine", "int8_runner"]

INT8_IMPLS = {"rnnlab-int8": "rnnlab", "torch-int8": "torch"}  # impl -> its float32 row


def int8_engine() -> str:
    """The engine both int8 rows pack with (:func:`rnnlab.nn.quantized.default_engine`)."""
    return default_engine()


def _torch_int8(model: nn.Module) -> nn.Module:
    with packing_engine(int8_engine()):
        return torch.ao.quantization.quantize_dynamic(
            model.eval(), {nn.LSTM, nn.Linear}, dtype=torch.qint8
        )


class Int8Runner:
    """``infer()`` = a forward under no_grad of a classifier workload's int8 model."""

    def __init__(self, w: Workload, impl: str, x: torch.Tensor) -> None:
        torch.manual_seed(0)
        float_model = build_model(w, INT8_IMPLS[impl])
        self.model = (_torch_int8 if impl == "torch-int8" else quantize_model)(float_model)
        self.x = x

    def infer(self) -> None:
        with torch.no_grad():
            self.model(self.x)


class Int8LMRunner:
    """A language-model workload's int8 model with :class:`LMRunner`'s batch and carried
    state: ``infer()`` = the loss under no_grad, ``token()`` = one generated token."""

    def __init__(self, w: Workload, impl: str) -> None:
        self._lm = LMRunner(w, INT8_IMPLS[impl])  # same seed, model and batch as the float row
        if impl == "torch-int8":
            self._lm.model = _torch_int8(self._lm.model)
        else:
            self._lm.model.model = quantize_model(self._lm.model.model)  # the LanguageModel
        self._lm.model.eval()

    def infer(self) -> None:
        with torch.no_grad():
            self._lm.model.loss(self._lm.x, self._lm.y)

    def token(self) -> None:
        with torch.no_grad():
            _, self._lm.state = self._lm.model.step(self._lm.token_id, self._lm.state)


def int8_runner(w: Workload, impl: str, x: torch.Tensor) -> Int8Runner | Int8LMRunner:
    """The runner of int8 implementation ``impl`` (:data:`INT8_IMPLS`) on workload ``w``."""
    if impl not in INT8_IMPLS:
        raise ValueError(f"expected an int8 implementation in {list(INT8_IMPLS)}, got {impl!r}")
    return Int8LMRunner(w, impl) if w.language_model else Int8Runner(w, impl, x)
