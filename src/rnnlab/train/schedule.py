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

__all__ = ["group_rate", "learning_rate", "make_optimizer", "parameter_groups"]


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


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam (Kingma & Ba 2015, Keras's defaults), AdamW (Loshchilov & Hutter 2019) or SGD with
    momentum, over every trainable parameter of ``model`` (:func:`parameter_groups`)."""
    params = parameter_groups(model)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, eps=1e-7, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, eps=1e-7, weight_decay=cfg.weight_decay)
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
