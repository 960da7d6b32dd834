"""Sequence to sequence: map a source sequence to a target sequence (``model.kind =
"seq2seq"``), e.g. a word's letters to its phonemes.

Shape legend: N examples, B batch, S source steps, R references per source, T target steps.

Data (:mod:`rnnlab.data.pairs`): CMUdict (``data.dataset = "cmudict"``, ``data.sample`` for the
sample shipped in the package) or a user's pairs file (``data.dataset = "pairs"``,
``data.path``), tokens ``data.source_tokens`` / ``data.target_tokens``. Model inputs are
``(src (N, S) int64, src_lengths (N,))``; targets ``(N, R, T + 1)``: each reference's ids, then
``</s>``, then ``<pad>``. Training has one row per (source, reference) pair (R = 1); validation
and test one row per source with all its references, so a hypothesis is right when it equals
any. ``data.validation``: ``"holdout"`` validates on the data's own validation split (the
hash split), ``"test"`` on test, ``"none"`` not at all.

Loss: cross-entropy per target token (teacher forcing, ``train.label_smoothing`` in
training). Metrics: ``token_accuracy`` (teacher-forced argmax == reference, per token); in
evaluation, decoding each source (``model.beam``; 1 is greedy): ``token_error_rate`` (PER for
phonemes), ``sequence_error_rate`` (WER for G2P) and, for word-level targets, ``bleu`` and
``chrf`` (:mod:`rnnlab.tasks.seq2seq_metrics`). The best checkpoint has the lowest validation
token error rate. Both vocabularies go into the run directory as ``vocab.json``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from rnnlab.config import ConfigError
from rnnlab.data import DataError
from rnnlab.data.pairs import BOS, EOS, PAD, Entry, PairSplits, PairVocab, load_cmudict, load_pairs
from rnnlab.data.pairs import tokens_of as split_tokens
from rnnlab.data.paths import sample_dir
from rnnlab.models import check_bf16, model_precision
from rnnlab.nn.beam import check_options
from rnnlab.nn.seq2seq import Seq2Seq
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
from rnnlab.tasks.seq2seq_metrics import sequence_sums, text_scores, text_stat_sums
from rnnlab.train import Batches, BatchLoss, BatchSource, Carry, Selection, Split

__all__ = ["CMUDICT_SAMPLE", "Seq2SeqTask", "VOCAB"]

VOCAB = "vocab.json"
CMUDICT_SAMPLE = "cmudict_sample.tsv.gz"


def _pad(rows: list[list[int]], width: int) -> Tensor:
    out = torch.full((len(rows), width), PAD, dtype=torch.long)
    for k, row in enumerate(rows):
        out[k, : len(row)] = torch.as_tensor(row, dtype=torch.long)
    return out


class Seq2SeqTask(Task):
    """Pairs into a :class:`rnnlab.nn.Seq2Seq`; see the module docstring."""

    kind = "seq2seq"
    input_kind = "text"
    floors = Floors(
        verbs=("translate",),
        reads="text",
        serve="rnnlab.serve.seq2seq:TranslationRun",
        inspect="rnnlab.inspect.seq2seq:command",
        export="rnnlab.export.seq2seq:seq2seq_graph",
    )
    selection = Selection("token_error_rate", "min")
    artifact_names = (VOCAB,)
    throughput_unit = "tokens"  # BatchLoss.count: target tokens, </s> included

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.source: PairVocab | None = None  # from load() or bind_run()
        self.target: PairVocab | None = None

    @property
    def metric_specs(self) -> tuple[MetricSpec, ...]:  # type: ignore[override]
        specs = [
            MetricSpec("token_accuracy", True),
            MetricSpec("token_error_rate", False),
            MetricSpec("sequence_error_rate", False),
        ]
        if self.config.data.target_tokens == "word":
            specs += [MetricSpec("bleu", True), MetricSpec("chrf", True)]
        return tuple(specs)

    def check_config(self) -> None:
        d, m = self.config.data, self.config.model
        if d.dataset not in ("cmudict", "pairs"):
            raise ConfigError(
                f"data.dataset: expected 'cmudict' or 'pairs' (with data.path) for "
                f"model.kind='seq2seq', got {d.dataset!r}"
            )
        if d.dataset == "pairs" and not d.path:
            raise ConfigError("data.path: expected a pairs file for data.dataset='pairs', got ''")
        if len(set(m.hidden_sizes)) != 1 or m.hidden_sizes[0] % 2:
            raise ConfigError(
                f"model.hidden_sizes: expected equal even sizes for a seq2seq encoder (half per "
                f"direction), got {list(m.hidden_sizes)}"
            )
        if m.tie_weights and m.embedding_dim != m.hidden_sizes[0]:
            raise ConfigError(
                f"model.tie_weights: expected model.embedding_dim == the hidden size "
                f"{m.hidden_sizes[0]}, got embedding_dim={m.embedding_dim}"
            )

    # -- data and model -------------------------------------------------------------------------
    def read_pairs(self) -> PairSplits:
        d = self.config.data
        if d.dataset == "pairs":
            return load_pairs(d.path, d.source_tokens, d.target_tokens, d.max_length)
        if d.sample:
            path = sample_dir() / CMUDICT_SAMPLE
            pairs = load_pairs(path, "char", "word", d.max_length)
        else:
            pairs = load_cmudict(d.keep_stress)
        if d.source_tokens != "char" or d.target_tokens != "word":
            raise ConfigError(
                "data.source_tokens/target_tokens: expected 'char'/'word' for CMUdict (letters "
                f"to phonemes), got {d.source_tokens!r}/{d.target_tokens!r}"
            )
        return pairs

    def load(self, data_dir: PathLike | None = None) -> TaskData:
        pairs = self.read_pairs()
        if self.source is None or self.target is None:  # a new run: from the training split
            d = self.config.data
            self.source = PairVocab.build((e.source for e in pairs.train), d.source_tokens)
            refs = (r for e in pairs.train for r in e.references)
            self.target = PairVocab.build(refs, d.target_tokens)
        train = self.split(pairs.train, expand=True)
        val, test = self.split(pairs.val), self.split(pairs.test)
        v = self.config.data.validation
        artifacts = {VOCAB: self.vocab_json()}
        return TaskData(
            train, None if v == "none" else (test if v == "test" else val), test, artifacts
        )

    def vocab_json(self) -> dict[str, Any]:
        source, target = self._bound()
        return {"source": source.to_json(), "target": target.to_json()}

    def split(self, entries: list[Entry], expand: bool = False) -> Split:
        """Entries as tensors (see the module docstring); ``expand``: one row per reference."""
        source, target = self._bound()
        if expand:
            entries = [Entry(e.source, (r,)) for e in entries for r in e.references]
        src = [source.encode(e.source)[0] for e in entries]
        refs = [[target.encode(r)[0] + [EOS] for r in e.references] for e in entries]
        R = max(len(r) for r in refs)
        T = max(len(x) for r in refs for x in r)
        targets = torch.full((len(entries), R, T), PAD, dtype=torch.long)
        for n, rows in enumerate(refs):
            targets[n, : len(rows)] = _pad(rows, T)
        lengths = torch.tensor([len(s) for s in src], dtype=torch.long)
        return Split((_pad(src, int(lengths.max())), lengths), targets)

    def bind_run(self, run_dir: PathLike) -> None:
        """Use the run's ``vocab.json`` (the model's sizes, the encoding of new sources)."""
        path = Path(run_dir) / VOCAB
        if not path.is_file():
            raise PredictError(f"{path}: expected this run's vocabulary, got no such file")
        value = json.loads(path.read_text("utf-8"))
        if not isinstance(value, dict) or set(value) != {"source", "target"}:
            raise DataError(
                f"{path}: expected {{'source': ..., 'target': ...}}, got {str(value)[:80]}"
            )
        self.source = PairVocab.from_json(value["source"], f"{path} source")
        self.target = PairVocab.from_json(value["target"], f"{path} target")

    def _bound(self) -> tuple[PairVocab, PairVocab]:
        if self.source is None or self.target is None:
            self.load()  # e.g. `rnnlab summary`: the vocabularies the data would give
        assert self.source is not None and self.target is not None
        return self.source, self.target

    def build_model(self) -> Seq2Seq:
        m = self.config.model
        source, target = self._bound()
        model = Seq2Seq(
            len(source),
            len(target),
            m.embedding_dim,
            m.hidden_sizes[0],
            encoder_layers=len(m.hidden_sizes),
            decoder_layers=m.decoder_layers,
            cell=m.cell,
            decoder_cell=m.decoder_cell,
            attention=m.attention,
            input_feeding=m.input_feeding,
            dropout=m.dropout,
            tie_weights=m.tie_weights,
            backend=m.backend,
            precision=model_precision(m),
            encoder_options=m.variant_options(),
        )
        check_bf16(model, m)
        return model

    def check_weights(self, tensors: dict[str, Tensor], where: str) -> None:
        for name, vocab in zip(("source", "target"), (self.source, self.target), strict=True):
            emb = tensors.get(f"{name}_embedding.weight")
            if vocab is not None and emb is not None and emb.shape[0] != len(vocab):
                raise PredictError(
                    f"{where}: expected a {name} embedding of {len(vocab)} rows (vocab.json), "
                    f"got {emb.shape[0]}"
                )

    def example_inputs(self, batch_size: int) -> tuple[Tensor, ...]:
        S = 8
        src = torch.full((batch_size, S), 4, dtype=torch.long)  # (B, S)
        return src, torch.full((batch_size,), S), torch.full((batch_size, S), BOS)

    def batches(
        self, split: Split, training: bool, rank: int = 0, world_size: int = 1
    ) -> BatchSource:
        t, shard = self.config.train, {"rank": rank, "world_size": world_size}
        size = t.batch_size if training else self.eval_batch_size(world_size)
        return Batches(
            split, size, shuffle=training, seed=t.seed, bucket=t.bucket, trim="post", **shard
        )

    # -- loss and metrics -----------------------------------------------------------------------
    def batch_loss(
        self,
        model: nn.Module,
        inputs: tuple[Tensor, ...],
        targets: Tensor,
        carry: Carry | None,
        training: bool,
    ) -> BatchLoss:
        src, lengths = inputs[0], inputs[1]  # (B, S), (B,)
        refs = targets.clamp_min(PAD)  # (B, R, T); a stand-in example (-100) counts nothing
        gold = refs[:, 0]  # (B, T): the first reference, then </s>
        T = max(1, int((gold != PAD).sum(1).max()))
        gold = gold[:, :T]
        bos = gold.new_full((gold.shape[0], 1), BOS)
        logits = model(src, lengths, torch.cat([bos, gold[:, :-1]], dim=1))  # (B, T, V)
        smoothing = self.config.train.label_smoothing if training else 0.0
        total = nn.functional.cross_entropy(
            logits.transpose(1, 2),
            gold,
            ignore_index=PAD,
            reduction="sum",
            label_smoothing=smoothing,
        )
        real = gold != PAD  # (B, T)
        correct = ((logits.argmax(-1) == gold) & real).sum()
        sums = {"correct_tokens": float(correct)}
        if not training:
            sums |= self.decoded_sums(getattr(model, "module", model), src, lengths, refs)
        return BatchLoss(total, int(real.sum()), sums)

    def decoded_sums(self, model: Seq2Seq, src: Tensor, lengths: Tensor, refs: Tensor) -> dict:
        """Decode the batch (``model.beam``) and sum its error counts against ``refs``."""
        keep = refs[:, 0, 0] != PAD  # stand-in examples have no reference
        if not bool(keep.any()):
            return {}
        src, lengths, refs = src[keep], lengths[keep], refs[keep]
        beam = self.config.model.beam
        limit = min(1000, refs.shape[-1] + 10)
        hyps = [h[0].tokens for h in model.translate(src, lengths, beam=beam, max_length=limit)]
        references = [[r[: r.index(EOS)] for r in rows.tolist() if r[0] != PAD] for rows in refs]
        sums = sequence_sums(hyps, references)
        if self.config.data.target_tokens == "word":
            _, target = self._bound()
            texts = [[target.decode(r) for r in rs] for rs in references]
            sums |= text_stat_sums([target.decode(h) for h in hyps], texts)
        return sums

    def metrics(self, sums: dict[str, float]) -> dict[str, float]:
        out = {"token_accuracy": sums.get("correct_tokens", 0.0) / max(sums["n"], 1)}
        if sums.get("sequences"):
            out["token_error_rate"] = sums["edits"] / max(sums["ref_tokens"], 1)
            out["sequence_error_rate"] = sums["wrong"] / sums["sequences"]
            out |= text_scores(sums)
        if sums.get("seconds"):
            out["tokens_per_second"] = sums["n"] / sums["seconds"]
        return out

    # -- sources in, outputs out ----------------------------------------------------------------
    def read_artifacts(self, run_dir: PathLike) -> dict[str, Any]:
        self.bind_run(run_dir)
        return {VOCAB: self.vocab_json()}

    def encode_sources(self, raw: Sequence[str]) -> tuple[Tensor, Tensor, list[dict[str, Any]]]:
        """Source texts -> ``(src (B, S), lengths (B,), notes)``; notes list the tokens outside
        the vocabulary (read as ``<unk>``). PredictError for an empty, binary or too long one."""
        source, _ = self._bound()
        if not raw:
            raise PredictError("translate expected at least one source, got none")
        rows, notes = [], []
        for k, text in enumerate(raw):
            if not isinstance(text, str) or not text.strip():
                raise PredictError(f"source {k + 1}: expected non-empty text, got {text!r}")
            if "\x00" in text:
                raise PredictError(f"source {k + 1}: expected text, got binary data (a NUL)")
            tokens = split_tokens(self.normalise(text), source.level)
            cap = self.config.data.max_length
            if len(tokens) > cap:
                raise PredictError(
                    f"source {k + 1}: expected at most {cap} tokens (data.max_length), got "
                    f"{len(tokens)}"
                )
            ids, unknown = source.encode(tokens)
            rows.append(ids)
            notes.append({"source": text, "tokens": list(tokens), "unknown": sorted(set(unknown))})
        lengths = torch.tensor([len(r) for r in rows])
        return _pad(rows, int(lengths.max())), lengths, notes

    def normalise(self, text: str) -> str:
        """A source as training saw it: stripped; CMUdict words lower-cased."""
        text = text.strip()
        return text.lower() if self.config.data.dataset == "cmudict" else text

    def translate(
        self,
        model: Seq2Seq,
        raw: Sequence[str],
        beam: int = 1,
        n_best: int = 1,
        max_length: int | None = None,
        length_penalty: float = 0.0,
        attention: bool = False,
    ) -> list[dict[str, Any]]:
        """Per source: its notes and ``outputs``, the ``n_best`` hypotheses best first, each
        ``{"text", "tokens", "log_prob", "ranking", "finished"}`` (with ``attention``, the
        weights (len(tokens) + 1) x S as lists)."""
        max_length = self.config.data.max_length if max_length is None else max_length
        try:
            check_options(beam, n_best, max_length, length_penalty)
        except ValueError as exc:
            raise PredictError(f"translate: {exc}") from exc
        src, lengths, notes = self.encode_sources(raw)
        _, target = self._bound()
        results = model.translate(
            src,
            lengths,
            beam=beam,
            n_best=n_best,
            max_length=max_length,
            length_penalty=length_penalty,
        )
        out = []
        for note, hyps in zip(notes, results, strict=True):
            outputs = []
            for h in hyps:
                o = {
                    "text": target.decode(h.tokens),
                    "tokens": [target.tokens[i] for i in h.tokens],
                    "log_prob": h.score,
                    "ranking": h.ranking,
                    "finished": h.finished,
                }
                if attention:
                    o["attention"] = h.attention.tolist()
                outputs.append(o)
            out.append(note | {"outputs": outputs})
        return out

    # -- predict and inspect hooks ----------------------------------------------------------------
    def prepare(self, raw: Sequence[Any], artifacts: dict[str, Any], **options: Any) -> Prepared:
        if options:
            raise PredictError(f"sources expected no options, got {sorted(options)}")
        src, lengths, notes = self.encode_sources(list(raw))
        return Prepared((src, lengths), notes)

    def predict(self, model: nn.Module, prepared: Prepared) -> list[dict[str, Any]]:
        """Greedy translations, one ``{"source", "output", "log_prob", ...}`` per source."""
        src, lengths = prepared.inputs
        _, target = self._bound()
        hyps = model.translate(src, lengths, beam=1, max_length=self.config.data.max_length)
        return [
            n | {"output": target.decode(h[0].tokens), "log_prob": h[0].score}
            for n, h in zip(prepared.notes, hyps, strict=True)
        ]

    def example(self, raw: Any, artifacts: dict[str, Any]) -> Example:
        src, lengths, notes = self.encode_sources([raw])
        unknown = set(notes[0]["unknown"])
        return Example(
            (src, lengths),
            np.ones(src.shape[1], dtype=bool),
            notes[0]["tokens"],
            ids=src[0].tolist(),
            oov=[t in unknown for t in notes[0]["tokens"]],
        )

    def real_steps(self, inputs: tuple[Tensor, ...]) -> Tensor:
        src, lengths = inputs[0], inputs[1]
        return torch.arange(src.shape[1])[None] < lengths[:, None]  # (N, S)
