"""Language modelling: predict the next character or word of a text (``model.kind = "lm"``).

Shape legend: N tokens, B batch (streams), T time (a window of ``data.bptt`` steps), V
vocabulary, L layers, H hidden units.

Data (:func:`rnnlab.data.corpus.load_corpus`): the IMDB reviews (``data.dataset = "imdb"``;
``data.sample`` for the sample shipped in the package) or any UTF-8 text file or folder
(``data.path``), at ``data.level`` ``"char"`` or ``"word"``, with at most ``data.max_vocab``
ids. The corpus brings its own validation split, so ``data.validation`` is ``"holdout"``
(validate on it; test once at the end, on the best checkpoint) or ``"none"``;
``data.eval_tokens`` caps validation and test to their first N tokens.

Batches are contiguous streams (:mod:`rnnlab.data.streams`): the training stream cut into
``train.batch_size`` rows, read ``data.bptt`` steps at a time, in the same order every epoch;
under data parallelism each rank takes its own whole rows. The model's state is the trainer's
carry: handed from window to window and detached (truncated BPTT, the ``repackage_hidden`` of
PyTorch's word_language_model example), reset at each epoch, saved in every checkpoint, so a
run killed mid-epoch resumes exactly. Evaluation carries it across the whole split too, in
``train.eval_batch_size`` rows.

Metrics: the loss is the mean cross-entropy in nats per token; ``bpc`` (bits per character,
loss / ln 2) at character level, ``perplexity`` (exp(loss)) at word level, and in epoch
records ``tokens_per_second``. The best checkpoint has the lowest validation loss.

The vocabulary goes into the run directory as ``vocab.json``; a run's model is built with its
size and a checkpoint of another size is refused by name (:meth:`LanguageModelTask.check_weights`).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from rnnlab.config import Config, ConfigError
from rnnlab.data import DataError, DataWarning
from rnnlab.data.corpus import Corpus, corpus_summary, load_corpus, unknown_warning
from rnnlab.data.streams import check_stream
from rnnlab.data.vocab import Vocabulary
from rnnlab.models import check_bf16, layer_options
from rnnlab.nn.language_model import LanguageModel, State
from rnnlab.tasks.base import (
    Example,
    Floors,
    MetricSpec,
    PathLike,
    PredictError,
    Prepared,
    Task,
    TaskData,
)
from rnnlab.tasks.lm_sizing import measure_rate, settle
from rnnlab.tasks.lm_start import START, read_start_ids, start_ids, warm_state
from rnnlab.tasks.lm_streams import StreamBatches, stream_split, to_carry, to_state
from rnnlab.train import BatchLoss, Carry, Selection, Split, make_optimizer

__all__ = ["LanguageModelTask", "StreamBatches", "VOCAB"]

VOCAB = "vocab.json"
CORPUS = "corpus.json"
SIZING = "sizing.json"  # model.autosize's choice and the measurements behind it


class LanguageModelTask(Task):
    """Next-token prediction with a :class:`rnnlab.LanguageModel`; see the module docstring."""

    kind = "lm"
    input_kind = "stream"
    floors = Floors(
        verbs=("generate", "score"),
        reads="text",
        serve="rnnlab.serve.lm:LanguageRun",
        inspect="rnnlab.inspect.language:command",
        export="rnnlab.export.language_model:language_model_graph",
    )
    selection = Selection("loss", "min")
    artifact_names = (VOCAB,)
    throughput_unit = "tokens"  # every predicted position counts (BatchLoss.count)

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.vocab: Vocabulary | None = None  # from load() or bind_run()
        self.start: list[int] = []  # the run's warm-up ids (lm_start), from load() or bind_run()
        self._warm: tuple[int, State | None] | None = None  # (id(model), its start state)

    @property
    def metric_specs(self) -> tuple[MetricSpec, ...]:  # type: ignore[override]
        return (MetricSpec(self.figure, higher_is_better=False),)

    @property
    def figure(self) -> str:
        """``"bpc"`` at character level, ``"perplexity"`` at word level."""
        return "bpc" if self.config.data.level == "char" else "perplexity"

    def check_config(self) -> None:
        d, m = self.config.data, self.config.model
        if not d.path and d.dataset != "imdb":
            raise ConfigError(
                f"data.dataset: expected 'imdb' (or a text file or folder in data.path) for "
                f"model.kind='lm', got {d.dataset!r}"
            )
        if d.validation == "test":
            raise ConfigError(
                "data.validation: expected 'holdout' (the corpus's validation split) or 'none' "
                "for model.kind='lm', got 'test'"
            )
        if len(set(m.hidden_sizes)) != 1:
            raise ConfigError(
                f"model.hidden_sizes: expected equal sizes for a language model's stack, got "
                f"{list(m.hidden_sizes)}"
            )
        width = m.proj_size or m.hidden_sizes[0]  # what the decoder reads
        if m.tie_weights and m.embedding_dim != width:
            what = "model.proj_size" if m.proj_size else "the hidden size"
            raise ConfigError(
                f"model.tie_weights: expected model.embedding_dim == {what} {width}, got "
                f"embedding_dim={m.embedding_dim}"
            )
        if m.bidirectional:
            raise ConfigError(
                f"model.bidirectional: expected False for model.kind='lm', got {m.bidirectional!r}"
            )
        if m.autosize and not self.config.train.time_limit > 0:
            raise ConfigError(
                "model.autosize: expected a train.time_limit > 0 (the width is chosen for the "
                f"budget), got time_limit={self.config.train.time_limit}"
            )

    # -- data and model -------------------------------------------------------------------------
    def read_corpus(self, data_dir: PathLike | None = None) -> Corpus:
        """The corpus, encoded with the bound vocabulary if there is one (a run's own)."""
        d = self.config.data
        return load_corpus(
            d.path or "imdb",
            d.level,
            vocab=self.vocab,
            max_vocab=d.max_vocab or None,
            data_dir=data_dir,
            sample=d.sample and not d.path,
            download=True,
        )

    def load(self, data_dir: PathLike | None = None) -> TaskData:
        d, t = self.config.data, self.config.train
        corpus = self.read_corpus(data_dir)
        cap = slice(0, d.eval_tokens or None)
        valid, test = corpus.valid[cap], corpus.test[cap]
        check_stream(corpus.train, t.batch_size, d.bptt, f"{corpus.source} train split")
        for name, ids in (("valid", valid), ("test", test)):
            check_stream(ids, t.eval_batch_size, d.bptt, f"{corpus.source} {name} split")
        self.vocab = corpus.vocab
        warning = unknown_warning(corpus)
        if warning:  # printed by the CLI, kept in the run's corpus.json
            warnings.warn(DataWarning(warning), stacklevel=2)
        summary = corpus_summary(corpus) | {"eval_tokens": d.eval_tokens}
        start = start_ids(corpus.train, self._boundary())
        self.start, self._warm = start["ids"], None
        artifacts = {
            VOCAB: json.loads(corpus.vocab.to_json()),
            CORPUS: summary | {"warnings": [warning] if warning else []},
            START: start,
        }
        val = None if d.validation == "none" else stream_split(valid)
        return TaskData(stream_split(corpus.train), val, stream_split(test), artifacts)

    def settle(self, data: TaskData) -> Config | None:
        """With ``model.autosize``: the configuration with the width and dropout that
        :mod:`rnnlab.tasks.lm_sizing` chooses for this corpus and ``train.time_limit``, each
        candidate's speed measured here; its record goes into ``data.artifacts`` as
        ``sizing.json``. None without autosize."""
        if not self.config.model.autosize:
            return None
        d, t = self.config.data, self.config.train

        def rate_of(candidate: Config) -> float:
            task = LanguageModelTask(candidate)
            task.vocab = self.vocab
            optimizer = partial(make_optimizer, cfg=t)
            return measure_rate(task.build_model, optimizer, self.vocab_size, t.batch_size, d.bptt)

        config, sizing = settle(self.config, len(data.train.targets), rate_of)
        data.artifacts[SIZING] = sizing.to_dict()
        self.config = config
        return config

    def bind_run(self, run_dir: PathLike) -> None:
        """Use the run's ``vocab.json`` (model size, encoding of new text and of the corpus)."""
        path = Path(run_dir) / VOCAB
        if not path.is_file():
            raise PredictError(f"{path}: expected this run's vocabulary, got no such file")
        self.vocab = Vocabulary.load(path)
        self.start, self._warm = read_start_ids(Path(run_dir)), None
        if self.vocab.level != self.config.data.level:
            raise DataError(
                f"{path}: expected a {self.config.data.level} vocabulary (data.level), got a "
                f"{self.vocab.level} one"
            )

    def check_weights(self, tensors: dict[str, Tensor], where: str) -> None:
        emb = tensors.get("model.embedding.weight")
        if self.vocab is not None and emb is not None:
            self.vocab.check_size(int(emb.shape[0]), f"the embedding in {where}")

    @property
    def vocab_size(self) -> int:
        if self.vocab is not None:
            return len(self.vocab)
        if self.config.data.max_vocab:  # before any data: the size it will have at most
            return self.config.data.max_vocab
        raise ConfigError(
            "a language model's size expected its vocabulary (load the corpus or a run's "
            "vocab.json first) or data.max_vocab > 0, got neither"
        )

    def export_fields(self) -> dict[str, Any]:
        """A language model's outputs are logits over its vocabulary (bound by ``bind_run``)."""
        return {"vocab_size": self.vocab_size, "level": self._bound().level}

    def build_model(self) -> LanguageModel:
        m = self.config.model
        model = LanguageModel(
            self.vocab_size,
            m.embedding_dim,
            m.hidden_sizes[0],
            len(m.hidden_sizes),
            cell=m.cell,
            dropout=m.dropout,
            tie_weights=m.tie_weights,
            backend=m.backend,
            **layer_options(m),
        )
        check_bf16(model, m)
        return model

    def example_inputs(self, batch_size: int) -> tuple[Tensor, ...]:
        return (torch.zeros(batch_size, self.config.data.bptt, dtype=torch.int64),)  # (B, T)

    def batches(
        self, split: Split, training: bool, rank: int = 0, world_size: int = 1
    ) -> StreamBatches:
        t = self.config.train
        size = t.batch_size if training else self.eval_batch_size(world_size)
        return StreamBatches(split.inputs[0], size, self.config.data.bptt, rank, world_size)

    # -- loss and metrics -----------------------------------------------------------------------
    def batch_loss(
        self,
        model: nn.Module,
        inputs: tuple[Tensor, ...],
        targets: Tensor,
        carry: Carry | None,
        training: bool,
    ) -> BatchLoss:
        (ids,) = inputs  # (B, T)
        # The decoder and softmax fused (LanguageModel.forward with targets): the token mean.
        mean, state = model(ids, to_state(carry, self.config.model.cell), targets=targets)
        return BatchLoss(mean * targets.numel(), targets.numel(), {}, carry=to_carry(state))

    def metrics(self, sums: dict[str, float]) -> dict[str, float]:
        """``bpc`` or ``perplexity`` of the mean loss; ``tokens_per_second`` where the sums
        hold the seconds they took (an epoch's training)."""
        mean = sums["loss"] / sums["n"]
        out = {self.figure: mean / math.log(2) if self.figure == "bpc" else _exp(mean)}
        if sums.get("seconds"):
            out["tokens_per_second"] = sums["n"] / sums["seconds"]
        return out

    def test_report(self, metrics: dict[str, float]) -> dict[str, float]:
        return {f"test_{self.figure}": metrics[self.figure], "test_loss": metrics["loss"]}

    # -- text in, ids out -----------------------------------------------------------------------
    def encode(self, text: str, what: str = "text") -> tuple[np.ndarray, int, tuple[str, ...]]:
        """``(ids (N,), unknown count, up to 10 unknown tokens)`` of ``text`` in the bound
        vocabulary, as a prompt or a passage (no end of line added)."""
        vocab = self._bound()
        if not isinstance(text, str) or not text.strip():
            raise PredictError(f"{what}: expected non-empty text, got {text!r}")
        if "\x00" in text:
            raise PredictError(f"{what}: expected text, got binary data (a NUL character)")
        encoded = vocab.encode_text(text, end_lines=False)
        return encoded.ids, encoded.unknown, encoded.unknown_tokens

    def start_context(self) -> list[int]:
        """What reading starts from: the document boundary, ``<eos>`` at word level (the end
        of every review), a newline at character level if the vocabulary has one, else
        nothing; read from :meth:`start_state`."""
        boundary = self._boundary()
        return [] if boundary is None else [boundary]

    def _boundary(self) -> int | None:
        vocab = self._bound()
        if vocab.eos_id is not None:
            return vocab.eos_id
        return int(vocab.lookup(["\n"])[0]) if "\n" in vocab else None

    def start_state(self, model: LanguageModel) -> State | None:
        """The state ``model`` is in just before a document boundary in training (reading the
        run's ``start.json``, see :mod:`rnnlab.tasks.lm_start`), from which generation and
        scoring read :meth:`start_context`; None (zeros) for a run without one. Kept for the
        last model asked about."""
        if self._warm is None or self._warm[0] != id(model):
            self._warm = (id(model), warm_state(model, self.start))
        return self._warm[1]

    def prompt_ids(self, prompt: str, field: str) -> tuple[list[int], int, tuple[str, ...]]:
        """What the model reads before generating: ``(ids, unknown count, up to 10 unknown
        tokens)``, ids being :meth:`start_context` then the prompt's (which may be empty).
        ``rnnlab generate`` and ``rnnlab serve`` both build their prompt here.

        Raises:
            PredictError: starting with ``field``, for a blank or binary prompt, or an empty one
                where the vocabulary has no start context.
        """
        ids, unknown, tokens = np.zeros(0, np.int64), 0, ()
        if prompt:
            ids, unknown, tokens = self.encode(prompt, field)
        full = [*self.start_context(), *ids.tolist()]
        if not full:
            raise PredictError(
                f"{field}: expected some text (this character vocabulary has no newline to "
                "start from), got an empty prompt"
            )
        return full, unknown, tokens

    def piece(self, token: int) -> str:
        """How one generated token is written: the character, or the word and a space (a
        newline for ``<eos>``)."""
        vocab = self._bound()
        if vocab.level == "char":
            return vocab.tokens[token]
        return "\n" if token == vocab.eos_id else vocab.tokens[token] + " "

    def _bound(self) -> Vocabulary:
        if self.vocab is None:
            raise PredictError("a language model expected its run's vocabulary, got none bound")
        return self.vocab

    # -- predict and inspect hooks ----------------------------------------------------------------
    def read_artifacts(self, run_dir: PathLike) -> dict[str, Any]:
        self.bind_run(run_dir)
        return {VOCAB: self.vocab}

    def prepare(self, raw: Sequence[str], artifacts: dict[str, Any], **options: Any) -> Prepared:
        """Texts -> one (1, N) id row each (in ``inputs``, one tensor per text); notes count
        the tokens outside the vocabulary."""
        if options:
            raise PredictError(f"texts expected no options, got {sorted(options)}")
        if not raw:
            raise PredictError("score expected at least one text, got none")
        rows, notes = [], []
        for k, text in enumerate(raw):
            ids, unknown, tokens = self.encode(text, f"text {k + 1}")
            rows.append(torch.as_tensor(ids)[None])  # (1, N)
            notes.append({"input": text, "unknown": unknown, "unknown_tokens": list(tokens)})
        return Prepared(tuple(rows), notes)

    def predict(
        self,
        model: nn.Module,
        prepared: Prepared,
        per_token: bool = True,
        progress: Callable[[int], None] | None = None,
    ) -> list[dict[str, Any]]:
        """Per text: every token's log-probability (natural log) given the text before it
        and :meth:`start_context` (``tokens`` and ``log_probs``, left out without
        ``per_token``: for a long text they are most of the memory), their mean loss, and
        ``bpc`` or ``perplexity``. ``progress(n)`` is called as n more tokens are read."""
        vocab, out = self._bound(), []
        for ids, notes in zip(prepared.inputs, prepared.notes, strict=True):
            start = self.start_state(model)
            logp = model.score(ids[0], self.start_context(), progress, start).double()  # (N,)
            loss = float(-logp.mean())
            figure = loss / math.log(2) if self.figure == "bpc" else _exp(loss)
            each = {}
            if per_token:
                each = {"tokens": [vocab.tokens[i] for i in ids[0].tolist()]}
                each["log_probs"] = logp.tolist()
            count = ids.shape[1]
            out.append({**each, "loss": loss, self.figure: figure, "count": count, **notes})
        return out

    def example(self, raw: str, artifacts: dict[str, Any]) -> Example:
        """A text as the model reads it: the start context, then its tokens (labels are the
        tokens as text; ``oov`` marks those that became ``<unk>``)."""
        vocab = self._bound()
        ids, _, _ = self.encode(raw, "--text")
        tokens = vocab.tokenize(raw, end_lines=False)
        context = self.start_context()
        full = torch.as_tensor(np.concatenate([context, ids]).astype(np.int64))[None]  # (1, T)
        labels = [vocab.tokens[i] for i in context] + tokens
        oov = [False] * len(context) + [t not in vocab for t in tokens]
        real = np.ones(full.shape[1], dtype=bool)
        real[: len(context)] = False  # the context is read, not shown
        return Example((full,), real, labels, ids=full[0].tolist(), oov=oov)

    def real_steps(self, inputs: tuple[Tensor, ...]) -> Tensor:
        return torch.ones(inputs[0].shape[:2], dtype=torch.bool)  # (N, T): streams have no padding


def _exp(loss: float) -> float:
    return math.exp(loss) if loss < 700 else math.inf
