"""Measuring how much context a language model uses (``python -m projects.context``).

Shape legend: B batch (rows of a stream), T time, P target positions, K context length,
W words of other text, V vocabulary size.

See :mod:`projects.context.experiment` for the method: the stateful loss of every target, and at
sampled targets the loss when the model reads only the k words before the target, from the zero
state or after other text.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from rnnlab import LanguageModel
from rnnlab.data import windows


class ContextSettings(Protocol):
    """What the measurements read of :class:`projects.context.experiment.ContextConfig` (a
    protocol, so this module need not import the one that imports it)."""

    contexts: Sequence[int]
    positions: int
    position_seed: int
    window_chunk: int
    replaced_words: int


__all__ = [
    "context_use",
    "final_logits",
    "other_text",
    "sample_positions",
    "stateful_losses",
    "stops_gaining",
    "window_losses",
]


@torch.no_grad()
def stateful_losses(model: LanguageModel, rows: Tensor, bptt: int = 200) -> Tensor:
    """Per-target cross-entropy (nats) of the ordinary stateful evaluation: (B, L) ``rows`` ->
    (B, L - 1), entry ``[b, t - 1]`` the loss of ``rows[b, t]`` given ``rows[b, :t]``, the state
    carried window to window from zeros at the row's start (the same as one forward over the
    whole row)."""
    pieces, state = [], None
    for inputs, targets in windows(rows, bptt):
        logits, state = model(inputs, state)  # (B, t, V)
        loss = nn.functional.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
        pieces.append(loss)  # (B, t)
    return torch.cat(pieces, dim=1)  # (B, L - 1)


def final_logits(model: LanguageModel, ids: Tensor) -> Tensor:
    """Logits of the token after each row of (B, T) ``ids``, run from the zero state: (B, V).
    The same as ``model(ids)[0][:, -1]`` in eval mode, but the decoder (V x H per position, most
    of the cost) runs at the last position only."""
    with torch.no_grad():
        out, _ = model.rnn(model.embedding(ids))  # (B, T, H)
        return model.decoder(out[:, -1])  # (B, V)


def sample_positions(rows: Tensor, count: int, min_context: int, seed: int) -> Tensor:
    """(P, 2) ``(row, t)`` targets of (B, L) ``rows`` with ``t >= min_context`` (so every
    context length up to ``min_context`` fits in the row), drawn without replacement; all of
    them, in order, when there are at most ``count``."""
    B, L = rows.shape
    per_row = L - min_context
    if per_row < 1:
        raise ValueError(
            f"sample_positions expected rows longer than {min_context} tokens, got {L} "
            "(use more eval_tokens, fewer eval_rows or shorter contexts)"
        )
    total = B * per_row
    if total <= count:
        flat = torch.arange(total)
    else:
        g = torch.Generator().manual_seed(seed)
        flat = torch.randperm(total, generator=g)[:count].sort().values
    return torch.stack([flat // per_row, flat % per_row + min_context], dim=1)  # (P, 2)


@torch.no_grad()
def window_losses(
    model: LanguageModel,
    rows: Tensor,
    positions: Tensor,
    k: int,
    chunk: int = 512,
    prefix: Tensor | None = None,
) -> Tensor:
    """(P,) cross-entropy of the target at each ``(row, t)`` of ``positions`` when the model
    reads only ``rows[row, t - k : t]`` from the zero state; with (P, W) ``prefix``, it reads
    those W ids first (other text in place of the words before the window)."""
    r, t = positions[:, 0], positions[:, 1]  # (P,) each
    offsets = torch.arange(-k, 0)  # (K,)
    out = []
    for p0 in range(0, len(positions), chunk):
        rr, tt = r[p0 : p0 + chunk], t[p0 : p0 + chunk]
        ids = rows[rr[:, None], tt[:, None] + offsets].long()  # (P', K)
        if prefix is not None:
            ids = torch.cat([prefix[p0 : p0 + chunk].long(), ids], dim=1)  # (P', W + K)
        logits = final_logits(model, ids)  # (P', V)
        out.append(nn.functional.cross_entropy(logits, rows[rr, tt].long(), reduction="none"))
    return torch.cat(out)  # (P,)


def context_use(model: LanguageModel, rows: Tensor, config: ContextSettings) -> dict[str, Any]:
    """The stateful ``test_loss`` over every target of ``rows``, and per context length (and
    ``"all"``) the mean loss at the sampled targets with the paired difference to ``"all"``."""
    c = config
    full = stateful_losses(model, rows)  # (B, L - 1)
    positions = sample_positions(rows, c.positions, max(c.contexts), c.position_seed)
    at_all = full[positions[:, 0], positions[:, 1] - 1]  # (P,)
    result = {
        "test_loss": full.mean().item(),
        "test_targets": full.numel(),
        "positions": len(positions),
        "context_loss": _losses_by_k(model, rows, positions, at_all, config, None),
    }
    if c.replaced_words:
        prefix = other_text(rows, positions, c.replaced_words, c.position_seed + 1)
        result["context_loss_replaced"] = _losses_by_k(
            model, rows, positions, at_all, config, prefix
        )
    return result


def other_text(rows: Tensor, positions: Tensor, words: int, seed: int) -> Tensor:
    """(P, W) ids: for each target, ``words`` consecutive ids from a random place in another
    row (the same row when there is only one), to read in place of the words before a window."""
    B, L = rows.shape
    if words >= L:
        raise ValueError(f"other_text expected rows longer than {words} ids, got {L}")
    g = torch.Generator().manual_seed(seed)
    P = len(positions)
    shift = torch.randint(1, B, (P,), generator=g) if B > 1 else torch.zeros(P, dtype=torch.long)
    row = (positions[:, 0] + shift) % B  # (P,)
    start = torch.randint(0, L - words, (P,), generator=g)  # (P,)
    return rows[row[:, None], start[:, None] + torch.arange(words)]  # (P, W)


def _losses_by_k(
    model: LanguageModel,
    rows: Tensor,
    positions: Tensor,
    at_all: Tensor,
    config: ContextSettings,
    prefix: Tensor | None,
) -> dict[str, dict[str, float]]:
    losses: dict[str, dict[str, float]] = {}
    for k in sorted(config.contexts):
        loss = window_losses(model, rows, positions, k, config.window_chunk, prefix)  # (P,)
        diff = loss - at_all
        losses[str(k)] = {
            "loss": loss.mean().item(),
            "minus_all": diff.mean().item(),
            "minus_all_se": (diff.std() / math.sqrt(len(diff))).item() if len(diff) > 1 else 0.0,
        }
    losses["all"] = {"loss": at_all.mean().item(), "minus_all": 0.0, "minus_all_se": 0.0}
    return losses


def stops_gaining(context_loss: dict[str, dict[str, float]], tolerance: float) -> int | None:
    """The smallest k from which on every longer context is within ``tolerance`` nats or two
    standard errors of ``"all"`` (see :class:`~projects.context.experiment.ContextConfig`); None
    if even the longest is not."""
    ks = sorted(int(k) for k in context_loss if k != "all")
    found = None
    for k in reversed(ks):
        entry = context_loss[str(k)]
        if entry["minus_all"] <= max(tolerance, 2 * entry["minus_all_se"]):
            found = k
        else:
            break
    return found
