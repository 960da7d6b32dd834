"""Typed, frozen run configurations, TOML presets and dotted overrides.

A configuration has four sections, each a frozen dataclass:

* ``data``: which dataset and how it becomes tensors (:class:`DataConfig`);
* ``model``: the architecture (:class:`ModelConfig`; ``kind`` picks the task, see
  :mod:`rnnlab.tasks`, which builds the model);
* ``train``: optimisation (:class:`TrainConfig`, used by :func:`rnnlab.train.fit`);
* ``run``: logging and checkpointing (:class:`RunConfig`).

Presets are TOML files in ``rnnlab/presets/`` holding only the keys that differ from the
defaults below. Overrides are dotted keys (``train.epochs=5``); unknown keys and values of the
wrong type are refused with an error naming what was expected and what came. The resolved
configuration (:meth:`Config.to_dict`) is saved as JSON with every run and every checkpoint.
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from importlib import resources
from typing import Any, Literal

from rnnlab.config_model import check_model, variant_options
from rnnlab.config_values import (
    MAX_PARAMETERS,
    ConfigError,
    check_numbers,
    parse_override,
    positive,
    strict_dataclass,
)
from rnnlab.nn.backends import Backend
from rnnlab.nn.registry import layer_class

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "Config",
    "ConfigError",
    "DataConfig",
    "ModelConfig",
    "RunConfig",
    "TrainConfig",
    "apply_overrides",
    "list_presets",
    "load_preset",
    "parse_override",
]


@dataclass(frozen=True)
class DataConfig:
    """Where examples come from and how they become tensors.

    ``dataset``: ``"mnist"`` (images read row by row: 28 steps of 28 pixels; any dataset in the
    MNIST IDX layout via ``path``) or ``"imdb"`` (reviews as word ids, Keras's encoding; for a
    language model, ``model.kind = "lm"``, the review text as one token stream, or any text
    file or folder via ``path``: see :func:`rnnlab.data.corpus.load_corpus`).
    ``validation``: ``"test"`` evaluates on the test split every epoch (as the tutorial's
    experiments do; the seed presets), ``"holdout"`` holds out ``holdout`` training examples
    drawn with ``holdout_seed`` (the best checkpoint is then picked without seeing test, and
    test is evaluated once, at the end, on it), ``"none"`` skips validation.
    """

    dataset: Literal["mnist", "imdb", "fsdd", "cmudict", "pairs"] = "mnist"
    sample: bool = False  # the real sample shipped in the package (no files, no network)
    path: str = ""  # image datasets: a folder of MNIST-layout IDX files (e.g. Fashion-MNIST)
    validation: Literal["test", "holdout", "none"] = "test"
    holdout: int = 5000
    holdout_seed: int = 0  # which training examples are held out (fixed, saved with the run)
    # imdb: keras.datasets.imdb.load_data and keras.utils.pad_sequences options
    num_words: int = 1000
    skip_top: int = 0
    maxlen: int = 20
    padding: Literal["pre", "post"] = "pre"
    truncating: Literal["pre", "post"] = "pre"
    punctuation: bool = True  # false drops punctuation tokens: Keras's IMDB encoding has none
    # language models (model.kind = "lm")
    level: Literal["char", "word"] = "char"
    max_vocab: int = 0  # at most this many ids, <unk> and <eos> included (0: every token)
    bptt: int = 35  # steps per window of truncated backpropagation through time
    eval_tokens: int = 0  # validate and test on the first N tokens of each split (0: all)
    # audio (data.dataset = "fsdd"; rnnlab.data.audio) and CTC strings (rnnlab.data.strings)
    speakers: str = ""  # "a,b/c": train on a and b, test on c ("": everyone, official split)
    sample_rate: int = 8000  # Hz: recordings are resampled to it
    features: Literal["logmel", "mfcc"] = "logmel"
    bands: int = 40  # mel bands (or MFCCs): the model's input_size
    hop_ms: float = 16.0  # one frame every hop_ms (windows of 2 * hop_ms)
    spec_augment: bool = False  # mask random bands and frames of training features
    # model.kind = "speech": which recordings validation holds out ("first_takes": the lowest
    # indexes, rnnlab.data.fsdd.first_takes) and training copies played at these speeds
    holdout_pick: Literal["random", "first_takes"] = "random"
    speed_perturb: tuple[float, ...] = ()
    strings: int = 6000  # CTC: training strings (lines) built once from data.string_seed
    eval_strings: int = 1000  # CTC: validation and test strings (lines) each
    max_digits: int = 7  # CTC: digits per string, 1..max_digits
    string_seed: int = 0
    # sequence to sequence (model.kind = "seq2seq"): a pairs file (dataset "pairs", path) or
    # CMUdict (dataset "cmudict"); see rnnlab.data.pairs
    source_tokens: Literal["char", "word"] = "char"
    target_tokens: Literal["char", "word"] = "word"
    keep_stress: bool = False  # cmudict: keep the phonemes' stress digits (AH0, AH1, AH2)
    max_length: int = 200  # the most tokens a source or target may have

    def __post_init__(self) -> None:
        check_numbers(self)
        positive(self, "num_words", "maxlen", "holdout", "bptt", "sample_rate", "bands")
        positive(self, "hop_ms", "strings", "eval_strings", "max_digits", "max_length")
        if self.holdout_seed < 0:
            raise ConfigError(f"data.holdout_seed: expected an int >= 0, got {self.holdout_seed}")
        for name in ("max_vocab", "eval_tokens"):
            if getattr(self, name) < 0:
                raise ConfigError(f"data.{name}: expected >= 0, got {getattr(self, name)}")
        if self.dataset != "fsdd" and (self.holdout_pick != "random" or self.speed_perturb):
            raise ConfigError(
                f"data.holdout_pick, data.speed_perturb: expected the defaults for dataset "
                f"{self.dataset!r} (they are FSDD options), got {self.holdout_pick!r}, "
                f"{list(self.speed_perturb)}"
            )


PRESET_SOURCE = "preset:"  # model.init_from = "preset:NAME": train preset NAME first


@dataclass(frozen=True)
class ModelConfig:
    """The architecture; ``kind`` names the task (:data:`rnnlab.tasks.TASKS`) that builds it.

    ``hidden_sizes`` lists one recurrent layer per entry (each bidirectional if asked), chained
    with ``return_sequences`` like a Keras stack; ``dropout`` follows every recurrent layer (the
    tutorial's IMDB model), ``input_dropout`` the embedding or input projection. The last layer
    is reduced over time by ``pooling``: ``"last"`` (the final hidden state at each sequence's
    last real step), ``"mean"``, ``"max"`` or ``"meanmax"`` (both, concatenated) over real steps.
    ``cell`` is a name of the cell registry (:data:`rnnlab.nn.registry.CELL_NAMES`).
    ``backend`` is the layers' own (:data:`rnnlab.nn.backends.Backend`, one row each of the
    routing table of :func:`rnnlab.nn.backends.scan_layer`): ``"torch"`` runs rnnlab's
    parameters through torch's own recurrent op (oneDNN, cuDNN), for speed comparisons on
    unpadded batches. ``precision`` ``"bf16"`` runs the LSTM layers' matrix products on bf16
    operands while their weights, gates and cell state stay float32 (:class:`rnnlab.LSTM`'s
    ``precision``); only the compiled kernels have that mode, so it needs ``cell="lstm"`` and
    ``backend="auto"`` or ``"compiled"``. The input projection, embedding and head stay
    float32. ``"auto"`` is bf16 where that pays and float32 elsewhere
    (:func:`rnnlab.models.model_precision`): bf16 for LSTM models on a CPU that multiplies
    bf16 natively (AVX512-BF16 or AMX), where it trains 1.5-3x faster.
    """

    kind: str = "image"  # checked against rnnlab.tasks.TASKS when the task is built
    cell: str = "lstm"  # a name in rnnlab.nn.registry.CELL_NAMES
    input_size: int = 28  # image models: features per step (pixels of a row)
    projection: int = 0  # image models: Linear input -> projection before the RNN (0: none)
    embedding_dim: int = 8  # text models; the vocabulary is data.num_words
    hidden_sizes: tuple[int, ...] = (128,)
    bidirectional: bool = False
    forget_bias: float = 1.0
    dropout: float = 0.0
    input_dropout: float = 0.0
    pooling: Literal["last", "mean", "max", "meanmax"] = "last"
    mask: bool = False  # text models: skip padding via lengths (Keras's default does not)
    num_classes: int = 10
    backend: Backend = "auto"
    precision: Literal["fp32", "bf16", "auto"] = "fp32"
    tie_weights: bool = False  # language models: decoder = embedding (Press & Wolf 2017)
    # sequence to sequence (rnnlab.nn.Seq2Seq): hidden_sizes is the encoder stack (equal
    # sizes, each split over two directions), then a decoder of decoder_layers x decoder_cell
    attention: Literal["dot", "general", "additive"] = "general"
    input_feeding: bool = False
    decoder_cell: Literal["lstm", "gru"] = "lstm"
    decoder_layers: int = 1
    beam: int = 1  # the beam width validation and test decode with (1: greedy)
    # start from a trained run's weights (text classifiers: a word language model's run
    # directory, whose vocabulary, embedding and recurrent layers the classifier takes), or
    # from a preset trained first ("preset:NAME", PRESET_SOURCE)
    init_from: str = ""
    # the LSTM and GRU variants (rnnlab.LSTM's and rnnlab.GRU's options, issue 23): LayerNorm
    # (Ba et al. 2016), recurrent dropout (one mask per sequence on h_{t-1}, in training) and
    # zoneout (the rate at which c and h keep their previous values, in training); LSTM only:
    # a projection of h to proj_size units (LSTMP, torch's proj_size) and peepholes
    layer_norm: bool = False
    proj_size: int = 0
    peepholes: bool = False
    recurrent_dropout: float = 0.0
    zoneout: float = 0.0
    # language models with a train.time_limit: choose the width and dropout from the corpus
    # size and the measured speed (rnnlab.tasks.lm_sizing); hidden_sizes is the base width
    autosize: bool = False

    def __post_init__(self) -> None:
        check_numbers(self)
        positive(self, "input_size", "embedding_dim", "num_classes", "decoder_layers", "beam")
        check_model(self)

    def variant_options(self) -> dict[str, Any]:
        """The variant options of ``cell`` (LSTM: LayerNorm, projection, peepholes, recurrent
        dropout, zoneout; GRU: LayerNorm, recurrent dropout, zoneout) that differ from the
        plain cell's, as rnnlab.LSTM and rnnlab.GRU take them."""
        return variant_options(self)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation; see :func:`rnnlab.train.fit`. ``lr_schedule``: ``"none"``, ``"cosine"``
    (per step, to ``lr * min_lr_ratio`` after a linear warm-up of ``warmup_steps``), ``"step"``
    (times ``gamma`` every ``step_epochs``) or ``"plateau"`` (times ``gamma`` when validation
    loss has not improved for ``patience`` epochs; ``patience=1``, ``gamma=0.25`` with SGD is
    the anneal-on-plateau of PyTorch's word_language_model example). ``time_limit``: stop after
    this many seconds of training (0: none), cleanly: the epoch so far is closed, validated,
    checkpointed and the run reported, for CPU users who train to a budget. ``epochs`` 0 means
    as many epochs as the budget allows (it needs a ``time_limit``): a time-budgeted preset
    trains until its budget, however small the corpus."""

    epochs: int = 2
    batch_size: int = 128
    eval_batch_size: int = 1024
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd only
    clip_grad_norm: float = 0.0  # 0: no clipping
    lr_schedule: Literal["none", "cosine", "step", "plateau"] = "none"
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    step_epochs: int = 1
    gamma: float = 0.5
    patience: int = 1
    label_smoothing: float = 0.0
    bucket: bool = False  # group batches by length and trim padding (masked text models)
    seed: int = 0
    # Divergence: stop when the loss stays above divergence_factor times the first step's loss
    # for divergence_window steps in a row (0: only a non-finite loss stops a run).
    divergence_factor: float = 10.0
    divergence_window: int = 50
    time_limit: float = 0.0  # seconds of training (0: none)
    # fine-tuning a model started from another run (model.init_from): the pretrained
    # parameters learn at lr * pretrained_lr_ratio, and not at all for the first frozen_steps
    # steps, while the new layers (the head) find their feet (ULMFiT's gradual unfreezing and
    # discriminative rates, Howard & Ruder 2018, in their simplest form)
    pretrained_lr_ratio: float = 1.0
    frozen_steps: int = 0

    def __post_init__(self) -> None:
        check_numbers(self)
        positive(self, "batch_size", "eval_batch_size", "step_epochs", "patience")
        if not self.pretrained_lr_ratio > 0:
            raise ConfigError(
                f"train.pretrained_lr_ratio: expected > 0, got {self.pretrained_lr_ratio}"
            )
        if self.frozen_steps < 0:
            raise ConfigError(f"train.frozen_steps: expected >= 0, got {self.frozen_steps}")
        if self.epochs < 0 or (self.epochs == 0 and not self.time_limit > 0):
            raise ConfigError(
                "train.epochs: expected an int >= 1, or 0 (until train.time_limit) with a "
                f"train.time_limit > 0, got {self.epochs} with time_limit {self.time_limit}"
            )
        if self.epochs == 0 and self.lr_schedule == "cosine":
            raise ConfigError(
                "train.lr_schedule: expected a schedule that needs no total step count with "
                "train.epochs=0 (until the time limit), got 'cosine'"
            )
        if self.seed < 0:
            raise ConfigError(f"train.seed: expected an int >= 0, got {self.seed}")
        if self.divergence_window < 0:
            raise ConfigError(
                f"train.divergence_window: expected >= 0, got {self.divergence_window}"
            )
        if self.divergence_factor and self.divergence_factor <= 1:
            raise ConfigError(
                f"train.divergence_factor: expected 0 (off) or > 1, got {self.divergence_factor}"
            )
        for name in ("lr", "gamma"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"train.{name}: expected > 0, got {getattr(self, name)}")
        for name in (
            "weight_decay",
            "clip_grad_norm",
            "warmup_steps",
            "min_lr_ratio",
            "time_limit",
        ):
            if getattr(self, name) < 0:
                raise ConfigError(f"train.{name}: expected >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(
                f"train.label_smoothing: expected in [0, 1), got {self.label_smoothing}"
            )


@dataclass(frozen=True)
class RunConfig:
    """Logging and checkpointing. ``log_every``: the tutorial's "every N steps: minibatch loss
    and training accuracy" lines (0: none). ``checkpoint_every``: also save ``last`` every N
    steps inside an epoch, so a killed run resumes mid-epoch (0: at epoch ends only)."""

    log_every: int = 20
    checkpoint_every: int = 100
    evaluate_test: bool = True  # evaluate the test split at the end, into report.json

    def __post_init__(self) -> None:
        check_numbers(self)
        for name in ("log_every", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise ConfigError(f"run.{name}: expected >= 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class Config:
    """A whole run: ``name`` (the preset), ``description`` and the four sections."""

    name: str = "custom"
    description: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        if self.parameter_bound() > MAX_PARAMETERS:
            m = self.model
            raise ConfigError(
                f"model: expected at most {MAX_PARAMETERS:,} parameters (8 GiB of float32), got "
                f"about {self.parameter_bound():,} (model.hidden_sizes={list(m.hidden_sizes)}, "
                f"model.embedding_dim={m.embedding_dim}, data.num_words={self.data.num_words})"
            )

    def parameter_bound(self) -> int:
        """An upper bound of the model's parameter count, to refuse absurd sizes before any
        memory is allocated (the task's model may have fewer)."""
        m = self.model
        gates, dirs = layer_class(m.cell).cell_type.gates, 2 if m.bidirectional else 1
        width = m.projection or m.input_size
        total = width * (m.input_size + 1) + self.data.num_words * m.embedding_dim
        width = max(width, m.embedding_dim)
        for h in m.hidden_sizes:
            total += dirs * gates * h * (width + h + 2)
            width = dirs * h
        return total + 2 * width * (m.num_classes + 1)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (tuples become lists)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> Config:
        """The inverse of :meth:`to_dict`; refuses unknown keys and wrong types. A run saved
        before the image kind had its one name (``model.kind = "sequence"``) reads as
        ``"image"``."""
        model = values.get("model")
        kind = model.get("kind") if isinstance(model, Mapping) else None
        if isinstance(kind, str) and kind in _OLD_KINDS:  # a list or dict is refused below
            values = {**values, "model": {**model, "kind": _OLD_KINDS[model["kind"]]}}
        return strict_dataclass(cls, values, "")

    def override(self, assignments: Iterable[str]) -> Config:
        """A copy with ``section.key=value`` assignments applied (see :func:`apply_overrides`)."""
        return apply_overrides(self, assignments)


_OLD_KINDS = {"sequence": "image"}  # model.kind names of earlier releases -> today's
SECTIONS = {k: v for k, v in typing.get_type_hints(Config).items() if dataclasses.is_dataclass(v)}


def apply_overrides(config: Config, assignments: Iterable[str]) -> Config:
    """Apply ``section.key=value`` overrides; unknown keys, wrong types and a key given twice
    (which would silently keep the last) raise ConfigError."""
    values = config.to_dict()
    seen: dict[str, str] = {}
    for assignment in assignments:
        key, value = parse_override(assignment)
        if key in seen:
            raise ConfigError(
                f"override {key!r}: expected each key once, got it twice ({seen[key]!r} and "
                f"{assignment!r})"
            )
        seen[key] = assignment
        parts = key.split(".")
        if len(parts) == 1 and parts[0] in ("name", "description"):
            values[parts[0]] = value
            continue
        if len(parts) != 2 or parts[0] not in SECTIONS:
            raise ConfigError(
                f"override {key!r}: expected section.key with a section in {sorted(SECTIONS)}, "
                f"got {key!r}"
            )
        section, name = parts
        section_keys = {f.name for f in fields(SECTIONS[section])}
        if name not in section_keys:
            raise ConfigError(
                f"override {key!r}: unknown key; expected one of "
                f"{', '.join(section + '.' + k for k in sorted(section_keys))}, got {key!r}"
            )
        values[section][name] = value
    return Config.from_dict(values)


def list_presets() -> list[str]:
    """Names of the presets shipped in the package, sorted."""
    folder = resources.files("rnnlab") / "presets"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))


def load_preset(name: str, overrides: Iterable[str] = ()) -> Config:
    """The preset ``name`` (see :func:`list_presets`) with ``overrides`` applied."""
    names = list_presets()
    if name not in names:
        raise ConfigError(f"unknown preset {name!r}: expected one of {', '.join(names)}")
    text = (resources.files("rnnlab") / "presets" / f"{name}.toml").read_text("utf-8")
    values = tomllib.loads(text)
    values.setdefault("name", name)
    config = Config.from_dict(values)
    return apply_overrides(config, overrides)
