"""Global attention over an encoder's outputs, for :class:`rnnlab.nn.Seq2Seq`.

Shape legend: B batch, T decoder steps, S source steps, H hidden units (decoder and memory).

Every decoder state ``h_t`` scores every memory vector ``m_s`` (the encoder's outputs), the
scores are softmax-normalised over the real source steps (padding gets weight exactly 0) and
the context ``c_t = sum_s a_ts m_s`` is combined with ``h_t`` into the attentional state
``h~_t = tanh(W_c [c_t; h_t])`` (Luong et al. 2015, eq. 5) that the output layer reads.

Scores (``kind``):

* ``"dot"``: ``h_t . m_s`` (Luong et al. 2015);
* ``"general"``: ``h_t . (W_a m_s)`` (Luong et al. 2015);
* ``"additive"``: ``v . tanh(W_q h_t + W_k m_s)`` (Bahdanau et al. 2014's scoring function,
  applied, as in Luong's global model and OpenNMT's ``mlp`` attention, to the current
  decoder state rather than the previous one).

The memory side (``W_a m_s``, ``W_k m_s``) is computed once per source (:meth:`keys`), not
once per decoder step.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

__all__ = ["ATTENTION_KINDS", "Attention"]

AttentionKind = Literal["dot", "general", "additive"]
ATTENTION_KINDS: tuple[str, ...] = ("dot", "general", "additive")


class Attention(nn.Module):
    """Global attention of ``kind`` over H-wide memory vectors, from H-wide decoder states.

    ``keys(memory) -> keys`` once per source; ``forward(query, keys, memory, mask) ->
    (attentional (B, T, H), weights (B, T, S))``.
    """

    def __init__(self, hidden_size: int, kind: AttentionKind = "general") -> None:
        super().__init__()
        if kind not in ATTENTION_KINDS:
            raise ValueError(f"Attention expected kind in {ATTENTION_KINDS}, got {kind!r}")
        self.kind = kind
        H = hidden_size
        if kind == "general":
            self.W_a = nn.Linear(H, H, bias=False)
        elif kind == "additive":
            self.W_q = nn.Linear(H, H, bias=False)
            self.W_k = nn.Linear(H, H)
            self.v = nn.Linear(H, 1, bias=False)
        self.W_c = nn.Linear(2 * H, H, bias=False)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}"

    def keys(self, memory: Tensor) -> Tensor:
        """(B, S, H) the memory's side of the scores (``W_a m``, ``W_k m`` or ``m`` itself)."""
        if self.kind == "general":
            return self.W_a(memory)
        if self.kind == "additive":
            return self.W_k(memory)
        return memory

    def scores(self, query: Tensor, keys: Tensor) -> Tensor:
        """(B, T, S) unnormalised scores of (B, T, H) queries against (B, S, H) keys."""
        if self.kind == "additive":
            q = self.W_q(query)  # (B, T, H)
            joint = torch.tanh(q.unsqueeze(2) + keys.unsqueeze(1))  # (B, T, S, H)
            return self.v(joint).squeeze(-1)  # (B, T, S)
        return torch.bmm(query, keys.transpose(1, 2))  # (B, T, S)

    def forward(
        self, query: Tensor, keys: Tensor, memory: Tensor, mask: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Attend from ``query`` (B, T, H) over ``memory`` (B, S, H) with ``keys`` from
        :meth:`keys`; ``mask`` (B, S) bool, True at real source steps (at least one per row).

        Returns ``(attentional, weights)``: ``tanh(W_c [c; h])`` (B, T, H), and the weights
        (B, T, S), each row summing to 1 over the real steps and exactly 0 on padding."""
        scores = self.scores(query, keys)  # (B, T, S)
        scores = scores.masked_fill(~mask.unsqueeze(1), float("-inf"))
        weights = torch.softmax(scores, dim=-1)  # (B, T, S)
        context = torch.bmm(weights, memory)  # (B, T, H)
        attentional = torch.tanh(self.W_c(torch.cat([context, query], dim=-1)))  # (B, T, H)
        return attentional, weights
