"""Text classification: IMDB reviews in Keras's encoding (``data.dataset = "imdb"``).

Shape legend: N reviews, B batch, T time (word positions), C classes.

Reviews are encoded like ``keras.datasets.imdb.load_data(num_words, skip_top)`` (start marker
1, out-of-vocabulary 2, word ids offset by 3) and padded/truncated like
``keras.utils.pad_sequences(maxlen, padding, truncating)``, after dropping punctuation tokens if
``data.punctuation`` is false (Keras's own IMDB encoding has no punctuation; :mod:`rnnlab.data`'s
tokeniser keeps it). Model inputs are ``(ids (N, T) int64, lengths (N,) int64)``, the number of
real (unpadded) ids per review. A new review is encoded here, exactly as the training data was
(:meth:`TextClassification.encode`); the word index travels with the run as ``vocab.json``.

With ``model.init_from`` (a word language model's run) the classifier reads the language model's
vocabulary instead: each review is tokenised by that model's tokenizer, ``<eos>`` first, unknown
words as ``<unk>`` (:mod:`rnnlab.tasks.text_pretrained`); ``vocab.json`` is then that
vocabulary, and ``pretrained.json`` says which run and checkpoint the weights came from.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from rnnlab.config import PRESET_SOURCE, ConfigError, load_preset
from rnnlab.data import get_word_index, load_imdb, load_imdb_texts, pad_sequences, tokenize
from rnnlab.data.vocab import Vocabulary
from rnnlab.models import TextClassifier, check_bf16
from rnnlab.nn.validation import make_mask
from rnnlab.tasks.base import (
    Example,
    Floors,
    PathLike,
    PredictError,
    Prepared,
    PretrainedRun,
    TaskData,
    carve_holdout,
)
from rnnlab.tasks.classify import ClassificationTask
from rnnlab.tasks.text_pretrained import (
    check_source,
    copy_weights,
    encode_review,
    encode_reviews,
    pretrained_names,
)
from rnnlab.train import Batches, BatchSource, Split

__all__ = ["TextClassification", "drop_ids", "punctuation_ids"]

START, OOV_ID, START_ID, INDEX_FROM = "[START]", 2, 1, 3  # Keras's imdb.load_data defaults
PAD = "·"  # the label of a padding step on the inspect page
VOCAB = "vocab.json"
PRETRAINED = "pretrained.json"  # where a model started from another run took its weights


def punctuation_ids(word_index: dict[str, int]) -> set[int]:
    """Ids of the tokens without a letter or digit (``,`` ``.`` ``!`` ``(`` ...)."""
    return {
        rank + INDEX_FROM
        for word, rank in word_index.items()
        if not any(ch.isalnum() for ch in word)
    }


def drop_ids(sequences: list[list[int]] | np.ndarray, ids: set[int]) -> list[list[int]]:
    """Each sequence without the given ids (the start marker is never among them)."""
    return [[i for i in seq if i not in ids] for seq in sequences]


class TextClassification(ClassificationTask):
    """Reviews as word ids into a :class:`~rnnlab.models.TextClassifier`."""

    kind = "text"
    input_kind = "text"
    floors = Floors(
        verbs=("predict",),
        reads="text",
        serve="rnnlab.serve.classifier:TextRun",
        inspect="rnnlab.inspect.classifier:command",
        export="rnnlab.export.classifier:classifier_graph",
    )
    class_names = ("negative", "positive")
    artifact_names = (VOCAB,)

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.lm_vocab: Vocabulary | None = None  # with model.init_from: the source's vocabulary
        self.pretrained: PretrainedRun | None = None  # bound for a new run only

    @property
    def from_lm(self) -> bool:
        """Whether this classifier reads a language model's vocabulary (``model.init_from``)."""
        return bool(self.config.model.init_from)

    def check_config(self) -> None:
        if self.config.data.dataset != "imdb":
            raise ConfigError(
                f"data.dataset: expected 'imdb' for model.kind='text', "
                f"got {self.config.data.dataset!r}"
            )
        if self.config.model.backend == "torch" and self.config.model.mask:
            raise ConfigError(
                "model.backend='torch' expected model.mask=false (torch's own recurrent op "
                "cannot skip padding), got mask=true"
            )
        if self.from_lm and not self.config.data.punctuation:
            raise ConfigError(
                "data.punctuation: expected true with model.init_from (the language model read "
                "punctuation as words), got false"
            )

    def bind_pretrained(self, source: PretrainedRun) -> None:
        """Take ``source``'s vocabulary now and its weights in :meth:`build_model`; a source
        that is not a word language model of this cell and these sizes is refused, both
        named (:func:`rnnlab.tasks.text_pretrained.check_source`)."""
        self.lm_vocab, self.pretrained = check_source(self.config, source), source

    def bind_run(self, run_dir: PathLike) -> None:
        """A classifier started from a language model reads that model's vocabulary, which
        its run keeps as ``vocab.json``."""
        if self.from_lm:
            self.lm_vocab = Vocabulary.load(Path(run_dir) / VOCAB)

    def _vocab(self, doc: dict[str, Any] | None = None) -> Vocabulary:
        """The language model's vocabulary: bound, or read from a run's ``vocab.json`` value."""
        if doc is not None and self.lm_vocab is None:
            self.lm_vocab = Vocabulary.from_json(json.dumps(doc), VOCAB)
        if self.lm_vocab is None:
            raise ConfigError(
                f"model.init_from: expected the language model's vocabulary to be bound, got "
                f"none (init_from={self.config.model.init_from!r})"
            )
        return self.lm_vocab

    @property
    def masked(self) -> bool:
        return self.config.model.mask

    def pad(self, sequences: Sequence[Sequence[int]]) -> tuple[Tensor, Tensor]:
        """Id lists -> ``(ids (N, maxlen) int64, lengths (N,) int64)`` with the config's
        padding and truncation; a length counts the real ids kept (at least 1)."""
        d = self.config.data
        ids = pad_sequences(
            [list(s) for s in sequences],
            maxlen=d.maxlen,
            padding=d.padding,
            truncating=d.truncating,
            dtype="int64",
        )  # (N, maxlen)
        lengths = np.array([min(max(len(s), 1), d.maxlen) for s in sequences], dtype=np.int64)
        return torch.from_numpy(ids), torch.from_numpy(lengths)

    def load(self, data_dir: PathLike | None = None) -> TaskData:
        if self.from_lm:
            return self._load_for_lm(data_dir)
        d = self.config.data
        (x_train, y_train), (x_test, y_test) = load_imdb(
            num_words=d.num_words, skip_top=d.skip_top, data_dir=data_dir, sample=d.sample
        )
        word_index = get_word_index(data_dir, sample=d.sample)
        if not d.punctuation:
            dropped = punctuation_ids(word_index)
            x_train, x_test = drop_ids(x_train, dropped), drop_ids(x_test, dropped)
        train = Split(self.pad(x_train), torch.as_tensor(y_train))
        test = Split(self.pad(x_test), torch.as_tensor(y_test))
        return TaskData(*self._splits(train, test), {VOCAB: word_index})

    def _splits(self, train: Split, test: Split) -> tuple[Split, Split | None, Split]:
        d = self.config.data
        val = test if d.validation == "test" else None
        if d.validation == "holdout":
            train, val = carve_holdout(train, self.config)
        return train, val, test

    def _load_for_lm(self, data_dir: PathLike | None) -> TaskData:
        """The reviews' texts encoded with the language model's vocabulary."""
        vocab, d = self._vocab(), self.config.data
        splits = []
        for name in ("train", "test"):
            reviews = load_imdb_texts(name, data_dir=data_dir, sample=d.sample)
            ids = encode_reviews(vocab, reviews.texts)
            splits.append(Split(self.pad(ids), torch.as_tensor(reviews.labels)))
        artifacts: dict[str, Any] = {VOCAB: json.loads(vocab.to_json())}
        if self.pretrained is not None:
            artifacts[PRETRAINED] = self.pretrained.record()
        return TaskData(*self._splits(*splits), artifacts)

    def vocab_size(self) -> int:
        """The embedding's rows: ``data.num_words``; with ``model.init_from``, the language
        model's vocabulary size (before a preset source is trained: its ``data.max_vocab``,
        the size it will have at most, which is what ``rnnlab summary`` shows)."""
        if not self.from_lm:
            return self.config.data.num_words
        source = self.config.model.init_from
        if self.lm_vocab is None and source.startswith(PRESET_SOURCE):
            size = load_preset(source.removeprefix(PRESET_SOURCE)).data.max_vocab
            if size:
                return size
        if self.lm_vocab is None and (Path(source) / VOCAB).is_file():
            self.lm_vocab = Vocabulary.load(Path(source) / VOCAB)
        return len(self._vocab())

    def build_model(self) -> nn.Module:
        cfg = self.config.model
        size = self.vocab_size()
        model = TextClassifier(cfg, size, padding=self.config.data.padding)
        if self.from_lm:
            source_layers = len(cfg.hidden_sizes)
            if self.pretrained is not None:
                source_layers = len(self.pretrained.config.model.hidden_sizes)
                copy_weights(model, self.pretrained.model)
            model.pretrained_names = pretrained_names(model, source_layers)
        check_bf16(model, cfg)
        return model

    def example_inputs(self, batch_size: int) -> tuple[Tensor, ...]:
        return (torch.zeros(batch_size, self.config.data.maxlen, dtype=torch.int64),)  # (B, T)

    def batches(
        self, split: Split, training: bool, rank: int = 0, world_size: int = 1
    ) -> BatchSource:
        """A model that masks padding gets batches of similar lengths with the padding trimmed
        (training: with ``train.bucket``; evaluation: always, sorted by length)."""
        t, shard = self.config.train, {"rank": rank, "world_size": world_size}
        trim = self.config.data.padding if self.masked else None
        if training:
            bucket = t.bucket and self.masked
            trim = trim if bucket else None
            return Batches(
                split, t.batch_size, shuffle=True, seed=t.seed, bucket=bucket, trim=trim, **shard
            )
        if not self.masked:
            return super().batches(split, training, rank, world_size)
        return Batches(split, self.eval_batch_size(world_size), bucket=True, trim=trim, **shard)

    def encode(
        self, text: str, word_index: dict[str, Any]
    ) -> tuple[list[int], list[str], list[bool], bool]:
        """A review as training encoded it: ``(ids, words, oov, truncated)`` after dropping
        unknown words (and punctuation, if the run did) and truncating to ``data.maxlen``
        (``truncated`` says whether words were cut); ``words[0]`` is the start marker.
        ``word_index`` is the run's ``vocab.json``: with ``model.init_from``, the language
        model's vocabulary, whose ``<unk>`` takes unknown words (they are kept, marked oov)."""
        if self.from_lm:
            ids, labels, oov = encode_review(self._vocab(word_index), text)
            return self._truncated(ids, labels, oov)
        d = self.config.data
        words = [w for w in tokenize(text) if w in word_index]
        ids = [START_ID] + [word_index[w] + INDEX_FROM for w in words]
        labels = [START, *words]
        oov = [not (d.skip_top <= i < d.num_words) for i in ids]
        ids = [OOV_ID if bad else i for i, bad in zip(ids, oov, strict=True)]
        if not d.punctuation:  # dropped after the OOV replacement, as the corpus was
            dropped = punctuation_ids(word_index)
            keep = [k for k, i in enumerate(ids) if i not in dropped]
            ids, labels, oov = (
                [ids[k] for k in keep],
                [labels[k] for k in keep],
                [oov[k] for k in keep],
            )
        return self._truncated(ids, labels, oov)

    def _truncated(
        self, ids: list[int], labels: list[str], oov: list[bool]
    ) -> tuple[list[int], list[str], list[bool], bool]:
        d = self.config.data
        truncated = len(ids) > d.maxlen
        if truncated:
            keep = slice(-d.maxlen, None) if d.truncating == "pre" else slice(0, d.maxlen)
            ids, labels, oov = ids[keep], labels[keep], oov[keep]
        return ids, labels, oov, truncated

    def common_word(self, artifacts: dict[str, Any]) -> str:
        """The vocabulary's most frequent word (what ``rnnlab serve`` warms a run up with)."""
        if self.from_lm:
            vocab = self._vocab(artifacts[VOCAB])
            return vocab.tokens[min(len(vocab.specials), len(vocab) - 1)]
        word_index = artifacts[VOCAB]
        return min(word_index, key=word_index.get)

    def _encoded(self, k: int, text: Any, word_index: dict[str, Any]):
        if not isinstance(text, str) or not text.strip():
            raise PredictError(f"review {k + 1}: expected non-empty text, got {text!r}")
        encoded = self.encode(text, word_index)
        # the start marker alone (or, reading a language model's vocabulary, unknown words
        # only): no word the model was trained on
        if len(encoded[0]) <= 1 or (self.from_lm and all(encoded[2][1:])):
            raise PredictError(
                f"review {k + 1}: expected at least one known word, got none in {text[:60]!r}"
            )
        return encoded

    def prepare(self, raw: Sequence[str], artifacts: dict[str, Any], **options: Any) -> Prepared:
        """Reviews -> ``(ids (N, maxlen), lengths (N,))``; each note gives the ``input`` and
        whether it was ``truncated`` to ``data.maxlen`` words."""
        if options:
            raise PredictError(f"reviews expected no options, got {sorted(options)}")
        if not raw:
            raise PredictError("predict expected at least one review, got none")
        encoded = [self._encoded(k, text, artifacts[VOCAB]) for k, text in enumerate(raw)]
        notes = [{"input": t, "truncated": e[3]} for t, e in zip(raw, encoded, strict=True)]
        return Prepared(self.pad([e[0] for e in encoded]), notes)

    def example(self, raw: str, artifacts: dict[str, Any]) -> Example:
        """A review as the model reads it. A model that masks padding reads only the real steps;
        one that does not (the tutorial's) reads the padded ``maxlen`` steps, padding marked
        not real."""
        word_ids, labels, oov, _ = self._encoded(0, raw, artifacts[VOCAB])
        ids, lengths = self.pad([word_ids])  # (1, maxlen), (1,)
        n, T, post = len(word_ids), ids.shape[1], self.config.data.padding == "post"
        real = np.zeros(T, dtype=bool)
        real[slice(0, n) if post else slice(T - n, T)] = True
        if self.masked:  # padding changes nothing: read the real steps only
            ids, real = ids[:, torch.from_numpy(real)], np.ones(n, dtype=bool)
            return Example((ids, lengths), real, labels, ids=word_ids, oov=oov)
        pads = [PAD] * (T - n)
        full_oov = [False] * T
        for k, flag in zip(np.flatnonzero(real), oov, strict=True):
            full_oov[k] = flag
        labels = labels + pads if post else pads + labels
        return Example((ids, lengths), real, labels, ids=word_ids, oov=full_oov)

    def real_steps(self, inputs: tuple[Tensor, ...]) -> Tensor:
        ids, lengths = inputs[0], inputs[1]  # (N, T), (N,)
        N, T = ids.shape
        mask = make_mask("real_steps", lengths, None, self.config.data.padding, N, T, ids.device)
        return torch.ones(N, T, dtype=torch.bool) if mask is None else mask

    def prefix_batches(self, example: Example, chunk: int) -> list[tuple[Tensor, ...]]:
        assert example.ids is not None, "a text example has ids"
        d = self.config.data
        width = len(example.ids) if self.masked else d.maxlen
        seqs = [example.ids[: k + 1] for k in range(len(example.ids))]
        ids = pad_sequences(
            seqs, maxlen=width, padding=d.padding, truncating=d.truncating, dtype="int64"
        )  # (N, W)
        ids, lengths = torch.from_numpy(ids), torch.tensor([len(s) for s in seqs])  # (N,)
        return [(ids[k : k + chunk], lengths[k : k + chunk]) for k in range(0, len(seqs), chunk)]
