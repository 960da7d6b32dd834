"""Connected digit strings for CTC: spoken (FSDD recordings joined) and written (MNIST lines).

Shape legend: N strings, S samples, H line height (pixels), W line width (columns).

Both builders are deterministic from ``seed`` and draw each string's length uniformly from
1..``max_digits``. They only join the examples they are given, so strings built from training
recordings (images) never contain a test one: the caller splits first, then builds.

* :func:`spoken_strings`: one speaker per string (a string is one voice), the speaker's
  recordings joined with gaps of :data:`GAP_MS` of low noise (Gaussian, standard deviation
  :data:`NOISE`, about -50 dBFS), the same noise over the whole string.
* :func:`written_lines`: MNIST digits side by side on a line :data:`LINE_HEIGHT` pixels high,
  each shifted down by 0..``LINE_HEIGHT - 28`` pixels (vertical jitter), with gaps of
  :data:`GAP_PX` columns; read column by column, one column a frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "GAP_MS",
    "GAP_PX",
    "LINE_HEIGHT",
    "NOISE",
    "DigitString",
    "spoken_strings",
    "written_lines",
]

GAP_MS = (30, 250)  # silence between spoken digits, and before the first / after the last
NOISE = 0.003  # noise standard deviation, of full scale 1.0
LINE_HEIGHT = 32  # pixels: MNIST's 28 plus up to 4 of vertical jitter
GAP_PX = (0, 8)  # blank columns between written digits (margins: 2..6)


@dataclass(frozen=True)
class DigitString:
    """A built string: its ``digits``, the examples it joins (``sources``: recording names or
    image indexes) and the signal: ``samples`` (S,) float32, or a line ``image`` (H, W) uint8."""

    digits: tuple[int, ...]
    sources: tuple[str, ...]
    signal: np.ndarray


def spoken_strings(
    recordings: Sequence,
    count: int,
    seed: int,
    rate: int,
    max_digits: int = 7,
) -> list[DigitString]:
    """``count`` strings of 1..``max_digits`` digits, each one speaker's recordings (objects
    with ``digit``, ``speaker``, ``name``, ``samples`` at ``rate``) joined by noisy gaps."""
    rng = np.random.default_rng(seed)
    by_speaker: dict[str, list] = {}
    for r in recordings:
        by_speaker.setdefault(r.speaker, []).append(r)
    speakers = sorted(by_speaker)
    out = []
    for _ in range(count):
        pool = by_speaker[speakers[int(rng.integers(len(speakers)))]]
        picks = [
            pool[int(k)] for k in rng.integers(len(pool), size=int(rng.integers(1, max_digits + 1)))
        ]
        gaps = rng.integers(GAP_MS[0], GAP_MS[1] + 1, size=len(picks) + 1) * rate // 1000
        pieces = [np.zeros(int(gaps[0]), np.float32)]
        for r, gap in zip(picks, gaps[1:], strict=True):
            pieces += [r.samples, np.zeros(int(gap), np.float32)]
        signal = np.concatenate(pieces)  # (S,)
        signal = signal + rng.normal(0.0, NOISE, size=len(signal)).astype(np.float32)
        out.append(DigitString(tuple(r.digit for r in picks), tuple(r.name for r in picks), signal))
    return out


def written_lines(
    images: np.ndarray,
    labels: np.ndarray,
    count: int,
    seed: int,
    max_digits: int = 7,
) -> list[DigitString]:
    """``count`` lines of 1..``max_digits`` of ``images`` (N, 28, 28) uint8 with ``labels``
    (N,): gaps and vertical jitter as in the module docstring; ``sources`` are image indexes."""
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(f"written_lines expected images of shape (N, 28, 28), got {images.shape}")
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        picks = rng.integers(len(images), size=int(rng.integers(1, max_digits + 1)))
        gaps = rng.integers(GAP_PX[0], GAP_PX[1] + 1, size=len(picks) - 1)
        left, right = rng.integers(2, 7, size=2)
        width = int(left + right + 28 * len(picks) + gaps.sum())
        line = np.zeros((LINE_HEIGHT, width), np.uint8)  # (H, W)
        x = int(left)
        for k, index in enumerate(picks):
            y = int(rng.integers(0, LINE_HEIGHT - 28 + 1))
            line[y : y + 28, x : x + 28] = images[index]
            x += 28 + (int(gaps[k]) if k < len(gaps) else 0)
        digits = tuple(int(labels[i]) for i in picks)
        out.append(DigitString(digits, tuple(str(int(i)) for i in picks), line))
    return out
