"""A frame labeller for CTC: frames in, per-frame log-probabilities over symbols and blank out.

Shape legend: B batch, T frames, I features per frame, P projection, H hidden units,
D directions, S symbols (blank included, index 0).

``forward(x (B, T, I), lengths (B,) or None) -> (B, T, S)`` log-probabilities: an optional
per-frame Linear projection, recurrent layers of the registry's ``model.cell`` (bidirectional
as configured: Graves et al. 2013 read speech both ways) over the real frames (padding after
them, skipped), dropout after each, and a Linear head with a log-softmax per frame. The loss
is torch's ``CTCLoss`` on those, transposed to (T, B, S) (:func:`ctc_loss`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from rnnlab.config import ModelConfig
from rnnlab.models.classifiers import folds_projection, layer_options
from rnnlab.nn.dropout import Dropout
from rnnlab.nn.registry import layer_class

__all__ = ["BLANK", "CTCModel", "ctc_loss", "target_lengths"]

BLANK = 0  # symbol k of the task is class k + 1


class CTCModel(nn.Module):
    """Frames -> per-frame log-probabilities over ``model.num_classes`` symbols plus blank."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.input_size = cfg.input_size
        self.num_symbols = cfg.num_classes + 1  # S: the blank is symbol 0
        size = cfg.input_size
        self.projection = nn.Linear(size, cfg.projection) if cfg.projection else None
        size = cfg.projection or size
        D = 2 if cfg.bidirectional else 1
        layers = []
        for hidden in cfg.hidden_sizes:
            layers.append(
                layer_class(cfg.cell)(
                    size,
                    hidden,
                    bidirectional=cfg.bidirectional,
                    backend=cfg.backend,
                    **layer_options(cfg),
                )
            )
            size = D * layers[-1].output_size  # D*H, or D*P with a projection
        self.layers = nn.ModuleList(layers)
        self.dropout = Dropout(cfg.dropout)
        self.head = nn.Linear(size, self.num_symbols)

    def forward(self, x: Tensor, lengths: Tensor | None = None) -> Tensor:
        if x.dim() != 3 or x.shape[-1] != self.input_size:
            raise ValueError(
                f"CTCModel expected input of shape (B, T, {self.input_size}), got {tuple(x.shape)}"
            )
        fold = {}
        if folds_projection(self.projection, self.layers[0], dropout_between=False):
            # the first layer folds the projection into its input weights (rnnlab.nn.fold)
            fold = {"input_projection": (self.projection.weight, self.projection.bias)}
        elif self.projection is not None:
            x = self.projection(x)  # (B, T, P)
        for k, layer in enumerate(self.layers):
            x, _ = layer(x, lengths=lengths, padding="post", **(fold if k == 0 else {}))
            x = self.dropout(x)  # (B, T, D*H)
        return F.log_softmax(self.head(x), dim=-1)  # (B, T, S)


def target_lengths(targets: Tensor) -> Tensor:
    """(B, L) symbol indexes padded with negatives -> (B,) the real lengths."""
    return (targets >= 0).sum(dim=1)


def ctc_loss(log_probs: Tensor, lengths: Tensor, targets: Tensor) -> Tensor:
    """Summed CTC loss of (B, T, S) ``log_probs`` with (B,) frame ``lengths`` and (B, L)
    ``targets`` (symbols 0..S-2, padded with negatives): torch's ``CTCLoss`` with the blank at
    0, so target k is class k + 1. An impossible alignment (a string longer than its frames
    allow) counts 0 (``zero_infinity``) rather than poisoning the batch with inf."""
    tl = target_lengths(targets)  # (B,)
    flat = (targets[targets >= 0] + 1).to(torch.long)  # (sum L,)
    return F.ctc_loss(
        log_probs.transpose(0, 1),  # (T, B, S)
        flat,
        lengths.to(torch.long),
        tl.to(torch.long),
        blank=BLANK,
        reduction="sum",
        zero_infinity=True,
    )
