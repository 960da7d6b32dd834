"""An encoder-decoder with attention (Sutskever et al. 2014; Bahdanau et al. 2014; Luong et
al. 2015): :class:`Seq2Seq`.

Shape legend: B batch, S source steps, T target steps, E embedding size, H hidden units (the
decoder's, and the encoder's two directions together), L decoder layers, V target vocabulary.

The model owns its decoding. :meth:`Seq2Seq.encode` reads a batch of sources once;
:meth:`Seq2Seq.decode_step` advances the decoder by one token from a carried
:class:`DecoderState` (never re-reading the prefix); greedy decoding, batched beam search
(:mod:`rnnlab.nn.beam`) and :meth:`Seq2Seq.steps` (one :class:`Seq2SeqStep` at a time, the step
shape of the language model's generator plus the attention row) are all loops over it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from rnnlab.nn import beam
from rnnlab.nn.attention import ATTENTION_KINDS, Attention
from rnnlab.nn.cells import LSTMState
from rnnlab.nn.dropout import Dropout
from rnnlab.nn.registry import CELL_NAMES, layer_class

__all__ = ["DecoderState", "Memory", "Seq2Seq", "Seq2SeqStep", "BOS", "EOS", "PAD"]

PAD, BOS, EOS = 0, 2, 3  # the ids rnnlab.data.pairs gives <pad>, <s> and </s> on both sides
DECODER_CELLS = ("lstm", "gru")


class Memory(NamedTuple):
    """A batch of encoded sources: ``bank`` (B, S, H) the encoder's outputs, ``keys`` (B, S, H)
    their side of the attention scores, ``mask`` (B, S) bool, True at real steps."""

    bank: Tensor
    keys: Tensor
    mask: Tensor

    def select(self, index: Tensor) -> Memory:
        """The rows ``index`` (e.g. each source repeated once per beam)."""
        return Memory(self.bank[index], self.keys[index], self.mask[index])


class DecoderState(NamedTuple):
    """What the decoder carries from one token to the next: ``rnn`` its layers' state, (L, B,
    H) or an ``LSTMState`` of two such, and ``feed`` (B, H) the last attentional state (read
    with the next token under input feeding; zeros before the first)."""

    rnn: Any
    feed: Tensor

    def select(self, index: Tensor) -> DecoderState:
        rnn = self.rnn
        if isinstance(rnn, LSTMState):
            rnn = LSTMState(rnn.h[:, index], rnn.c[:, index])
        else:
            rnn = rnn[:, index]
        return DecoderState(rnn, self.feed[index])


class Seq2SeqStep(NamedTuple):
    """One decoding step of :meth:`Seq2Seq.steps`: the fields of the language model's
    ``GenerationStep`` (``token``, ``probability`` given everything before, ``top`` the likeliest
    ``(id, probability)`` pairs, ``state`` after reading the token, ``gates`` per decoder layer
    name -> (H,) or None), and ``attention`` (S,) the weights over the source that predicted
    the token."""

    token: int
    probability: float
    top: tuple[tuple[int, float], ...]
    state: DecoderState
    gates: tuple[dict[str, Tensor], ...] | None
    attention: Tensor


def _log_softmax(logits: Tensor) -> Tensor:
    """Log-probabilities in at least float32 (bf16 logits widened)."""
    return torch.log_softmax(logits, dim=-1, dtype=torch.promote_types(logits.dtype, torch.float32))


def _positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"Seq2Seq expected a positive int {name}, got {value!r}")


class Seq2Seq(nn.Module):
    """Embedding -> bidirectional encoder -> attentional decoder -> Linear.

    The encoder is a bidirectional stack of ``encoder_layers`` layers of any registry cell
    (:func:`rnnlab.nn.registry.layer_class`), H/2 units per direction, so its outputs are H
    wide. The decoder's first state is ``tanh(W_b [h_fwd; h_bwd])`` of the encoder's top layer
    for every decoder layer (zero cell state for an LSTM). At each target step the decoder's
    top state attends over the encoder's outputs (:class:`rnnlab.nn.attention.Attention`) and
    the attentional state ``h~`` gives the logits.

    Teacher forcing without input feeding runs the decoder layers over the whole target in one
    call (the fast kernels do the work) and attends for all steps at once. With
    ``input_feeding`` (Luong et al. 2015, section 3.3) each step reads ``[embedding; h~ of the
    step before]``, so training loops over the steps; both give the logits of
    :meth:`decode_step` run token by token.

    Args:
        source_vocab, target_vocab: vocabulary sizes (ids :data:`PAD` 0, :data:`BOS` 2 and
            :data:`EOS` 3 as :mod:`rnnlab.data.pairs` numbers them).
        embedding_dim: E of both embeddings.
        hidden_size: H, even (H/2 per encoder direction).
        encoder_layers, decoder_layers: stack depths.
        cell: the encoder's cell (a registry name); decoder_cell ``"lstm"`` or ``"gru"``.
        attention: ``"dot"``, ``"general"`` or ``"additive"``.
        input_feeding: feed ``h~`` back into the next step's input.
        dropout: on the embeddings, between stacked layers and on ``h~``, in training.
        tie_weights: the output layer reuses the target embedding (Press & Wolf 2017); needs
            E == H.
        backend: the recurrent layers' backend.
        encoder_options: the encoder's variant options (LSTM: ``layer_norm``, ``peepholes``,
            ``recurrent_dropout``, ``zoneout``; GRU: ``layer_norm``, ``recurrent_dropout``,
            ``zoneout``); the decoder, which steps one token at a time, stays the plain cell.
        precision: ``"bf16"`` runs the encoder's and decoder's matrix products on bf16
            operands (:class:`rnnlab.LSTM`'s ``precision``; weights and states stay float32);
            it needs ``cell`` and ``decoder_cell`` ``"lstm"``.
    """

    def __init__(
        self,
        source_vocab: int,
        target_vocab: int,
        embedding_dim: int = 64,
        hidden_size: int = 256,
        encoder_layers: int = 1,
        decoder_layers: int = 1,
        cell: str = "lstm",
        decoder_cell: str = "lstm",
        attention: str = "general",
        input_feeding: bool = False,
        dropout: float = 0.0,
        tie_weights: bool = False,
        backend: str = "auto",
        precision: str = "fp32",
        encoder_options: dict | None = None,
    ) -> None:
        super().__init__()
        for name in ("source_vocab", "target_vocab", "embedding_dim", "hidden_size"):
            _positive(name, locals()[name])
        _positive("encoder_layers", encoder_layers)
        _positive("decoder_layers", decoder_layers)
        if hidden_size % 2:
            raise ValueError(
                f"Seq2Seq expected an even hidden_size (H/2 per encoder direction), got "
                f"{hidden_size}"
            )
        if cell not in CELL_NAMES:
            raise ValueError(f"Seq2Seq expected cell in {CELL_NAMES}, got {cell!r}")
        if decoder_cell not in DECODER_CELLS:
            raise ValueError(
                f"Seq2Seq expected decoder_cell in {DECODER_CELLS}, got {decoder_cell!r}"
            )
        if attention not in ATTENTION_KINDS:
            raise ValueError(f"Seq2Seq expected attention in {ATTENTION_KINDS}, got {attention!r}")
        if not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"Seq2Seq expected dropout in [0, 1), got {dropout!r}")
        if tie_weights and embedding_dim != hidden_size:
            raise ValueError(
                "Seq2Seq with tie_weights=True expected embedding_dim == hidden_size, got "
                f"embedding_dim={embedding_dim}, hidden_size={hidden_size}"
            )
        if precision != "fp32" and (cell, decoder_cell) != ("lstm", "lstm"):
            raise ValueError(
                f"Seq2Seq with precision={precision!r} expected cell='lstm' and "
                f"decoder_cell='lstm' (only rnnlab.LSTM has a bf16 mode), got cell={cell!r}, "
                f"decoder_cell={decoder_cell!r}"
            )
        bf16 = {"precision": precision} if precision != "fp32" else {}
        E, H = embedding_dim, hidden_size
        self.source_vocab, self.target_vocab, self.hidden_size = source_vocab, target_vocab, H
        self.decoder_layers, self.decoder_cell = decoder_layers, decoder_cell
        self.input_feeding, self.tie_weights = bool(input_feeding), bool(tie_weights)
        self.source_embedding = nn.Embedding(source_vocab, E, padding_idx=PAD)
        self.target_embedding = nn.Embedding(target_vocab, E, padding_idx=PAD)
        self.encoder = layer_class(cell)(
            E,
            H // 2,
            encoder_layers,
            bidirectional=True,
            dropout=dropout,
            backend=backend,
            **bf16,
            **(encoder_options or {}),
        )
        self.bridge = nn.Linear(H, decoder_layers * H)
        self.decoder = layer_class(decoder_cell)(
            E + H if input_feeding else E,
            H,
            decoder_layers,
            dropout=dropout,
            backend=backend,
            **bf16,
        )
        self.attention = Attention(H, attention)  # type: ignore[arg-type]
        self.drop = Dropout(dropout)
        self.output = nn.Linear(H, target_vocab)
        if self.tie_weights:
            self.output.weight = self.target_embedding.weight

    pad, bos, eos = PAD, BOS, EOS  # what rnnlab.nn.beam starts at, stops at and never emits

    def extra_repr(self) -> str:
        return f"input_feeding={self.input_feeding}, tie_weights={self.tie_weights}"

    # -- reading the source -------------------------------------------------------------------
    def encode(self, src: Tensor, src_lengths: Tensor) -> tuple[Memory, DecoderState]:
        """Read (B, S) source ids with (B,) lengths (1..S, padding after): the memory to attend
        over and the decoder's first state."""
        self._check_ids("src", src, self.source_vocab)
        B, S = src.shape
        lengths = torch.as_tensor(src_lengths, device=src.device)
        if lengths.shape != (B,) or int(lengths.min()) < 1 or int(lengths.max()) > S:
            raise ValueError(
                f"Seq2Seq expected src_lengths of shape ({B},) in 1..{S}, got "
                f"{tuple(lengths.shape)} with values {lengths.tolist()[:8]}"
            )
        x = self.drop(self.source_embedding(src))  # (B, S, E)
        bank, final = self.encoder(x, lengths=lengths)  # (B, S, H), (2 * layers, B, H/2)
        h = final.h if isinstance(final, LSTMState) else final  # (2 * layers, B, H/2)
        top = torch.cat([h[-2], h[-1]], dim=-1)  # (B, H): forwards and backwards, top layer
        L, H = self.decoder_layers, self.hidden_size
        h0 = torch.tanh(self.bridge(top)).view(B, L, H).transpose(0, 1).contiguous()  # (L, B, H)
        rnn = LSTMState(h0, torch.zeros_like(h0)) if self.decoder_cell == "lstm" else h0
        mask = torch.arange(S, device=src.device)[None] < lengths[:, None]  # (B, S)
        memory = Memory(bank, self.attention.keys(bank), mask)
        return memory, DecoderState(rnn, bank.new_zeros(B, H))

    # -- teacher forcing ----------------------------------------------------------------------
    def forward(
        self, src: Tensor, src_lengths: Tensor, tgt: Tensor, return_attention: bool = False
    ):
        """Logits of each next target token under teacher forcing.

        Args:
            src: (B, S) source ids, padded with :data:`PAD` after ``src_lengths``.
            src_lengths: (B,) real source steps.
            tgt: (B, T) decoder inputs: :data:`BOS` then the target tokens (padding after the
                end is read but its logits mean nothing).

        Returns:
            logits (B, T, V): ``logits[b, t]`` scores the token after ``tgt[b, :t + 1]``; with
            ``return_attention``, ``(logits, weights (B, T, S))``.
        """
        self._check_ids("tgt", tgt, self.target_vocab)
        memory, state = self.encode(src, src_lengths)
        y = self.drop(self.target_embedding(tgt))  # (B, T, E)
        if self.input_feeding:
            outs, weights = [], []
            for t in range(tgt.shape[1]):
                att, w, state, _ = self._attend_step(memory, y[:, t : t + 1], state, False)
                outs.append(att)  # (B, 1, H)
                weights.append(w)  # (B, 1, S)
            attentional, weight = torch.cat(outs, dim=1), torch.cat(weights, dim=1)
        else:
            top, _ = self.decoder(y, state.rnn)  # (B, T, H): every step in one call
            attentional, weight = self.attention(top, memory.keys, memory.bank, memory.mask)
        logits = self.output(self.drop(attentional))  # (B, T, V)
        return (logits, weight) if return_attention else logits

    # -- one step at a time -------------------------------------------------------------------
    def _attend_step(
        self, memory: Memory, y: Tensor, state: DecoderState, record_gates: bool
    ) -> tuple[Tensor, Tensor, DecoderState, Any]:
        """Read (B, 1, E) embedded tokens from ``state``: ``(h~ (B, 1, H), weights (B, 1, S),
        the next state, the gates or None)``."""
        if self.input_feeding:
            y = torch.cat([y, state.feed.unsqueeze(1)], dim=-1)  # (B, 1, E + H)
        out = self.decoder(y, state.rnn, return_gates=record_gates)
        top, rnn = out[0], out[1]  # (B, 1, H)
        attentional, weights = self.attention(top, memory.keys, memory.bank, memory.mask)
        gates = out[2] if record_gates else None
        return attentional, weights, DecoderState(rnn, attentional[:, 0]), gates

    def decode_step(
        self, memory: Memory, tokens: Tensor, state: DecoderState, record_gates: bool = False
    ) -> tuple[Tensor, DecoderState, Tensor, Any]:
        """Read (B,) ``tokens`` from ``state``: ``(log-probabilities (B, V) of the next token,
        the next state, attention (B, S), gates)``; gates per layer a dict name -> (B, H) with
        ``record_gates`` (the reference loop records them), else None."""
        y = self.drop(self.target_embedding(tokens[:, None]))  # (B, 1, E)
        attentional, weights, state, trace = self._attend_step(memory, y, state, record_gates)
        logits = self.output(self.drop(attentional[:, 0]))  # (B, V)
        gates = None
        if trace is not None:
            gates = tuple({k: v[:, 0] for k, v in layer[0].items()} for layer in trace)
        return _log_softmax(logits), state, weights[:, 0], gates

    @contextmanager
    def evaluating(self) -> Iterator[None]:
        """Eval mode (no dropout) and no autograd inside; the previous mode restored after."""
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            self.train(was_training)

    def steps(
        self,
        src_ids: Sequence[int] | Tensor,
        max_length: int = 100,
        *,
        top: int = 5,
        record_gates: bool = False,
        forced: Sequence[int] = (),
    ) -> Iterator[Seq2SeqStep]:
        """Greedy decoding of one source, one :class:`Seq2SeqStep` per ``next()`` until
        :data:`EOS` (yielded) or ``max_length`` steps; with ``forced`` ids, exactly those are
        read instead (teacher forcing, to draw a given target's attention). Each step runs in
        eval mode under its own ``no_grad`` and holds neither between steps."""
        device = self.output.weight.device
        src = torch.as_tensor(src_ids, dtype=torch.long, device=device)
        if src.dim() != 1 or src.shape[0] < 1:
            raise ValueError(
                f"Seq2Seq.steps expected a non-empty (S,) source, got {tuple(src.shape)}"
            )
        _positive("max_length", max_length)
        forced = [int(t) for t in forced]
        with self.evaluating():
            memory, state = self.encode(src[None], torch.tensor([src.shape[0]], device=device))
        token = BOS
        for k in range(len(forced) or max_length):
            with self.evaluating():
                prev = torch.tensor([token], device=device)
                logp, state, weights, gates = self.decode_step(memory, prev, state, record_gates)
                probs = logp[0].double().exp()  # (V,)
                token = forced[k] if k < len(forced) else int(probs.argmax())
                best = torch.topk(probs, min(top, probs.shape[0])) if top else None
                alternatives = (
                    tuple(zip(best.indices.tolist(), best.values.tolist(), strict=True))
                    if best is not None
                    else ()
                )
                one = (
                    None
                    if gates is None
                    else tuple({k2: v[0] for k2, v in g.items()} for g in gates)
                )
            yield Seq2SeqStep(token, float(probs[token]), alternatives, state, one, weights[0])
            if token == EOS and not forced:
                return

    def score(self, src: Tensor, src_lengths: Tensor, tgt: Tensor) -> Tensor:
        """(B, T + 1) natural-log probabilities of each (B, T) target token (padded with
        :data:`PAD`, which scores 0) and of the :data:`EOS` after it, given the source."""
        B = tgt.shape[0]
        lengths = (tgt != PAD).sum(dim=1)  # (B,)
        bos = tgt.new_full((B, 1), BOS)
        padded = torch.cat([tgt, tgt.new_full((B, 1), PAD)], dim=1)  # (B, T + 1)
        gold = padded.scatter(1, lengths[:, None], EOS)  # (B, T + 1): the tokens, then </s>
        with self.evaluating():
            logits = self(src, src_lengths, torch.cat([bos, tgt], dim=1))  # (B, T + 1, V)
            logp = _log_softmax(logits).gather(-1, gold[..., None])[..., 0]
        return logp.masked_fill(gold == PAD, 0.0)

    def translate(self, src: Tensor, src_lengths: Tensor, **options: Any) -> list[list[Any]]:
        """Decode a batch of sources; see :func:`rnnlab.nn.beam.translate` for the options
        (``beam``, ``n_best``, ``max_length``, ``length_penalty``) and the results."""
        return beam.translate(self, src, src_lengths, **options)

    def _check_ids(self, name: str, ids: Tensor, vocab: int) -> None:
        if ids.dim() != 2 or ids.dtype.is_floating_point or ids.dtype == torch.bool:
            raise ValueError(
                f"Seq2Seq expected integer {name} ids of shape (B, T), got {ids.dtype} "
                f"{tuple(ids.shape)}"
            )
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab):
            raise ValueError(
                f"Seq2Seq expected {name} ids in [0, {vocab}), got values from {int(ids.min())} "
                f"to {int(ids.max())}"
            )
