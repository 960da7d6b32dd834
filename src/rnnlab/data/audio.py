"""Audio in: WAV files read with soundfile (libsndfile), features computed with librosa.

Shape legend: S samples, T frames, F features per frame (mel bands or cepstral coefficients).

Nothing here is hand-written DSP: :func:`read_wav` reads through libsndfile (16-bit, 24-bit,
32-bit and 8-bit PCM, float WAV), mixes channels down to mono by their mean and resamples with
``librosa.resample`` (soxr) to the model's rate; :func:`features` is librosa's mel filter bank
(``librosa.feature.melspectrogram``), its log (``librosa.power_to_db``), optionally the DCT of
that (``librosa.feature.mfcc``), then each band normalised to zero mean and unit variance over
the utterance (per-utterance normalisation: the level of the recording drops out).
:func:`spec_augment` masks random bands and frames of training features (Park et al. 2019);
:func:`change_speed` plays a recording faster or slower (Ko et al. 2015's speed perturbation).

What a file can be, and what happens (each error names what was expected and what came):

* not a WAV/audio file, an empty file, a WAV with no samples: :class:`AudioError`;
* stereo or more channels: mixed down to mono (the note ``"mixed_down": channels``);
* another sample rate: resampled (``"resampled_from": rate``); callers say either once;
* 8-bit PCM or float samples: read as any other (libsndfile scales them to [-1, 1]);
* NaN or infinite samples (possible in a float WAV): :class:`AudioError`;
* longer than :data:`MAX_SECONDS`: :class:`AudioError` (the cap keeps one request from
  holding a server or filling memory);
* long quiet before or after the sound: trimmed to :data:`EDGE_MARGIN` by :func:`trim`
  (when a trained run reads it: training data is never trimmed);
* silence (every sample below :data:`SILENCE`): :class:`AudioError`, since normalising
  silence would blow numeric noise up to unit variance and the model would read noise.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from rnnlab.data.errors import DataError

__all__ = [
    "MAX_SECONDS",
    "SILENCE",
    "AudioError",
    "FeatureSpec",
    "Wave",
    "change_speed",
    "features",
    "read_wav",
    "spec_augment",
]

MAX_SECONDS = 60.0  # longest recording read (FSDD's are 0.14-1.31 s; strings of 7 about 6 s)
EDGE_MARGIN = 0.15  # seconds of quiet trim() keeps before and after the sound
SILENCE = 1e-4  # peak amplitude (of full scale 1.0) under which a recording counts as silent


class AudioError(DataError):
    """A file that is not usable audio: not a WAV, empty, silent, too long, NaN samples."""


def need(name: str):
    """Import ``soundfile`` or ``librosa``, or say how to get them (the ``audio`` extra)."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        raise ImportError(
            f"audio expected the {name} package, got none installed: pip install 'rnnlab[audio]'"
        ) from None


@dataclass(frozen=True)
class Wave:
    """Mono float32 ``samples`` (S,) in [-1, 1] at ``rate`` Hz, and what reading did to the
    file (``notes``: ``mixed_down`` channels, ``resampled_from`` rate)."""

    samples: np.ndarray
    rate: int
    notes: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class FeatureSpec:
    """How frames are made: ``rate`` Hz, windows of ``frame_ms`` every ``hop_ms``, ``bands``
    mel bands (``kind="logmel"``) or ``bands`` cepstral coefficients of as many mel bands
    (``kind="mfcc"``)."""

    rate: int = 8000
    bands: int = 40
    frame_ms: float = 32.0
    hop_ms: float = 16.0
    kind: Literal["logmel", "mfcc"] = "logmel"

    @property
    def n_fft(self) -> int:
        return round(self.rate * self.frame_ms / 1000)

    @property
    def hop(self) -> int:
        return round(self.rate * self.hop_ms / 1000)


def read_wav(
    source: str | os.PathLike[str] | bytes, rate: int, max_seconds: float = MAX_SECONDS
) -> Wave:
    """The recording at ``source`` (a path, or a file's bytes: an upload) as mono float32 at
    ``rate`` Hz (see the module docstring for what each kind of file gives)."""
    soundfile = need("soundfile")
    if isinstance(source, bytes):
        name, handle = "the upload", io.BytesIO(source)
        if not source:
            raise AudioError(f"{name}: expected a WAV file, got an empty file (0 bytes)")
    else:
        path = Path(source)
        name, handle = str(path), str(path)
        if not path.is_file():
            found = "a directory" if path.exists() else "no such file"
            raise AudioError(f"{path}: expected a WAV file, got {found}")
        if path.stat().st_size == 0:
            raise AudioError(f"{path}: expected a WAV file, got an empty file (0 bytes)")
    try:
        with soundfile.SoundFile(handle) as f:
            if f.frames > max_seconds * f.samplerate:
                raise AudioError(
                    f"{name}: expected at most {max_seconds:g} s of audio, got "
                    f"{f.frames / f.samplerate:.1f} s"
                )
            data, file_rate = f.read(dtype="float32", always_2d=True), f.samplerate  # (S, ch)
    except soundfile.LibsndfileError as exc:
        raise AudioError(f"{name}: expected a WAV (or other audio) file, got: {exc}") from None
    return wave_from_array(data, file_rate, rate, name)


def wave_from_array(data: np.ndarray, file_rate: int, rate: int, name: str) -> Wave:
    """Samples (S,) or (S, channels) at ``file_rate`` -> a checked mono :class:`Wave` at
    ``rate`` (the steps of :func:`read_wav` after reading)."""
    data = np.asarray(data, dtype=np.float32)
    if data.ndim == 1:
        data = data[:, None]  # (S, 1)
    if len(data) == 0:
        raise AudioError(f"{name}: expected audio samples, got a recording of length 0")
    if not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise AudioError(f"{name}: expected finite samples, got {bad} NaN or infinite ones")
    notes: dict[str, int] = {}
    if data.shape[1] > 1:
        notes["mixed_down"] = int(data.shape[1])
    samples = data.mean(axis=1)  # (S,)
    if float(np.abs(samples).max()) < SILENCE:
        raise AudioError(
            f"{name}: expected speech, got silence (peak {float(np.abs(samples).max()):.1e} "
            f"below {SILENCE:g} of full scale)"
        )
    if file_rate != rate:
        samples = need("librosa").resample(samples, orig_sr=file_rate, target_sr=rate)
        notes["resampled_from"] = int(file_rate)
    return Wave(np.ascontiguousarray(samples, dtype=np.float32), rate, notes)


def trim(samples: np.ndarray, rate: int, margin: float = EDGE_MARGIN, top_db: float = 25.0):
    """(S,) -> (S',): the recording without its leading and trailing quiet (frames more than
    ``top_db`` below the peak, found by ``librosa.effects.trim``), keeping ``margin`` seconds of
    it on either side. Applied to what users give a trained run (a microphone recording starts
    and ends with more quiet than FSDD's trimmed recordings and the strings' short gaps)."""
    _, (start, end) = need("librosa").effects.trim(samples, top_db=top_db)
    keep = int(margin * rate)
    return samples[max(0, start - keep) : min(len(samples), end + keep)]


def features(samples: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    """(S,) samples at ``spec.rate`` -> (T, F) float32 frames: log-mel energies or MFCCs,
    each band normalised over the utterance to mean 0 and standard deviation 1."""
    librosa = need("librosa")
    if samples.ndim != 1 or len(samples) == 0:
        raise AudioError(f"features expected samples of shape (S,) with S > 0, got {samples.shape}")
    mel = librosa.feature.melspectrogram(
        y=samples, sr=spec.rate, n_fft=spec.n_fft, hop_length=spec.hop, n_mels=spec.bands
    )  # (F, T) power
    logmel = librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None)  # (F, T) dB
    if spec.kind == "mfcc":
        logmel = librosa.feature.mfcc(S=logmel, n_mfcc=spec.bands)  # (F, T)
    return normalise(logmel.T)  # (T, F)


def normalise(frames: np.ndarray) -> np.ndarray:
    """(T, F) -> (T, F) float32: each feature to mean 0, standard deviation 1 over the
    frames (a constant feature becomes 0)."""
    mean = frames.mean(axis=0, keepdims=True)  # (1, F)
    std = frames.std(axis=0, keepdims=True)  # (1, F)
    return ((frames - mean) / np.maximum(std, 1e-5)).astype(np.float32)


def change_speed(samples: np.ndarray, factor: float, rate: int) -> np.ndarray:
    """(S,) -> (about S / factor,): the recording played ``factor`` times as fast, tempo and
    pitch together, as sox's ``speed`` effect (Ko et al. 2015, "Audio augmentation for speech
    recognition": copies at speeds 0.9 and 1.1). The samples are read as if taken at
    ``factor * rate`` Hz and resampled to ``rate`` (``librosa.resample``, soxr)."""
    if not 0.5 <= factor <= 2.0:
        raise AudioError(f"change_speed expected a factor in [0.5, 2], got {factor}")
    if samples.ndim != 1 or len(samples) == 0:
        raise AudioError(
            f"change_speed expected samples of shape (S,) with S > 0, got {samples.shape}"
        )
    out = need("librosa").resample(samples, orig_sr=factor * rate, target_sr=rate)
    return np.ascontiguousarray(out, dtype=np.float32)


def spec_augment(
    frames: np.ndarray,
    rng: np.random.Generator,
    band_masks: int = 2,
    band_width: int = 6,
    time_masks: int = 2,
    time_width: int = 8,
) -> np.ndarray:
    """A copy of (T, F) ``frames`` with ``band_masks`` runs of up to ``band_width`` bands and
    ``time_masks`` runs of up to ``time_width`` frames set to 0, the normalised mean (SpecAugment's
    frequency and time masking, Park et al. 2019; no time warping)."""
    out = frames.copy()
    T, F = out.shape
    for _ in range(band_masks):
        width = int(rng.integers(0, band_width + 1))
        start = int(rng.integers(0, max(1, F - width)))
        out[:, start : start + width] = 0.0
    for _ in range(time_masks):
        width = int(rng.integers(0, min(time_width, max(1, T // 5)) + 1))
        start = int(rng.integers(0, max(1, T - width)))
        out[start : start + width] = 0.0
    return out
