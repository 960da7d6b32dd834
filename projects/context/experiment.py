"""How much context does a recurrent language model use? (``python -m projects.context``)

Shape legend: B batch (rows of a stream), T time, P target positions, K context length,
H hidden units, V vocabulary size.

The tutorial argues that "the clouds are in the *sky*" needs no context while "I grew up in
France ... I speak fluent *French*" needs context from far back, which a vanilla RNN loses and an
LSTM keeps. This experiment trains a vanilla RNN, an LSTM and a GRU word-level language model
(:class:`rnnlab.LanguageModel`, same data, size, optimiser, steps and seeds) on
IMDB reviews and measures two things on the test reviews:

* **Context use** (:mod:`projects.context.measure`; after Khandelwal et al. 2018,
  "Sharp Nearby, Fuzzy Far Away", who found LSTM LMs use about 200 tokens). The test split's
  first ``eval_tokens`` ids are cut into
  ``eval_rows`` contiguous rows; the ordinary stateful evaluation (state carried from the row's
  start) gives each target its loss, and their mean is ``test_loss``. At ``positions`` targets
  drawn from the rows (each with at least ``max(contexts)`` tokens before it in its row), the
  model is run again from the zero state over only the ``k`` tokens before the target, for each
  ``k`` in ``contexts``; ``"all"`` is the stateful loss at the same targets. Differences between
  ``k`` and ``"all"`` are paired (the same targets), so their standard errors are small. A model
  trained statefully meets the zero state only at the start of its stream, so part of what a
  reset window costs may be the reset itself; with ``replaced_words`` > 0 every window is also
  measured after that many words of other test text (from another row) in place of the words
  before it, as Khandelwal et al.'s "replace" perturbation of the distant context does
  (``context_loss_replaced``).
* **The cloze probe**: see :mod:`projects.context.probe`.

Training is stateful truncated BPTT over the training stream cut into ``batch_size`` rows
(windows of ``bptt`` steps, the state carried and detached, reset when the stream wraps), Adam
with gradient clipping, as the language-model task does.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from projects.context.measure import context_use, final_logits, stops_gaining
from projects.context.probe import DEFAULT_PAIRS, DEFAULT_TEMPLATES, ClozeProbe
from rnnlab import LanguageModel
from rnnlab.data import Corpus, batchify, load_corpus, windows
from rnnlab.nn.registry import CELL_NAMES

__all__ = [
    "CELLS",
    "ContextConfig",
    "ContextResults",
    "run_context",
    "summarize",
    "train_language_model",
]

CELLS = ("rnn", "lstm", "gru")  # the published run's cells (any of CELL_NAMES runs)
Progress = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class ContextConfig:
    """Everything that defines a context run; the defaults are the full experiment.

    A cell "stops gaining" at the smallest ``k`` from which on every longer context lowers the
    loss by less than ``saturation_nats`` or by less than two standard errors (paired over the
    same targets), compared with ``"all"``.
    """

    cells: tuple[str, ...] = CELLS
    seeds: tuple[int, ...] = (0,)
    sample: bool = False  # the IMDB sample shipped with rnnlab instead of the full archive
    data_dir: str | None = None
    max_vocab: int = 10_000
    embedding_dim: int = 256
    hidden_size: int = 256
    num_layers: int = 1
    dropout: float = 0.3  # with 0.1 and clipping at 1, wordlm runs fell into stuck states
    batch_size: int = 32
    bptt: int = 70
    steps: int = 3000
    lr: float = 2e-3
    clip_grad_norm: float = 0.25
    log_every: int = 100
    contexts: tuple[int, ...] = (1, 2, 5, 10, 20, 50, 100, 200)
    eval_tokens: int = 200_000
    eval_rows: int = 10
    positions: int = 4000
    position_seed: int = 1234
    window_chunk: int = 512
    saturation_nats: float = 0.01
    replaced_words: int = 100  # also measure with this many words of other text first; 0: not
    distances: tuple[int, ...] = (0, 5, 10, 20, 50, 100, 200)
    spans: int = 20
    probe_seed: int = 4321
    pairs: tuple[tuple[str, str], ...] = DEFAULT_PAIRS
    templates: tuple[tuple[str, str], ...] = DEFAULT_TEMPLATES

    def __post_init__(self) -> None:
        for name in (
            "max_vocab",
            "embedding_dim",
            "hidden_size",
            "num_layers",
            "batch_size",
            "bptt",
            "steps",
            "log_every",
            "eval_tokens",
            "eval_rows",
            "positions",
            "window_chunk",
            "spans",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"ContextConfig expected {name} to be a positive int, got {value!r}"
                )
        unknown = [c for c in self.cells if c not in CELL_NAMES]
        if not self.cells or unknown:
            raise ValueError(f"ContextConfig expected cells among {CELL_NAMES}, got {self.cells}")
        if not self.seeds or any(not isinstance(s, int) or s < 0 for s in self.seeds):
            raise ValueError(f"ContextConfig expected seeds to be ints >= 0, got {self.seeds}")
        if not self.contexts or any(not isinstance(k, int) or k < 1 for k in self.contexts):
            raise ValueError(
                f"ContextConfig expected contexts to be positive ints, got {self.contexts}"
            )
        if any(not isinstance(n, int) or n < 0 for n in self.distances) or not self.distances:
            raise ValueError(
                f"ContextConfig expected distances to be ints >= 0, got {self.distances}"
            )
        if isinstance(self.replaced_words, bool) or not isinstance(self.replaced_words, int):
            raise ValueError(
                f"ContextConfig expected an int replaced_words >= 0, got {self.replaced_words!r}"
            )
        if self.replaced_words < 0:
            raise ValueError(
                f"ContextConfig expected an int replaced_words >= 0, got {self.replaced_words}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"ContextConfig expected dropout in [0, 1), got {self.dropout}")
        if not self.lr > 0 or not self.clip_grad_norm >= 0 or not self.saturation_nats >= 0:
            raise ValueError(
                "ContextConfig expected lr > 0, clip_grad_norm >= 0 and saturation_nats >= 0, "
                f"got {self.lr}, {self.clip_grad_norm}, {self.saturation_nats}"
            )

    @classmethod
    def quick(cls, **changes: Any) -> ContextConfig:
        """The ``--quick`` variant, sized to stay under 10 minutes on 2 idle CPU cores: a
        5,000-word vocabulary (the smallest that keeps the cloze probe's common countries),
        128 units, 1,200 steps of 32 x 35 words at lr 3e-3 (dropout 0.1, clipping at 1.0),
        1,000 targets on a 20,000-word test prefix, 10 distractor spans. 400 steps took 34-45 s
        per cell at load 8-12 with one thread."""
        values = {
            "max_vocab": 5000,
            "embedding_dim": 128,
            "hidden_size": 128,
            "bptt": 35,
            "steps": 1200,
            "lr": 3e-3,
            "dropout": 0.1,
            "clip_grad_norm": 1.0,
            "eval_tokens": 20_000,
            "positions": 1000,
            "spans": 10,
            **changes,
        }
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# -- training -----------------------------------------------------------------------------------
def detach_state(state: Any) -> Any:
    """The state cut from the graph that made it (truncated BPTT between windows). A local
    copy of ``rnnlab.nn.language_model.detach_state``, which is not part of rnnlab's top-level
    API: a cell's named tuple of tensors (:class:`rnnlab.LSTMState` ``(h, c)``, sLSTM's
    ``(h, c, n, m)``, mLSTM's ``(h, C, n, m)``) or one tensor."""
    if isinstance(state, tuple):
        return type(state)(*(part.detach() for part in state))
    return state.detach()


def train_language_model(
    cell: str,
    seed: int,
    train_ids: np.ndarray,
    vocab_size: int,
    config: ContextConfig,
    progress: Progress | None = None,
) -> tuple[LanguageModel, dict[str, Any]]:
    """Train one model from scratch: ``(model in eval mode, record)``; the record holds the
    training-loss ``curve`` (mean over each ``log_every`` steps), ``parameters`` and
    ``train_seconds``. The data order is the same for every cell and seed (contiguous rows);
    the seed sets the initialisation and the dropout masks."""
    c = config
    torch.manual_seed(seed)
    model = LanguageModel(
        vocab_size, c.embedding_dim, c.hidden_size, c.num_layers, cell=cell, dropout=c.dropout
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=c.lr)
    data = batchify(train_ids, c.batch_size)  # (B, L)
    start, curve, state, total, count, step = time.perf_counter(), [], None, 0.0, 0, 0
    model.train()
    while step < c.steps:
        state = None  # a new pass over the stream starts from zeros
        for inputs, targets in windows(data, c.bptt, drop_last=True):
            # the mean cross-entropy, the decoder and softmax fused (as rnnlab's LM task)
            loss, state = model(inputs, state, targets=targets)
            state = detach_state(state)  # truncated BPTT: no gradient into the last window
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if c.clip_grad_norm:
                nn.utils.clip_grad_norm_(model.parameters(), c.clip_grad_norm)
            optimizer.step()
            step, total, count = step + 1, total + loss.item(), count + 1
            if step % c.log_every == 0 or step == c.steps:
                curve.append({"step": step, "loss": total / count})
                total, count = 0.0, 0
                if progress is not None:
                    progress({"event": "train", "cell": cell, "seed": seed, **curve[-1]})
            if step == c.steps:
                break
    model.eval()
    record = {
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_seconds": time.perf_counter() - start,
        "final_train_loss": curve[-1]["loss"],
        "curve": curve,
    }
    return model, record


# -- the whole experiment -----------------------------------------------------------------------
@dataclass(frozen=True)
class ContextResults:
    """What :func:`run_context` measured: one ``runs`` row per (cell, seed) and the ``table``
    (per cell: mean over seeds of each context length's loss, the cloze accuracy per distance,
    and where the cell stops gaining)."""

    config: ContextConfig
    corpus: dict[str, Any]
    probe: dict[str, Any]
    runs: list[dict[str, Any]]
    table: dict[str, dict[str, Any]]
    wall_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "corpus": self.corpus,
            "probe": self.probe,
            "table": self.table,
            "wall_seconds": self.wall_seconds,
            "runs": self.runs,
        }


def summarize(config: ContextConfig, runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per cell, means over seeds: ``test_loss``, ``context_loss[k]`` (loss and difference to
    ``"all"``), ``stops_gaining``, ``cloze[n]`` (accuracy, probability of the right
    language among the candidates, and the country's log-probability gain)."""
    table: dict[str, dict[str, Any]] = {}
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    for cell in config.cells:
        rows = [r for r in runs if r["cell"] == cell]
        if not rows:
            continue
        ctx = _mean_losses(rows, "context_loss")
        cloze = {
            n: {
                f: mean([r["cloze"][n][f] for r in rows])
                for f in ("accuracy", "probability", "gain")
            }
            for n in rows[0]["cloze"]
        }
        table[cell] = {
            "seeds": len(rows),
            "test_loss": mean([r["test_loss"] for r in rows]),
            "test_perplexity": math.exp(mean([r["test_loss"] for r in rows])),
            "context_loss": ctx,
            "stops_gaining": stops_gaining(ctx, config.saturation_nats),
            **_replaced_summary(rows, config),
            "cloze": cloze,
        }
    return table


def _mean_losses(rows: list[dict[str, Any]], key: str) -> dict[str, dict[str, float]]:
    fields = ("loss", "minus_all", "minus_all_se")
    return {
        k: {f: sum(r[key][k][f] for r in rows) / len(rows) for f in fields} for k in rows[0][key]
    }


def _replaced_summary(rows: list[dict[str, Any]], config: ContextConfig) -> dict[str, Any]:
    if "context_loss_replaced" not in rows[0]:
        return {}
    ctx = _mean_losses(rows, "context_loss_replaced")
    return {
        "context_loss_replaced": ctx,
        "stops_gaining_replaced": stops_gaining(ctx, config.saturation_nats),
    }


def run_context(
    config: ContextConfig | None = None,
    progress: Progress | None = None,
    corpus: Corpus | None = None,
) -> ContextResults:
    """Train every cell with every seed, then measure context use and the cloze probe; silent
    except through ``progress``, which receives dicts: ``{"event": "data", ...}`` once,
    ``{"event": "train", ...}`` during training and ``{"event": "run", ...}`` (a finished row
    plus ``index`` and ``total``) after each model. ``corpus``: a word-level corpus to use
    instead of loading IMDB (tests)."""
    config = config or ContextConfig()
    start = time.perf_counter()
    if corpus is None:
        corpus = load_corpus(
            "imdb",
            level="word",
            max_vocab=config.max_vocab,
            data_dir=config.data_dir,
            sample=config.sample,
        )
    if corpus.vocab.level != "word":
        raise ValueError(f"run_context expected a word-level corpus, got {corpus.vocab.level}")
    test = corpus.test[: config.eval_tokens]
    rows = batchify(test.astype(np.int64), config.eval_rows)  # (B, L)
    probe = ClozeProbe.build(
        corpus.vocab,
        corpus.test,
        config.pairs,
        config.templates,
        config.distances,
        config.spans,
        config.probe_seed,
    )
    corpus_info = {
        "source": corpus.source,
        "vocab_size": len(corpus.vocab),
        "train_tokens": len(corpus.train),
        "test_tokens_used": int(rows.numel()),
        "unknown": dict(corpus.unknown),
    }
    if progress is not None:
        progress({"event": "data", **corpus_info, "probe": probe.describe()})
    jobs = [(s, c) for s in config.seeds for c in config.cells]
    runs = []
    for index, (seed, cell) in enumerate(jobs, 1):
        model, record = train_language_model(
            cell, seed, corpus.train, len(corpus.vocab), config, progress
        )
        t0 = time.perf_counter()
        row = {"cell": cell, "seed": seed, **record, **context_use(model, rows, config)}
        row["cloze"] = probe.evaluate(functools.partial(final_logits, model))
        row["eval_seconds"] = time.perf_counter() - t0
        runs.append(row)
        if progress is not None:
            progress({"event": "run", "index": index, "total": len(jobs), **row})
    table = summarize(config, runs)
    return ContextResults(
        config, corpus_info, probe.describe(), runs, table, time.perf_counter() - start
    )
