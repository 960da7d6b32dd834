"""Language-model workloads F and G (issue 12): one whole training step of a word or character
language model, rnnlab against the same model on torch.nn.LSTM and nn.Linear.

Shape legend: B batch, T time (bptt), E embedding size, H hidden units, V vocabulary size.

    F  char LM: batch 64, bptt 128, V = 100, Embedding 64 -> 2 x LSTM 512 -> Linear 100
    G  word LM: batch 20, bptt 35, V = 10,000, Embedding 650 -> 2 x LSTM 650 -> Linear 10,000
       tied to the embedding (Zaremba et al. 2014's medium model, without its dropout)

A training step is everything: embedding, recurrent layers, decoder, softmax cross-entropy over
every position, backward, and an Adam step. rnnlab's model is
:class:`rnnlab.nn.language_model.LanguageModel`
(backend "auto"; ``rnnlab-bf16`` builds it with ``precision="bf16"``) called with targets, as
rnnlab's trainer does, so its decoder and loss run through
:func:`rnnlab.nn.decoder_loss.decoder_cross_entropy` (oneDNN GEMMs; bf16 operands with fp32
accumulation in bf16 mode; the softmax in one compiled pass). The torch model is
``nn.Embedding -> nn.LSTM(num_layers=2) -> nn.Linear`` with ``nn.functional.cross_entropy``;
both without dropout.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rnnlab.nn.language_model import LanguageModel

__all__ = ["LM_IMPLS", "LMRunner", "TorchLanguageModel", "build_language_model", "make_lm_batch"]

LM_IMPLS = (
    "rnnlab",
    "rnnlab-bf16",
    "rnnlab-fused",
    "torch",
    "rnnlab-mingru",
    "rnnlab-minlstm",
    "rnnlab-mingru-ref",
    "rnnlab-minlstm-ref",
    "rnnlab-slstm",
    "rnnlab-mlstm",
    "rnnlab-mingru-bf16",
    "rnnlab-minlstm-bf16",
)
# the cells of 2024 (Feng et al.; Beck et al.): the same model with another cell of the
# registry, on its fast path ("auto") or its step-by-step reference loop ("-ref")
MIN_IMPLS = {
    "rnnlab-mingru": ("mingru", "auto"),
    "rnnlab-minlstm": ("minlstm", "auto"),
    "rnnlab-mingru-ref": ("mingru", "reference"),
    "rnnlab-minlstm-ref": ("minlstm", "reference"),
    "rnnlab-slstm": ("slstm", "auto"),
    "rnnlab-mlstm": ("mlstm", "auto"),
    "rnnlab-mingru-bf16": ("mingru", "auto"),  # bf16 input GEMMs in the recurrent layers
    "rnnlab-minlstm-bf16": ("minlstm", "auto"),
}


class TorchLanguageModel(nn.Module):
    """``nn.Embedding -> nn.LSTM (batch first) -> nn.Linear``, optionally tied."""

    def __init__(self, vocab: int, embed: int, hidden: int, layers: int, tied: bool) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, embed)
        self.rnn = nn.LSTM(embed, hidden, layers, batch_first=True)
        self.decoder = nn.Linear(hidden, vocab)
        if tied:
            self.decoder.weight = self.embedding.weight

    def loss(self, x: Tensor, y: Tensor) -> Tensor:
        out, _ = self.rnn(self.embedding(x))  # (B, T, H)
        logits = self.decoder(out)  # (B, T, V)
        return nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())

    def step(self, ids: Tensor, state):
        """Logits (B, T, V) and the state after ``ids``, from ``state`` (None: zeros)."""
        out, state = self.rnn(self.embedding(ids), state)
        return self.decoder(out), state


class _RnnlabLM(nn.Module):
    def __init__(self, model: LanguageModel) -> None:
        super().__init__()
        self.model = model

    def loss(self, x: Tensor, y: Tensor) -> Tensor:
        return self.model(x, targets=y)[0]  # the decoder and loss fused, bf16 with the rnn

    def step(self, ids: Tensor, state):
        return self.model(ids, state)


def build_language_model(w, impl: str) -> nn.Module:
    """A module with ``loss(x, y)`` for workload ``w`` and ``impl`` (one of :data:`LM_IMPLS`)."""
    layers, H = len(w.hidden), w.hidden[0]
    backend = {"rnnlab": "auto", "rnnlab-bf16": "auto", "rnnlab-fused": "fused"}
    if impl == "torch":
        return TorchLanguageModel(w.vocab, w.inputs, H, layers, w.tied)
    if impl in MIN_IMPLS:
        cell, how = MIN_IMPLS[impl]
        lm = LanguageModel(w.vocab, w.inputs, H, layers, cell=cell, tie_weights=w.tied, backend=how)
        if impl.endswith("-bf16"):  # the layer's own bf16 mode; the decoder stays float32
            lm.rnn.precision = "bf16"
        return _RnnlabLM(lm)
    if impl not in backend:
        raise ValueError(f"expected a language-model implementation in {LM_IMPLS}, got {impl!r}")
    precision = "bf16" if impl == "rnnlab-bf16" else "fp32"
    model = LanguageModel(
        w.vocab,
        w.inputs,
        H,
        layers,
        cell="lstm",
        tie_weights=w.tied,
        backend=backend[impl],
        precision=precision,
    )
    return _RnnlabLM(model)


def make_lm_batch(w, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Random (B, T) input ids and (B, T) target ids."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, w.vocab, (w.batch, w.steps), generator=g)
    return x, torch.randint(0, w.vocab, (w.batch, w.steps), generator=g)


class LMRunner:
    """``train()`` = loss over every position, backward, Adam step; ``infer()`` = the loss
    under no_grad (the decoder and softmax are part of inference for a language model);
    ``token()`` = one token of generation: a batch of one id read alone from the carried state
    (T = 1, eval mode, no_grad) to its logits, as :meth:`LanguageModel.steps` does per token
    (sampling left out: it is the same for every cell)."""

    def __init__(self, w, impl: str) -> None:
        torch.manual_seed(0)
        self.model = build_language_model(w, impl)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.x, self.y = make_lm_batch(w)
        self.token_id, self.state = self.x[:1, :1], None  # (1, 1)

    def train(self) -> None:
        self.opt.zero_grad(set_to_none=True)
        self.model.loss(self.x, self.y).backward()
        self.opt.step()

    def infer(self) -> None:
        with torch.no_grad():
            self.model.loss(self.x, self.y)

    def token(self) -> None:
        self.model.eval()
        with torch.no_grad():
            _, self.state = self.model.step(self.token_id, self.state)
        self.model.train()
