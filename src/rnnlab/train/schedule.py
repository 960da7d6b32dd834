"""Optimizers and learning-rate schedules, as plain functions of the step (no hidden state).

A schedule that is a pure function of (step, epoch) survives a checkpoint for free; the one
stateful schedule, ``plateau``, keeps its two numbers in :class:`~rnnlab.train.loop.TrainState`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from rnnlab.config import TrainConfig

__all__ = ["learning_rate", "make_optimizer"]


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam (Kingma & Ba 2015, Keras's defaults), AdamW (Loshchilov & Hutter 2019) or SGD with
    momentum, over every trainable parameter of ``model``."""
    params = [p for p in model.parameters() if p.requires_grad]
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
