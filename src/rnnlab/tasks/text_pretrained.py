"""A text classifier started from a word language model (``model.init_from = RUN``).

Shape legend: V vocabulary, E embedding size, H hidden units, L layers.

Dai & Le (2015) and ULMFiT (Howard & Ruder 2018) start a sentiment classifier from a language
model trained on the same kind of text, labels unused. Here the classifier takes from the
language-model run:

* its **vocabulary** (``vocab.json``, :class:`rnnlab.data.vocab.Vocabulary`): reviews are
  tokenised by the model's own tokenizer, each word becomes its id (``<unk>`` outside the
  vocabulary) and ``<eos>`` comes first, as it ended the review before in the language model's
  stream, so the classifier starts where the language model started each review;
* its **embedding** (V, E), exactly;
* its **recurrent layers**: the classifier's layer k starts as the language model's layer k,
  for every k both have (the same cell, the same sizes); layers beyond them start fresh.

The decoder of the language model is dropped; the pooling and the head are new. The copied
parameters' names are the model's ``pretrained_names``, which the trainer puts in a parameter
group of their own (``train.pretrained_lr_ratio``, ``train.frozen_steps``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch import nn

from rnnlab.config import Config, ConfigError
from rnnlab.data.vocab import EOS, Vocabulary
from rnnlab.tasks.base import PretrainedRun

__all__ = [
    "check_source",
    "copy_weights",
    "encode_review",
    "encode_reviews",
    "pretrained_names",
    "review_tokens",
]

VOCAB = "vocab.json"


def check_source(config: Config, source: PretrainedRun) -> Vocabulary:
    """The source's vocabulary, once ``source`` is checked to be a word language model whose
    cell and sizes the classifier of ``config`` shares; a mismatch names both."""
    m, s, where = config.model, source.config.model, source.run_dir
    if s.kind != "lm":
        raise ConfigError(
            f"model.init_from: expected a language-model run (kind 'lm'), got kind {s.kind!r} "
            f"in {where}"
        )
    vocab = Vocabulary.load(where / VOCAB)
    if vocab.level != "word":
        raise ConfigError(
            f"model.init_from: expected a word-level language model, got a {vocab.level}-level "
            f"one in {where}"
        )
    if m.bidirectional:
        raise ConfigError(
            "model.bidirectional: expected false with model.init_from (the language model in "
            f"{where} reads forwards only), got true"
        )
    if m.cell != s.cell:
        raise ConfigError(
            f"model.cell: expected {s.cell!r}, the cell of the language model in {where}, "
            f"got {m.cell!r}"
        )
    if m.embedding_dim != s.embedding_dim:
        raise ConfigError(
            f"model.embedding_dim: expected {s.embedding_dim}, the language model's in {where}, "
            f"got {m.embedding_dim}"
        )
    shared = min(len(m.hidden_sizes), len(s.hidden_sizes))
    if tuple(m.hidden_sizes[:shared]) != tuple(s.hidden_sizes[:shared]):
        raise ConfigError(
            f"model.hidden_sizes: expected {list(s.hidden_sizes)} (or its first layers), the "
            f"language model's in {where}, got {list(m.hidden_sizes)}"
        )
    return vocab


def pretrained_names(model: nn.Module, source_layers: int) -> frozenset[str]:
    """Names of the classifier's parameters that come from the language model: the embedding
    and the first ``source_layers`` recurrent layers (those the classifier has)."""
    layers = min(source_layers, len(model.stack.layers))
    prefixes = ("embedding.", *(f"stack.layers.{k}." for k in range(layers)))
    return frozenset(n for n, _ in model.named_parameters() if n.startswith(prefixes))


def copy_weights(model: nn.Module, source: nn.Module) -> None:
    """Copy the language model ``source``'s embedding (V, E) and recurrent layers into the
    classifier ``model`` (its layer k from the source's layer k, as far as both go)."""
    if model.embedding.weight.shape != source.embedding.weight.shape:
        raise ConfigError(
            f"model.init_from: expected an embedding of shape "
            f"{tuple(model.embedding.weight.shape)}, got {tuple(source.embedding.weight.shape)}"
        )
    model.embedding.load_state_dict(source.embedding.state_dict())
    for k, layer in enumerate(model.stack.layers[: source.num_layers]):
        # a one-way source layer of L layers keeps layer k in cells[k]
        layer.cells[0].load_state_dict(source.rnn.cells[k].state_dict())


def review_tokens(vocab: Vocabulary, text: str) -> list[str]:
    """``<eos>`` then the review's tokens by the vocabulary's tokenizer: the review as the
    language model read it after the one before."""
    return [EOS, *vocab.tokenize(text, end_lines=False)]


def encode_review(vocab: Vocabulary, text: str) -> tuple[list[int], list[str], list[bool]]:
    """``(ids, tokens, unknown)`` of one review (:func:`review_tokens`), each token's id
    (``<unk>``'s when outside the vocabulary)."""
    tokens = review_tokens(vocab, text)
    unknown = [t not in vocab for t in tokens]
    return vocab.lookup(tokens).tolist(), tokens, unknown


def encode_reviews(vocab: Vocabulary, texts: Sequence[str]) -> list[np.ndarray]:
    """Each review's ids (:func:`review_tokens`), as int64 arrays (N_i,)."""
    return [vocab.lookup(review_tokens(vocab, t)) for t in texts]
