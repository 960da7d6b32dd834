"""Transcription with CTC (Graves et al. 2006): a string of digits from frames, no alignment.

Shape legend: N strings, B batch, T frames, F features per frame, S symbols (blank included).

Two sources, one kind (``model.kind = "ctc"``):

* ``data.dataset = "fsdd"``: spoken strings of 1..``data.max_digits`` digits, one speaker's FSDD
  recordings joined by short noisy gaps, read as log-mel frames (the ``digits-ctc`` preset);
* ``data.dataset = "mnist"``: lines of MNIST digits with random gaps and vertical jitter, read
  column by column (``mnist-lines``).

How the splits are built is :mod:`rnnlab.tasks.ctc_data`. The model is a
:class:`~rnnlab.models.ctc.CTCModel` (a bidirectional LSTM per frame), trained with torch's
``CTCLoss``. Metrics, from greedy decoding: ``ser``, the symbol error rate (edit distance over
reference length, summed over strings), and ``string_error``, the share of strings not exactly
right. The best checkpoint has the lowest validation ``ser``. :meth:`CTCTranscription.predict`
decodes greedily or by prefix beam search (``beam``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from rnnlab.config import ConfigError
from rnnlab.data.strings import LINE_HEIGHT
from rnnlab.models import check_bf16
from rnnlab.models.ctc import BLANK, CTCModel, ctc_loss
from rnnlab.nn.ctc import align, collapse, edit_distance, prefix_beam_search
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
from rnnlab.tasks.ctc_data import load_strings, model_inputs
from rnnlab.tasks.image import light_background
from rnnlab.tasks.speech import (
    augment,
    check_audio_config,
    feature_spec,
    pad_frames,
    read_audio,
    real_frames,
)
from rnnlab.train import Batches, BatchLoss, BatchSource, Carry, Selection, Split

__all__ = ["MAX_LINE_WIDTH", "CTCTranscription", "greedy_strings"]

MAX_LINE_WIDTH = 2000  # columns of a line image transcribe reads (7 digits take about 250)


def greedy_strings(log_probs: Tensor, lengths: Tensor) -> list[list[int]]:
    """(B, T, S) log-probabilities -> each string's greedy decoding, as digits (symbol - 1)."""
    best = log_probs.argmax(-1)  # (B, T): the best path
    return [
        [s - 1 for s in collapse(row[:n], BLANK)]
        for row, n in zip(best.tolist(), lengths.tolist(), strict=True)
    ]


class CTCTranscription(Task):
    """Digit strings, spoken or written, transcribed frame by frame with CTC."""

    kind = "ctc"
    input_kind = "frames"
    floors = Floors(
        verbs=("transcribe",),
        reads="audio or image",  # per run: :attr:`reads`
        serve="rnnlab.serve.ctc:TranscriptionRun",
        inspect="rnnlab.inspect.ctc:command",
        export="rnnlab.export.ctc:ctc_graph",
    )
    metric_specs = (
        MetricSpec("ser", higher_is_better=False),
        MetricSpec("string_error", higher_is_better=False),
    )
    selection = Selection("ser", "min")
    throughput_unit = "samples"

    @property
    def reads(self) -> str:
        """What this run's inputs are: ``"audio"`` (WAV files) or ``"image"`` (line images)."""
        return "audio" if self.config.data.dataset == "fsdd" else "image"

    def check_config(self) -> None:
        d, m = self.config.data, self.config.model
        if d.dataset == "fsdd":
            check_audio_config(self.config)
        elif d.dataset == "mnist":
            if m.input_size != LINE_HEIGHT:
                raise ConfigError(
                    f"model.input_size: expected the line height {LINE_HEIGHT}, got {m.input_size}"
                )
        else:
            raise ConfigError(
                f"data.dataset: expected 'fsdd' or 'mnist' for model.kind='ctc', got {d.dataset!r}"
            )
        if m.num_classes != 10:
            raise ConfigError(f"model.num_classes: expected the 10 digits, got {m.num_classes}")

    def load(self, data_dir: PathLike | None = None) -> TaskData:
        return load_strings(self.config, data_dir)

    def build_model(self) -> nn.Module:
        model = CTCModel(self.config.model)
        check_bf16(model, self.config.model)
        return model

    def example_inputs(self, batch_size: int) -> tuple[Tensor, ...]:
        T = 100
        return torch.zeros(batch_size, T, self.config.model.input_size), torch.full(
            (batch_size,), T
        )

    def batches(
        self, split: Split, training: bool, rank: int = 0, world_size: int = 1
    ) -> BatchSource:
        t, shard = self.config.train, {"rank": rank, "world_size": world_size}
        if training:
            return Batches(split, t.batch_size, True, t.seed, True, "post", **shard)
        return Batches(split, self.eval_batch_size(world_size), bucket=True, trim="post", **shard)

    def batch_loss(
        self,
        model: nn.Module,
        inputs: tuple[Tensor, ...],
        targets: Tensor,
        carry: Carry | None,
        training: bool,
    ) -> BatchLoss:
        x, lengths = model_inputs(inputs[0]), inputs[1]  # (B, T, F), (B,)
        if training and self.config.data.spec_augment:
            x = augment(x, lengths)
        log_probs = model(x, lengths)  # (B, T, S)
        total = ctc_loss(log_probs, lengths, targets)
        real = targets[:, 0] != -100  # stand-in examples (see Batches) count for nothing
        edits = symbols = wrong = 0
        for hyp, ref, ok in zip(
            greedy_strings(log_probs.detach(), lengths),
            targets.tolist(),
            real.tolist(),
            strict=True,
        ):
            if ok:
                ref = [s for s in ref if s >= 0]
                e = edit_distance(hyp, ref)
                edits, symbols, wrong = edits + e, symbols + len(ref), wrong + (e > 0)
        sums = {"edits": edits, "symbols": symbols, "wrong": wrong}
        return BatchLoss(total, int(real.sum()), sums)

    def metrics(self, sums: dict[str, float]) -> dict[str, float]:
        return {
            "ser": sums.get("edits", 0) / max(sums.get("symbols", 0), 1),
            "string_error": sums.get("wrong", 0) / max(sums["n"], 1),
        }

    # using a run
    def prepare(
        self, raw: Sequence[PathLike], artifacts: dict[str, Any], invert: str = "auto", **_: Any
    ) -> Prepared:
        """WAV files (spoken runs) or line images (written runs, :data:`LINE_HEIGHT` pixels high,
        any width up to :data:`MAX_LINE_WIDTH`) -> (x (N, T, F), lengths (N,))."""
        if self.reads == "audio":
            frames, notes = read_audio(raw, feature_spec(self.config))
            return Prepared(pad_frames(frames), notes)
        if not raw:
            raise PredictError("expected at least one line image, got none")
        frames, notes = [], []
        for path in raw:
            line = _read_line(path)
            flip = invert == "always" or (invert == "auto" and light_background(line))
            frames.append(np.ascontiguousarray((1.0 - line if flip else line).T))  # (W, H)
            name = "the image" if isinstance(path, np.ndarray) else str(path)
            notes.append({"input": name, "inverted": flip})
        return Prepared(pad_frames(frames), notes)

    @torch.no_grad()
    def predict(
        self,
        model: nn.Module,
        prepared: Prepared,
        beam: int = 1,
        probabilities: bool = False,
    ) -> list[dict[str, Any]]:
        """Per input: ``transcript`` (the digits as a string), ``digits``, ``log_prob`` of that
        string (beam search's estimate; for beam 1 the best path's), ``frames``, the
        ``alignment`` (the symbol each frame emits, "-" for blank) and, if asked, the per-frame
        ``frame_probabilities`` (T, S), blank first."""
        x, lengths = prepared.inputs
        log_probs = model(x, lengths)  # (N, T, S)
        out = []
        for row, n, notes in zip(log_probs, lengths.tolist(), prepared.notes, strict=True):
            lp = row[:n].double().numpy()  # (T, S)
            string, score = prefix_beam_search(lp, beam, BLANK)[0]
            path = align(lp, string, BLANK) if 2 * len(string) <= n + 1 else lp.argmax(-1).tolist()
            result = {
                **notes,
                "transcript": "".join(str(s - 1) for s in string),
                "digits": [s - 1 for s in string],
                "log_prob": score,
                "frames": n,
                "alignment": "".join("-" if s == BLANK else str(s - 1) for s in path),
            }
            if probabilities:
                result["frame_probabilities"] = np.exp(lp).round(5).tolist()
            out.append(result)
        return out

    def example(self, raw: PathLike, artifacts: dict[str, Any]) -> Example:
        prepared = self.prepare([raw], artifacts)
        x, lengths = prepared.inputs
        T = x.shape[1]
        labels = [f"frame {k}" for k in range(T)]
        return Example(prepared.inputs, np.ones(T, dtype=bool), labels, image=x[0].numpy())

    def real_steps(self, inputs: tuple[Tensor, ...]) -> Tensor:
        return real_frames(inputs[1], inputs[0].shape[1])


def _read_line(path: PathLike | np.ndarray) -> np.ndarray:
    """A grey line image (H, W) in [0, 1] (from a PNG file, or an array: an upload), checked:
    :data:`LINE_HEIGHT` high, 1..:data:`MAX_LINE_WIDTH` wide, values in [0, 1]."""
    if isinstance(path, np.ndarray):
        image, path = path, "the image"
    else:
        try:
            import matplotlib.image

            image = matplotlib.image.imread(str(path))
        except (OSError, ValueError, SyntaxError) as exc:
            raise PredictError(
                f"{path}: expected a PNG line image, got {type(exc).__name__}: {exc}"
            ) from None
    if image.ndim == 3:
        image = image[..., :3].mean(-1)
    if image.dtype == np.uint8:
        image = image / 255.0
    if (
        image.ndim != 2
        or image.shape[0] != LINE_HEIGHT
        or not 1 <= image.shape[1] <= MAX_LINE_WIDTH
    ):
        raise PredictError(
            f"{path}: expected a grey line image {LINE_HEIGHT} pixels high and 1..{MAX_LINE_WIDTH} "
            f"wide, got shape {image.shape}"
        )
    if not np.isfinite(image).all() or image.min() < 0 or image.max() > 1:
        raise PredictError(f"{path}: expected pixel values in [0, 1], got others")
    return np.asarray(image, dtype=np.float32)
