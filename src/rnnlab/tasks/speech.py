"""Spoken digit classification: FSDD recordings as log-mel (or MFCC) frames, one digit each.

Shape legend: N recordings, B batch, T frames, F features per frame, C classes.

Each recording (:func:`rnnlab.data.fsdd.load_fsdd`) becomes (T, F) normalised frames
(:func:`rnnlab.data.audio.features`, the settings ``data.sample_rate``, ``data.bands``,
``data.hop_ms``, ``data.features``), padded after its end; a
:class:`~rnnlab.models.SequenceClassifier` reads the real frames (``lengths``) and classifies.
The split is FSDD's official one (indexes 0-4 test, 5-49 train), the speakers chosen by
``data.speakers``; validation is carved from the training recordings: ``data.holdout`` of them,
drawn at random (``data.holdout_pick = "random"``, with ``data.holdout_seed``) or the earliest
takes (``"first_takes"``: :func:`rnnlab.data.fsdd.first_takes`, indexes 5-9 when 250 of 5
speakers' recordings are held out), which resemble the test's takes 0-4 more.

``data.speed_perturb`` (speeds such as ``[0.9, 1.1]``; Ko et al. 2015) adds, for every training
recording, its features at each of those speeds (:func:`rnnlab.data.audio.change_speed`),
computed once; each training example then reads the original or one of its copies, drawn
uniformly per example and batch. The training split's inputs are then ``(x, lengths, x_1,
lengths_1, ...)``, one pair per speed; the model only ever sees one ``(x, lengths)`` pair.
New recordings for ``predict`` are WAV files (:func:`rnnlab.data.audio.read_wav`: mixed down,
resampled).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from rnnlab.config import Config, ConfigError
from rnnlab.data.audio import (
    AudioError,
    FeatureSpec,
    Wave,
    change_speed,
    features,
    read_wav,
    spec_augment,
    trim,
)
from rnnlab.data.errors import DataError
from rnnlab.data.fsdd import first_takes, load_fsdd, official_split
from rnnlab.models import SequenceClassifier, check_bf16
from rnnlab.tasks.base import (
    Example,
    Floors,
    PathLike,
    PredictError,
    Prepared,
    TaskData,
    carve_holdout,
)
from rnnlab.tasks.classify import ClassificationTask
from rnnlab.train import Batches, BatchLoss, BatchSource, Carry, Split

__all__ = ["SpeechClassification", "augment", "feature_spec", "pad_frames", "read_audio"]


def feature_spec(config: Config) -> FeatureSpec:
    d = config.data
    return FeatureSpec(d.sample_rate, d.bands, 2 * d.hop_ms, d.hop_ms, d.features)


def check_audio_config(config: Config) -> None:
    d, m = config.data, config.model
    if d.dataset != "fsdd":
        raise ConfigError(f"data.dataset: expected 'fsdd' for audio, got {d.dataset!r}")
    if m.input_size != d.bands:
        raise ConfigError(
            f"model.input_size: expected data.bands ({d.bands}) features per frame, "
            f"got {m.input_size}"
        )
    if not d.hop_ms > 0:
        raise ConfigError(f"data.hop_ms: expected > 0, got {d.hop_ms}")
    if m.kind != "speech" and (d.holdout_pick != "random" or d.speed_perturb):
        raise ConfigError(
            f"data.holdout_pick, data.speed_perturb: expected the defaults for model.kind "
            f"{m.kind!r} (only 'speech' reads them), got {d.holdout_pick!r}, "
            f"{list(d.speed_perturb)}"
        )
    for speed in d.speed_perturb:
        if not (0.5 <= speed <= 2.0 and speed != 1.0):
            raise ConfigError(
                f"data.speed_perturb: expected speeds in [0.5, 2] other than 1 (the original "
                f"is always kept), got {speed}"
            )
    if len(set(d.speed_perturb)) != len(d.speed_perturb):
        raise ConfigError(
            f"data.speed_perturb: expected distinct speeds, got {list(d.speed_perturb)}"
        )
    if d.holdout_pick != "random" and d.validation != "holdout":
        raise ConfigError(
            f"data.holdout_pick: expected data.validation = 'holdout' for "
            f"{d.holdout_pick!r}, got {d.validation!r}"
        )


def pad_frames(frames: Sequence[np.ndarray], dtype=torch.float32) -> tuple[Tensor, Tensor]:
    """Sequences (T_n, F) -> ``(x (N, T, F) padded with zeros after each, lengths (N,))``."""
    lengths = torch.tensor([len(f) for f in frames], dtype=torch.long)  # (N,)
    x = torch.zeros(len(frames), int(lengths.max()), frames[0].shape[1], dtype=dtype)
    for k, f in enumerate(frames):
        x[k, : len(f)] = torch.from_numpy(np.asarray(f))
    return x, lengths


def read_audio(raw: Sequence[PathLike], spec: FeatureSpec) -> tuple[list[np.ndarray], list[dict]]:
    """WAV files (or :class:`Wave` s already read) -> their (T, F) frames, long quiet at the
    edges trimmed (:func:`rnnlab.data.audio.trim`), and notes (``mixed_down``,
    ``resampled_from``)."""
    if not raw:
        raise PredictError("expected at least one WAV file, got none")
    frames, notes = [], []
    for item in raw:  # a path, or a Wave already read (an upload)
        try:
            wave = item if isinstance(item, Wave) else read_wav(item, spec.rate)
        except AudioError as exc:
            raise PredictError(str(exc)) from None
        frames.append(features(trim(wave.samples, spec.rate), spec))
        name = "the upload" if isinstance(item, Wave) else str(item)
        notes.append({"input": name, **wave.notes})
    return frames, notes


def augment(x: Tensor, lengths: Tensor) -> Tensor:
    """SpecAugment masks on each example's real frames, drawn from torch's RNG (so seeded
    runs repeat)."""
    rng = np.random.default_rng(int(torch.randint(0, 2**31, ())))
    out = x.clone()
    for k, n in enumerate(lengths.tolist()):
        out[k, :n] = torch.from_numpy(spec_augment(x[k, :n].numpy(), rng))
    return out


def pick_copies(inputs: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
    """``(x, lengths, x_1, lengths_1, ...)`` (the original and its copies at other speeds,
    each (B, T_c, F) and (B,)) -> ``(x (B, T, F), lengths (B,))``: per example the original or
    one copy, drawn uniformly from torch's RNG (so seeded runs repeat)."""
    copies = [(inputs[k], inputs[k + 1]) for k in range(0, len(inputs), 2)]
    pick = torch.randint(0, len(copies), (len(inputs[1]),)).tolist()  # (B,)
    frames = [copies[c][0][k, : int(copies[c][1][k])] for k, c in enumerate(pick)]
    x, lengths = pad_frames(frames, dtype=inputs[0].dtype)
    return x.to(inputs[0].device), lengths.to(inputs[1].device)


def real_frames(lengths: Tensor, T: int) -> Tensor:
    return torch.arange(T)[None, :] < lengths[:, None]  # (N, T)


class SpeechClassification(ClassificationTask):
    """FSDD recordings, one spoken digit each, read frame by frame."""

    kind = "speech"
    input_kind = "audio"
    floors = Floors(
        verbs=("predict",),
        reads="audio",
        serve="rnnlab.serve.ctc:SpokenDigitRun",  # the transcribe page: record or upload
        inspect="rnnlab.inspect.classifier:command",  # gates, and P(digit) frame by frame
        export="rnnlab.export.classifier:classifier_graph",  # x (B, T, F) unpadded
    )
    class_names = tuple(str(d) for d in range(10))

    def check_config(self) -> None:
        check_audio_config(self.config)

    def load(self, data_dir: PathLike | None = None) -> TaskData:
        d, spec = self.config.data, feature_spec(self.config)
        recordings = load_fsdd(data_dir, sample=d.sample)
        train_recs, test_recs = official_split(recordings, d.speakers)

        def split(recs, speeds: Sequence[float] = ()) -> Split:
            inputs = pad_frames([features(r.samples, spec) for r in recs])  # x (N, T, F), (N,)
            for speed in speeds:  # x_s (N, T_s, F), lengths_s (N,)
                inputs += pad_frames(
                    [features(change_speed(r.samples, speed, spec.rate), spec) for r in recs]
                )
            return Split(inputs, torch.tensor([r.digit for r in recs]))

        train, test = split(train_recs, d.speed_perturb), split(test_recs)
        val = test if d.validation == "test" else None
        if d.validation == "holdout" and d.holdout_pick == "first_takes":
            try:
                kept, held = first_takes(train_recs, d.holdout)
            except DataError as exc:
                raise ConfigError(str(exc)) from None
            train, val = train.subset(torch.tensor(kept)), train.subset(torch.tensor(held))
            val = Split(val.inputs[:2], val.targets)  # validation reads the originals only
        elif d.validation == "holdout":
            train, val = carve_holdout(train, self.config)
            val = Split(val.inputs[:2], val.targets)
        return TaskData(train, val, test)

    def batches(
        self, split: Split, training: bool, rank: int = 0, world_size: int = 1
    ) -> BatchSource:
        t, shard = self.config.train, {"rank": rank, "world_size": world_size}
        if training:
            return Batches(split, t.batch_size, True, t.seed, True, "post", **shard)
        return Batches(split, self.eval_batch_size(world_size), bucket=True, trim="post", **shard)

    def build_model(self) -> nn.Module:
        model = SequenceClassifier(self.config.model)
        check_bf16(model, self.config.model)
        return model

    def batch_loss(
        self,
        model: nn.Module,
        inputs: tuple[Tensor, ...],
        targets: Tensor,
        carry: Carry | None,
        training: bool,
    ) -> BatchLoss:
        if training and len(inputs) > 2:  # speed perturbation: one copy per example
            inputs = pick_copies(inputs)
        if training and self.config.data.spec_augment:
            inputs = (augment(*inputs[:2]), inputs[1])
        return super().batch_loss(model, inputs[:2], targets, carry, training)

    def example_inputs(self, batch_size: int) -> tuple[Tensor, ...]:
        T = 50
        return torch.zeros(batch_size, T, self.config.data.bands), torch.full((batch_size,), T)

    def prepare(self, raw: Sequence[PathLike], artifacts: dict[str, Any], **options) -> Prepared:
        """WAV files -> (x (N, T, F), lengths (N,)); notes say what reading did."""
        frames, notes = read_audio(raw, feature_spec(self.config))
        return Prepared(pad_frames(frames), notes)

    def example(self, raw: PathLike, artifacts: dict[str, Any]) -> Example:
        frames, _ = read_audio([raw], feature_spec(self.config))
        return self.frames_example(frames[0])

    def frames_example(self, frames: np.ndarray, target: int | None = None) -> Example:
        """(T, F) features, already computed (a test recording), as :meth:`example` gives them."""
        x, lengths = pad_frames([frames])
        T = x.shape[1]
        labels = [f"frame {k}" for k in range(T)]
        return Example((x, lengths), np.ones(T, dtype=bool), labels, image=frames, target=target)

    def prefix_batches(self, example: Example, chunk: int) -> list[tuple[Tensor, ...]]:
        """The recording cut after each frame: the same frames with lengths 1..T (padding after
        them is skipped), ``chunk`` cuts a batch."""
        x = example.inputs[0]  # (1, T, F)
        T = x.shape[1]
        return [
            (x.expand(len(ends), -1, -1).contiguous(), ends)
            for ends in torch.arange(1, T + 1).split(chunk)
        ]

    def real_steps(self, inputs: tuple[Tensor, ...]) -> Tensor:
        return real_frames(inputs[1], inputs[0].shape[1])
