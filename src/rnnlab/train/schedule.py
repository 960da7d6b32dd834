"""Optimizers and learning-rate schedules, as plain functions of the step (no hidden state).

A schedule that is a pure function of (step, epoch) survives a checkpoint for free; the one
stateful schedule, ``plateau``, keeps its two numbers in :class:`~rnnlab.train.loop.TrainState`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from rnnlab.config import TrainConfig

__all__ = [
    "fused_adam_ok",
    "group_rate",
    "learning_rate",
    "make_optimizer",
    "parameter_groups",
]


def parameter_groups(model: nn.Module) -> list[dict[str, Any]]:
    """The trainable parameters of ``model`` in one group, or two when the model names the
    parameters it took from another run in its ``pretrained_names`` attribute (a set of
    ``named_parameters()`` names; a model wrapped for data parallelism is looked into): those
    form a second group marked ``pretrained``, whose rate is scaled by
    ``train.pretrained_lr_ratio`` and held at zero for ``train.frozen_steps``
    (:func:`group_rate`)."""
    inner = getattr(model, "module", model)  # DistributedDataParallel keeps the model here
    names = frozenset(getattr(inner, "pretrained_names", ()))
    every = dict(inner.named_parameters())
    unknown = names - every.keys()
    if unknown:
        raise ValueError(
            f"make_optimizer expected pretrained_names among the model's parameters, got "
            f"{sorted(unknown)[:3]}"
        )
    fresh = [p for n, p in every.items() if p.requires_grad and n not in names]
    if not names:
        return [{"params": fresh}]
    taken = [p for n, p in every.items() if p.requires_grad and n in names]
    return [{"params": fresh}, {"params": taken, "pretrained": True}]


def group_rate(group: dict[str, Any], lr: float, step: int, cfg: TrainConfig) -> float:
    """The learning rate of parameter ``group`` at optimizer step ``step`` (0-based) given the
    schedule's ``lr``: a pretrained group's is ``lr * pretrained_lr_ratio``, and 0 while
    ``step < frozen_steps``."""
    if not group.get("pretrained"):
        return lr
    return 0.0 if step < cfg.frozen_steps else lr * cfg.pretrained_lr_ratio


# torch's fused Adam/AdamW kernels: CUDA since torch 2.0, CPU since 2.4
FUSED_DEVICES = ("cpu", "cuda")
FUSED_CPU_SINCE = (2, 4)


def fused_adam_ok(params: list[dict[str, Any]]) -> bool:
    """Whether torch's fused Adam/AdamW kernel can take every parameter of ``params`` (groups
    as :func:`parameter_groups` returns them): each a dense floating-point tensor on a CPU or
    CUDA device, CPU ones only with torch 2.4 or later."""
    tensors = [p for group in params for p in group["params"]]
    cpu_ok = tuple(int(x) for x in torch.__version__.split(".")[:2]) >= FUSED_CPU_SINCE
    return bool(tensors) and all(
        p.is_floating_point()
        and not p.is_sparse
        and p.device.type in FUSED_DEVICES
        and (cpu_ok or p.device.type != "cpu")
        for p in tensors
    )


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam (Kingma & Ba 2015, Keras's defaults), AdamW (Loshchilov & Hutter 2019) or SGD with
    momentum, over every trainable parameter of ``model`` (:func:`parameter_groups`).

    Adam and AdamW run torch's fused kernel (``fused=True``: one pass over each tensor instead
    of one per elementwise op) whenever :func:`fused_adam_ok` says it can take every parameter,
    and torch's default implementation otherwise. The two differ only by rounding (after 50
    steps on a small model, at most 1.2e-7 per parameter; ``tests/test_fused_adam.py`` holds
    them to 1e-6), and the fused one is bitwise reproducible run to run. A checkpoint keeps
    the choice in its ``param_groups``, so a resumed run goes on with the kernel it started
    with."""
    params = parameter_groups(model)
    if cfg.optimizer in ("adam", "adamw"):
        adam = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
        fused = True if fused_adam_ok(params) else None  # None: torch's own default
        return adam(params, lr=cfg.lr, eps=1e-7, weight_decay=cfg.weight_decay, fused=fused)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def learning_rate(
    cfg: TrainConfig, step: int, epoch: int, total_steps: int, plateau_scale: float = 1.0
) -> float:
    """The learning rate for optimizer step ``step`` (0-based) in ``epoch`` (0-based)."""
    lr = cfg.lr
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "cosine":
        span = max(1, total_steps - cfg.warmup_steps)
        progress = min(1.0, (step - cfg.warmup_steps) / span)
        floor = lr * cfg.min_lr_ratio
        return floor + (lr - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if cfg.lr_schedule == "step":
        return lr * cfg.gamma ** (epoch // cfg.step_epochs)
    if cfg.lr_schedule == "plateau":
        return lr * plateau_scale
    return lr
