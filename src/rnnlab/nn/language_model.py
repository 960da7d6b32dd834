"""A recurrent language model: embedding, a stack of rnnlab recurrent layers, a decoder.

Shape legend: B batch, T time, E embedding size, H hidden units, L layers, V vocabulary size.

The model owns its generation (as nanoGPT's ``GPT.generate`` does): :meth:`LanguageModel.steps`
is the one decoding loop. It runs the prompt once and then feeds one token at a time, carrying
the recurrent state, so a token costs one step whatever the length of the text before it; each
step yields a :class:`~rnnlab.nn.sampling.GenerationStep` (token, probability, top
alternatives, state, gates when asked). :meth:`LanguageModel.generate` (token ids), ``rnnlab
generate``, ``rnnlab serve`` and ``rnnlab inspect`` all read those steps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from rnnlab.nn.backends import PRECISIONS, Precision
from rnnlab.nn.decoder_loss import decoder_cross_entropy
from rnnlab.nn.dropout import Dropout
from rnnlab.nn.registry import CELL_NAMES, layer_class
from rnnlab.nn.sampling import GenerationStep, check_sampling, sample_next

__all__ = [
    "LanguageModel",
    "GenerationStep",
    "State",
    "detach_state",
    "check_sampling",
    "sample_next",
    "MAX_NEW_TOKENS",
]

State = Tensor | tuple  # (L, B, H), or the cell's named tuple of such (LSTMState, SLSTMState...)
MAX_NEW_TOKENS = 100_000  # generate() refuses more: a typo should not run for hours
SCORE_CHUNK = 1024  # score() runs long texts in pieces of this many steps, carrying the state


def detach_state(state: State) -> State:
    """The state cut from the graph that made it: truncated BPTT between windows (the
    ``repackage_hidden`` of PyTorch's word_language_model example)."""
    if isinstance(state, tuple):  # a cell's named tuple (LSTMState, SLSTMState, ...)
        return type(state)(*(part.detach() for part in state))
    return state.detach()


class LanguageModel(nn.Module):
    """Next-token model: ``Embedding -> dropout -> RNN/LSTM/GRU stack -> dropout -> Linear``.

    ``logits[b, t]`` scores the token that follows ``ids[b, :t + 1]`` (given the initial state).

    Args:
        vocab_size: V, the number of token ids.
        embedding_dim: E.
        hidden_size: H of every recurrent layer.
        num_layers: L, stacked in one :class:`rnnlab.nn.LSTM` / ``GRU`` / ``RNN``.
        cell: a name of the cell registry (:data:`rnnlab.nn.registry.CELL_NAMES`):
            ``"lstm"``, ``"gru"`` or ``"rnn"`` (tanh).
        dropout: applied to the embeddings, between recurrent layers and to the last layer's
            outputs, in training (as in Zaremba et al. 2014 and PyTorch's example).
        tie_weights: the decoder uses the embedding matrix as its weight (Press & Wolf 2017,
            Inan et al. 2017); needs ``hidden_size == embedding_dim``.
        backend: passed to the recurrent layer (``"auto"`` picks the fastest that can run).
        precision: ``"fp32"``, or ``"bf16"`` (LSTM only): the recurrent layer's GEMMs and the
            fused decoder loss of :meth:`forward` with ``targets`` take bf16 operands, the
            parameters staying float32 (see :class:`rnnlab.nn.LSTM`).
        **layer_options: passed to the recurrent layer: for LSTM ``forget_bias`` and the
            variants (``layer_norm``, ``proj_size``, ``peepholes``, ``recurrent_dropout``,
            ``zoneout``); with ``proj_size`` the decoder reads the P-wide projection.

    Initialisation as PyTorch's example: embedding and decoder weights uniform in [-0.1, 0.1],
    decoder bias zero; the recurrent layer keeps its own (LSTM forget bias 1, Jozefowicz et al.
    2015).
    """

    def __init__(
        self,
        vocab_size: int,
        embedding_dim: int,
        hidden_size: int,
        num_layers: int = 1,
        cell: str = "lstm",
        dropout: float = 0.0,
        tie_weights: bool = False,
        backend: str = "auto",
        precision: Precision = "fp32",
        **layer_options: object,
    ) -> None:
        super().__init__()
        for name, value in (
            ("vocab_size", vocab_size),
            ("embedding_dim", embedding_dim),
            ("hidden_size", hidden_size),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"LanguageModel expected a positive int {name}, got {value!r}")
        if cell not in CELL_NAMES:
            raise ValueError(f"LanguageModel expected cell in {CELL_NAMES}, got {cell!r}")
        if precision not in PRECISIONS or (precision == "bf16" and cell != "lstm"):
            raise ValueError(
                f"LanguageModel expected precision 'fp32', or 'bf16' with cell='lstm' (only "
                f"LSTM has a bf16 mode), got precision={precision!r} with cell={cell!r}"
            )
        if not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"LanguageModel expected dropout in [0, 1), got {dropout!r}")
        width = layer_options.get("proj_size") or hidden_size  # what the decoder reads
        if tie_weights and width != embedding_dim:
            raise ValueError(
                "LanguageModel with tie_weights=True expected hidden_size == embedding_dim "
                f"(or proj_size == embedding_dim: the decoder reuses the (V, E) embedding), got "
                f"{'proj_size' if width != hidden_size else 'hidden_size'}={width}, "
                f"embedding_dim={embedding_dim}"
            )
        self.vocab_size = vocab_size
        self.embedding_dim = embedding_dim
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.cell = cell
        self.tie_weights = bool(tie_weights)
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        self.drop = Dropout(dropout)
        kwargs = {"precision": precision, **layer_options} if cell == "lstm" else layer_options
        self.rnn = layer_class(cell)(
            embedding_dim, hidden_size, num_layers, dropout=dropout, backend=backend, **kwargs
        )
        self.decoder = nn.Linear(self.rnn.output_size, vocab_size)
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)
        if self.tie_weights:
            self.decoder.weight = self.embedding.weight
        else:
            nn.init.uniform_(self.decoder.weight, -0.1, 0.1)

    def extra_repr(self) -> str:
        return f"cell={self.cell!r}, tie_weights={self.tie_weights}"

    def init_state(self, batch_size: int) -> State:
        """Zeros for ``batch_size`` streams: (L, B, H), or the cell's named tuple of zeros
        (an ``LSTMState`` of two (L, B, H) for LSTM), as the layer starts from."""
        return self.rnn.zero_state(batch_size)

    def forward(
        self, ids: Tensor, state: State | None = None, *, targets: Tensor | None = None
    ) -> tuple[Tensor, State]:
        """Logits of the next token at every position, and the state after the last one; given
        ``targets``, the mean cross-entropy in place of the logits (as nanoGPT's ``GPT.forward``),
        so a training step under DistributedDataParallel still goes through ``forward``.

        Args:
            ids: (B, T) integer token ids in [0, V).
            state: the state to start from (e.g. the last window's, detached); zeros if None.
            targets: (B, T) integer ids, the token after each of ``ids``, or None. The loss is
                the same value and gradients as ``cross_entropy`` over the logits, computed
                with the decoder and the softmax fused
                (:func:`rnnlab.nn.decoder_loss.decoder_cross_entropy`, bf16 GEMM operands when
                the recurrent layer runs in bf16 mode): no (B, T, V) logits are kept for the
                backward beyond the one gradient buffer.

        Returns:
            ``(logits, state)``: logits (B, T, V); state shaped as :meth:`init_state`'s. With
            ``targets``: ``(loss, state)``, loss a scalar in nats per token.
        """
        if targets is not None and targets.shape != ids.shape:
            raise ValueError(
                f"LanguageModel expected targets shaped like ids {tuple(ids.shape)}, got "
                f"{tuple(targets.shape)}"
            )
        out, state = self._hidden(ids, state)  # (B, T, H)
        if targets is None:
            return self.decoder(self.drop(out)), state  # (B, T, V)
        hidden = self.drop(out).flatten(0, 1)  # (B*T, H)
        bf16 = self.rnn.precision == "bf16"
        loss = decoder_cross_entropy(
            hidden, self.decoder.weight, self.decoder.bias, targets.flatten(), bf16=bf16
        )
        return loss, state

    def _hidden(self, ids: Tensor, state: State | None, return_gates: bool = False) -> tuple:
        """The last recurrent layer's outputs (B, T, H) and the state, for checked ``ids``;
        with ``return_gates``, the layer's gates third (see :meth:`rnnlab.nn.LSTM.forward`)."""
        if ids.dim() != 2 or ids.dtype.is_floating_point or ids.dtype == torch.bool:
            raise ValueError(
                f"LanguageModel expected integer ids of shape (B, T), got {ids.dtype} "
                f"{tuple(ids.shape)}"
            )
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.vocab_size):
            raise ValueError(
                f"LanguageModel expected ids in [0, {self.vocab_size}), got values from "
                f"{int(ids.min())} to {int(ids.max())}"
            )
        x = self.drop(self.embedding(ids))  # (B, T, E)
        return self.rnn(x, state, return_gates=return_gates)  # (B, T, H), state[, gates]

    # -- using a trained model ------------------------------------------------------------------
    @contextmanager
    def _evaluating(self) -> Iterator[None]:
        """Eval mode (no dropout) and no autograd inside; the previous mode restored after."""
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            self.train(was_training)

    def score(
        self,
        ids: Sequence[int] | Tensor,
        context: Sequence[int] | Tensor = (),
        progress: Callable[[int], None] | None = None,
        state: State | None = None,
    ) -> Tensor:
        """Log-probability of each token of ``ids`` given the tokens before it.

        Args:
            ids: (T,) or (B, T) token ids.
            context: (C,) or (B, C) ids read before ``ids`` and not scored (e.g. ``[<eos>]``, so
                the first word is scored as the start of a line). Without it the first token has
                nothing to be predicted from, and only tokens 1..T-1 are scored.
            progress: called with the number of steps read after each piece (a progress bar).
            state: what the context is read from, (L, 1, H) or (L, B, H); None: zeros.

        Returns:
            float (T,) or (B, T) natural-log probabilities, (T - 1,) or (B, T - 1) without a
            context. Perplexity is ``exp(-mean)``, bits per token ``-mean / ln 2``. Long texts
            run in pieces of :data:`SCORE_CHUNK` steps, carrying the state.
        """
        device = self.decoder.weight.device
        ids = torch.as_tensor(ids, dtype=torch.long, device=device)
        single = ids.dim() == 1
        ids = ids.unsqueeze(0) if single else ids  # (B, T)
        context = torch.as_tensor(context, dtype=torch.long, device=device)
        if ids.dim() != 2 or context.dim() > 2 or ids.shape[1] + context.shape[-1] < 2:
            raise ValueError(
                "LanguageModel.score expected (T,) or (B, T) ids, with T >= 2 when there is no "
                f"context, got ids {tuple(ids.shape)} and context {tuple(context.shape)}"
            )
        context = context.reshape(1, -1).expand(ids.shape[0], -1) if context.dim() < 2 else context
        full = torch.cat([context, ids], dim=1)  # (B, C + T)
        inputs, targets = full[:, :-1], full[:, 1:]  # (B, C + T - 1) each
        # written in place, not concatenated: a small tensor kept per piece pinned the freed
        # (B, t, V) blocks between them (glibc), and a 1 MB text grew the process by 300 MB
        scores: Tensor | None = None  # (B, C + T - 1)
        if state is not None and ids.shape[0] > 1:  # one start state for every row
            rows = lambda s: s.expand(s.shape[0], ids.shape[0], *s.shape[2:]).contiguous()  # noqa: E731
            state = type(state)(*map(rows, state)) if isinstance(state, tuple) else rows(state)
        with self._evaluating():
            for t0 in range(0, inputs.shape[1], SCORE_CHUNK):
                logits, state = self(inputs[:, t0 : t0 + SCORE_CHUNK], state)  # (B, t, V)
                wide = torch.promote_types(logits.dtype, torch.float32)  # bf16 -> fp32
                logp = torch.log_softmax(logits, dim=-1, dtype=wide)  # (B, t, V)
                target = targets[:, t0 : t0 + SCORE_CHUNK].unsqueeze(-1)  # (B, t, 1)
                if scores is None:
                    scores = torch.empty(targets.shape, dtype=wide, device=device)
                scores[:, t0 : t0 + target.shape[1]] = logp.gather(-1, target).squeeze(-1)
                del logits, logp  # (B, t, V) each
                if progress is not None:
                    progress(target.shape[1])
        scores = scores[:, max(context.shape[1] - 1, 0) :]  # (B, T or T - 1)
        return scores[0] if single else scores

    def generate(
        self,
        prompt_ids: Sequence[int] | Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | torch.Generator | None = None,
    ) -> Iterator[int]:
        """Yield ``max_new_tokens`` sampled token ids, one at a time, as each is drawn: the
        tokens of :meth:`steps` (same arguments, without the alternatives). The prompt must
        not be empty (P >= 1): it is what the text so far encodes to. Everything is checked
        here, before the first token, so a caller can fail before streaming."""
        shape = tuple(torch.as_tensor(prompt_ids).shape)
        if len(shape) != 1 or shape[0] < 1:
            raise ValueError(f"generate expected a non-empty (P,) prompt, got shape {shape}")
        steps = self.steps(prompt_ids, max_new_tokens, temperature, top_k, top_p, seed, top=0)
        return (step.token for step in steps)

    def steps(
        self,
        prompt_ids: Sequence[int] | Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | torch.Generator | None = None,
        *,
        top: int = 5,
        record_gates: bool = False,
        forced: Sequence[int] = (),
        state: State | None = None,
    ) -> Iterator[GenerationStep]:
        """The one decoding loop: yield ``max_new_tokens`` :class:`GenerationStep`, one per
        ``next()``.

        The prompt runs through the model once; then each token is drawn from the last
        logits, read alone with the carried state (never the prefix again) and yielded with
        its probability, the ``top`` likeliest alternatives, the state after it and, with
        ``record_gates``, its gates. Each step runs in eval mode under its own
        ``torch.no_grad`` and leaves neither behind between steps, so a caller may resume the
        iterator from another thread or hold a lock around each ``next()`` (as serve does).
        The arguments are checked here, before the first step.

        Args:
            prompt_ids: (P,) ids. P = 0 starts from the zero state, whose prediction is the
                decoder's reading of h = 0 (its bias).
            max_new_tokens: 0..:data:`MAX_NEW_TOKENS`.
            temperature: > 0; logits are divided by it (< 1 sharper, > 1 flatter).
            top_k: draw only among the k most likely tokens (>= 1; ``top_k=1`` is greedy
                decoding); None: all. Larger than V means all.
            top_p: nucleus sampling (Holtzman et al. 2020): draw among the fewest most likely
                tokens whose probabilities sum to at least p, 0 < p <= 1; None: all.
            seed: an int seeds a private generator so the same call gives the same text; a
                ``torch.Generator`` is drawn from as it is; None uses torch's global one.
            top: how many ``(id, probability)`` alternatives each step carries (0: none).
            record_gates: give each step's gates; routed to the recurrent layer as its per-call
                ``return_gates`` (the reference loop, the only one that records them).
            forced: ids read as the first steps instead of drawn (teacher forcing, as
                ``rnnlab inspect`` reads a text); at most ``max_new_tokens`` of them.
            state: the batch-of-one state (L, 1, H) the prompt is read from; None: zeros. A
                language-model run keeps a real one, reached in training just before a
                document boundary (:meth:`rnnlab.tasks.LanguageModelTask.start_state`).
        """
        device = self.decoder.weight.device
        prompt = torch.as_tensor(prompt_ids, dtype=torch.long, device=device)
        if prompt.dim() != 1:
            raise ValueError(f"generate expected a (P,) prompt, got shape {tuple(prompt.shape)}")
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int):
            raise ValueError(f"generate expected an int max_new_tokens, got {max_new_tokens!r}")
        if not 0 <= max_new_tokens <= MAX_NEW_TOKENS:
            raise ValueError(
                f"generate expected 0 <= max_new_tokens <= {MAX_NEW_TOKENS}, got {max_new_tokens}"
            )
        check_sampling(temperature, top_k, top_p)
        if isinstance(top, bool) or not isinstance(top, int) or top < 0:
            raise ValueError(f"generate expected an int top >= 0, got {top!r}")
        forced = [int(t) for t in forced]
        if len(forced) > max_new_tokens:
            raise ValueError(
                f"generate expected at most max_new_tokens={max_new_tokens} forced ids, got "
                f"{len(forced)}"
            )
        generator = seed if isinstance(seed, torch.Generator) else None
        if seed is not None and generator is None:
            generator = torch.Generator(device=device).manual_seed(int(seed))
        return self._steps(
            prompt,
            max_new_tokens,
            (temperature, top_k, top_p, generator),
            top,
            record_gates,
            forced,
            state,
        )

    def _steps(
        self,
        prompt: Tensor,
        max_new_tokens: int,
        sampling: tuple,
        top: int,
        record_gates: bool,
        forced: list[int],
        state: State | None,
    ) -> Iterator[GenerationStep]:
        """The loop of :meth:`steps` (arguments already checked)."""
        logits: Tensor | None = None  # (1, t, V): the prediction after the last token read
        for k in range(max_new_tokens):
            with self._evaluating():  # per step: no grad mode or eval mode held across yields
                if logits is None:
                    logits, state, _ = self._read(prompt[None], state, False)  # the prompt, once
                last = logits[0, -1]  # (V,)
                token = forced[k] if k < len(forced) else sample_next(last, *sampling)
                probs = torch.softmax(last.double(), dim=-1)  # (V,), at temperature 1
                alternatives: tuple[tuple[int, float], ...] = ()
                if top:
                    best = torch.topk(probs, min(top, probs.shape[0]))  # the likeliest, sorted
                    pairs = zip(best.indices.tolist(), best.values.tolist(), strict=True)
                    alternatives = tuple(pairs)
                step = torch.tensor([[token]], device=prompt.device)  # (1, 1)
                logits, state, gates = self._read(step, state, record_gates)  # (1, 1, V)
            yield GenerationStep(token, float(probs[token]), alternatives, state, gates)

    def _read(
        self, ids: Tensor, state: State | None, record_gates: bool
    ) -> tuple[Tensor, State, tuple[dict[str, Tensor], ...] | None]:
        """(1, t) ``ids`` read from ``state``: logits (1, t, V), the state after them and, with
        ``record_gates``, per layer name -> (H,) gates of the one step read (t = 1)."""
        if ids.shape[1] == 0:  # nothing read yet: the given (or zero) state's prediction
            state = self.init_state(1) if state is None else state
            h = state.h if isinstance(state, tuple) else state  # (L, 1, H)
            return self.decoder(h[-1:]), state, None  # (1, 1, V)
        if not record_gates:
            logits, state = self(ids, state)  # (1, t, V)
            return logits, state, None
        out, state, trace = self._hidden(ids, state, return_gates=True)  # (1, 1, H)
        gates = tuple({name: v[0, -1] for name, v in layer[0].items()} for layer in trace)
        return self.decoder(self.drop(out)), state, gates
