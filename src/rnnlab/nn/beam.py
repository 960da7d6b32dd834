"""Greedy decoding and batched beam search for :class:`rnnlab.nn.Seq2Seq` (any model with its
``encode``, ``decode_step``, ``evaluating`` and ``bos``/``eos`` ids).

Shape legend: B sources, K beam width, S source steps, V target vocabulary.

Both step the decoder's carried state with :meth:`Seq2Seq.decode_step` (one token per beam per
step, the prefix never re-read). Beam search keeps K hypotheses per source in one (B*K) batch:
each step scores every extension of every live hypothesis, keeps each source's K best, and
moves the ones that end in ``</s>`` to that source's finished list, refilling the beam from
the remaining candidates. A source is done when K hypotheses have finished (or at
``max_length``, when the live ones are added unfinished). Hypotheses are ranked by their
log-probability divided by the length penalty ``((5 + |y|) / 6) ** length_penalty`` (Wu et al.
2016; 0 ranks by the log-probability itself). Neither ever emits ``<pad>`` or ``<s>`` (no
target holds them): their log-probabilities are set to -inf before choosing; the others' are
the model's own.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor

__all__ = ["MAX_BEAM", "MAX_LENGTH", "Hypothesis", "beam_search", "check_options", "greedy"]

MAX_BEAM = 64
MAX_LENGTH = 1000


class Hypothesis(NamedTuple):
    """One output: ``tokens`` (without ``</s>``), ``score`` the sum of their log-probabilities
    and of ``</s>``'s, ``ranking`` the score divided by the length penalty, ``attention``
    (len(tokens) + 1, S) the weights that predicted each token and ``</s>`` (real source steps
    only), ``finished`` False when ``max_length`` cut it before ``</s>`` (then no ``</s>`` row)."""

    tokens: tuple[int, ...]
    score: float
    ranking: float
    attention: Tensor
    finished: bool


def check_options(beam: Any, n_best: Any, max_length: Any, length_penalty: Any) -> None:
    """ValueError, saying what was expected, for decoding options that cannot work."""
    for name, value, high in (("beam", beam, MAX_BEAM), ("max_length", max_length, MAX_LENGTH)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
            raise ValueError(f"expected {name} an int in 1..{high}, got {value!r}")
    if isinstance(n_best, bool) or not isinstance(n_best, int) or not 1 <= n_best <= beam:
        raise ValueError(f"expected n_best an int in 1..beam={beam}, got {n_best!r}")
    if isinstance(length_penalty, bool) or not isinstance(length_penalty, (int, float)):
        raise ValueError(f"expected a number length_penalty >= 0, got {length_penalty!r}")
    if not 0 <= length_penalty < float("inf"):
        raise ValueError(f"expected a number length_penalty >= 0, got {length_penalty!r}")


def _step(model: Any, memory: Any, tokens: Tensor, state: Any) -> tuple:
    """:meth:`Seq2Seq.decode_step` with ``<pad>`` and ``<s>`` ruled out."""
    logp, state, weights, _ = model.decode_step(memory, tokens, state)  # (N, V), (N, S)
    logp[:, [model.pad, model.bos]] = float("-inf")
    return logp, state, weights


def _ranking(score: float, length: int, alpha: float) -> float:
    return score / (((5 + length) / 6) ** alpha) if alpha else score


def translate(
    model: Any,
    src: Tensor,
    src_lengths: Tensor,
    beam: int = 1,
    n_best: int = 1,
    max_length: int = 100,
    length_penalty: float = 0.0,
) -> list[list[Hypothesis]]:
    """Per source, its ``n_best`` best :class:`Hypothesis`, best first: greedy decoding for
    ``beam=1``, else :func:`beam_search`. Eval mode and no autograd inside."""
    check_options(beam, n_best, max_length, length_penalty)
    with model.evaluating():
        if beam == 1:
            return [[h] for h in greedy(model, src, src_lengths, max_length)]
        return beam_search(model, src, src_lengths, beam, n_best, max_length, length_penalty)


def greedy(model: Any, src: Tensor, src_lengths: Tensor, max_length: int) -> list[Hypothesis]:
    """The argmax token at every step, for a batch of sources at once."""
    memory, state = model.encode(src, src_lengths)
    B = src.shape[0]
    tokens = torch.full((B,), model.bos, dtype=torch.long, device=src.device)
    done = torch.zeros(B, dtype=torch.bool, device=src.device)
    scores = torch.zeros(B, dtype=torch.float32, device=src.device)
    steps, rows = [], []
    for _ in range(max_length):
        logp, state, weights = _step(model, memory, tokens, state)  # (B, V), (B, S)
        best, tokens = logp.max(dim=-1)  # (B,) each
        scores = scores + best.masked_fill(done, 0.0)
        steps.append(tokens)
        rows.append(weights)
        done = done | (tokens == model.eos)
        if bool(done.all()):
            break
    ids, attention = torch.stack(steps, 1).tolist(), torch.stack(rows, 1)  # (B, t), (B, t, S)
    lengths = src_lengths.tolist()
    out = []
    for b in range(B):
        seq = ids[b]
        finished = model.eos in seq
        n = seq.index(model.eos) if finished else len(seq)
        rows_b = attention[b, : n + finished, : lengths[b]]
        score = float(scores[b])
        out.append(Hypothesis(tuple(seq[:n]), score, score, rows_b, finished))
    return out


def beam_search(
    model: Any,
    src: Tensor,
    src_lengths: Tensor,
    beam: int,
    n_best: int,
    max_length: int,
    length_penalty: float = 0.0,
) -> list[list[Hypothesis]]:
    """Beam search of width ``beam`` over a batch of sources (see the module docstring)."""
    B, K, device = src.shape[0], beam, src.device
    memory, state = model.encode(src, src_lengths)
    flat = torch.arange(B, device=device).repeat_interleave(K)  # (B*K,)
    memory, state = memory.select(flat), state.select(flat)
    scores = torch.full((B, K), float("-inf"), device=device)
    scores[:, 0] = 0.0  # one live hypothesis per source at first
    tokens = torch.full((B * K,), model.bos, dtype=torch.long, device=device)
    parents: list[list[list[int]]] = []  # per step (B, K): the beam each came from
    chosen: list[list[list[int]]] = []  # per step (B, K): the token it read
    rows: list[Tensor] = []  # per step (B, K, S): the attention that predicted it
    finished: list[list[Hypothesis]] = [[] for _ in range(B)]
    done = [False] * B
    lengths = src_lengths.tolist()
    base = (torch.arange(B, device=device) * K)[:, None]  # (B, 1)

    def backtrack(b: int, k: int, t: int, score: float, ended: bool) -> Hypothesis:
        seq, att = [], []
        for j in range(t, -1, -1):
            seq.append(chosen[j][b][k])
            att.append(rows[j][b, k, : lengths[b]])
            k = parents[j][b][k]
        seq.reverse()
        att.reverse()
        out = tuple(seq[:-1]) if ended else tuple(seq)
        rank = _ranking(score, len(seq), length_penalty)
        return Hypothesis(out, score, rank, torch.stack(att), ended)

    for t in range(max_length):
        logp, state, weights = _step(model, memory, tokens, state)  # (B*K, V)
        V = logp.shape[-1]
        total = (scores.view(B * K, 1) + logp).view(B, K * V)  # (B, K*V)
        top, index = total.topk(K, dim=1)  # (B, K) each
        beams, words = index // V, index % V  # (B, K) each
        order = (base + beams).view(-1)  # (B*K,) rows of the live batch they extend
        state = state.select(order)
        parents.append(beams.tolist())
        chosen.append(words.tolist())
        rows.append(weights[order].view(B, K, -1))  # (B, K, S)
        scores = top.clone()
        ended = (words == model.eos) & torch.isfinite(top)  # (B, K)
        for b, k in ended.nonzero().tolist():
            if not done[b]:
                finished[b].append(backtrack(b, k, t, float(top[b, k]), True))
        scores[ended] = float("-inf")
        for b in range(B):
            done[b] = done[b] or len(finished[b]) >= K
            if done[b]:
                scores[b] = float("-inf")
        if all(done):
            break
        tokens = words.view(-1)
    for b in range(B):
        if not done[b]:  # max_length reached: the live ones, unfinished
            for k in torch.isfinite(scores[b]).nonzero()[:, 0].tolist():
                finished[b].append(backtrack(b, k, len(chosen) - 1, float(scores[b, k]), False))
    return [sorted(f, key=lambda h: -h.ranking)[:n_best] for f in finished]
