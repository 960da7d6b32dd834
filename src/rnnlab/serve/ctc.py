"""The CTC kind's part of ``rnnlab serve``: the ``transcribe`` page and its one analysis.

``POST /api/runs/RUN/transcribe`` takes a recording (``wav``: a WAV file's bytes in base64;
spoken runs) or a line (``image``: rows of numbers in [0, 1], :data:`LINE_HEIGHT` rows;
written runs) and answers the transcript, the posteriogram (per frame, the probability of the
blank and of each digit), the alignment (the symbol each frame emits) and the frames read
(log-mel bands, or the line's columns). Uploads are capped: the server's body limit
(``MAX_BODY_BYTES``) and :data:`MAX_WAV_BYTES` for the decoded file.

Shape legend: T frames, F features per frame, S symbols (blank first).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, Field

from rnnlab.data.audio import AudioError, read_wav
from rnnlab.data.strings import LINE_HEIGHT
from rnnlab.serve.models import InputError, Lookup, ServedRun, check_analysis, rounded
from rnnlab.tasks import PredictError
from rnnlab.tasks.ctc import MAX_LINE_WIDTH

__all__ = ["MAX_WAV_BYTES", "SpokenDigitRun", "TranscribeRequest", "TranscriptionRun"]

MAX_WAV_BYTES = 700_000  # about 40 s of 8 kHz 16-bit mono; its base64 fits the body limit
SYMBOLS = ["-", *(str(d) for d in range(10))]  # the blank first, as the model emits them


class TranscribeRequest(BaseModel):
    """One recording (``wav``, base64) or one line image (``image``, rows in [0, 1])."""

    wav: str | None = Field(None, description="a WAV file, base64-encoded (spoken runs)")
    image: list[list[float]] | None = Field(None, description="line rows in [0, 1]")
    beam: int = Field(1, ge=1, le=32, description="prefix beam width (1: greedy)")
    invert: str = Field("auto", pattern="^(auto|always|never)$")


class TranscriptionRun(ServedRun):
    """A CTC run: spoken strings (reads ``wav``) or lines of digits (reads ``image``)."""

    title = "transcriber"
    page = "transcribe"
    analyses: ClassVar[tuple[str, ...]] = ("transcribe",)

    def details(self) -> dict[str, Any]:
        return {
            "reads": self.task.reads,
            "symbols": SYMBOLS,
            "line_height": LINE_HEIGHT,
            "max_wav_bytes": MAX_WAV_BYTES,
        }

    def transcribe(
        self,
        wav: bytes | None = None,
        image: np.ndarray | None = None,
        beam: int = 1,
        invert: str = "auto",
    ) -> dict[str, Any]:
        """The transcript of one input, with ``posteriogram`` (T, S) probabilities, the
        ``alignment`` and the ``frames`` (T, F) read."""
        reads = self.task.reads
        if (wav is None) == (image is None) or (reads == "audio") != (wav is not None):
            want = "'wav'" if reads == "audio" else "'image'"
            raise InputError(
                reads if reads == "image" else "wav",
                f"run {self.name!r} reads {reads}: expected {want} alone",
            )
        try:
            if wav is not None:
                item = read_wav(wav, self.config.data.sample_rate)
                prepared = self.task.prepare([item], self.artifacts)
            else:
                prepared = self.task.prepare([image], self.artifacts, invert=invert)
        except (AudioError, PredictError) as exc:
            raise InputError("wav" if wav is not None else "image", str(exc)) from None
        result = self.task.predict(self.model, prepared, beam=beam, probabilities=True)[0]
        x = prepared.inputs[0][0].numpy()  # (T, F)
        return {
            "transcript": result["transcript"],
            "log_prob": result["log_prob"],
            "alignment": result["alignment"],
            "symbols": SYMBOLS,
            "posteriogram": rounded(np.asarray(result.pop("frame_probabilities")), 4),  # (T, S)
            "frames": rounded(x, 3),
            "notes": {k: v for k, v in result.items() if k in ("mixed_down", "resampled_from")},
        }

    def warm_up(self) -> None:
        if self.task.reads == "audio":
            t = np.arange(self.config.data.sample_rate // 2)
            tone = (0.1 * np.sin(t * 0.3)).astype(np.float32)
            self.task.predict(self.model, self.task.prepare([_wave(tone, self.config)], {}))
        else:
            self.transcribe(image=np.zeros((LINE_HEIGHT, 60), np.float32))

    @classmethod
    def add_routes(cls, app: Any, lookup: Lookup, work: Callable[..., Any]) -> None:
        @app.post("/api/runs/{run}/transcribe", tags=["api"])
        async def transcribe(run: str, body: TranscribeRequest) -> dict[str, Any]:
            """The transcript of a recording or a line, with the posteriogram (frames x
            symbols, blank first) and the alignment."""
            served = lookup(run)
            wav = image = None
            if body.wav is not None:
                try:
                    wav = base64.b64decode(body.wav, validate=True)
                except (binascii.Error, ValueError):
                    raise InputError("wav", "expected a base64-encoded WAV file") from None
                if len(wav) > MAX_WAV_BYTES:
                    raise InputError(
                        "wav", f"expected at most {MAX_WAV_BYTES} bytes of WAV, got {len(wav)}"
                    )
            if body.image is not None:
                image = _line(body.image)
            check_analysis(served, "transcribe")
            return await work(served.transcribe, wav, image, body.beam, body.invert)


class SpokenDigitRun(TranscriptionRun):
    """A spoken-digit classifier on the same page: one digit per recording; its
    ``posteriogram`` is one row, the class probabilities of the whole recording."""

    title = "spoken digit classifier"

    def details(self) -> dict[str, Any]:
        return {**super().details(), "symbols": SYMBOLS[1:]}

    def transcribe(
        self,
        wav: bytes | None = None,
        image: np.ndarray | None = None,
        beam: int = 1,
        invert: str = "auto",
    ) -> dict[str, Any]:
        if wav is None:
            raise InputError("wav", f"run {self.name!r} reads audio: expected 'wav'")
        try:
            prepared = self.task.prepare([read_wav(wav, self.config.data.sample_rate)], {})
        except (AudioError, PredictError) as exc:
            raise InputError("wav", str(exc)) from None
        result = self.task.predict(self.model, prepared)[0]
        return {
            "transcript": result["label_name"],
            "log_prob": float(np.log(result["probability"])),
            "alignment": "",
            "symbols": SYMBOLS[1:],
            "posteriogram": rounded(np.asarray([result["probabilities"]]), 4),  # (1, C)
            "frames": rounded(prepared.inputs[0][0].numpy(), 3),
            "notes": {k: v for k, v in result.items() if k in ("mixed_down", "resampled_from")},
        }

    def warm_up(self) -> None:
        t = np.arange(self.config.data.sample_rate // 2)
        tone = (0.1 * np.sin(t * 0.3)).astype(np.float32)
        self.task.predict(self.model, self.task.prepare([_wave(tone, self.config)], {}))


def _line(rows: list[list[float]]) -> np.ndarray:
    widths = {len(r) for r in rows}
    if len(rows) != LINE_HEIGHT or len(widths) != 1 or not 1 <= widths.pop() <= MAX_LINE_WIDTH:
        raise InputError(
            "image",
            f"expected {LINE_HEIGHT} rows of equal length 1..{MAX_LINE_WIDTH}, got "
            f"{len(rows)} rows",
        )
    return np.asarray(rows, dtype=np.float32)


def _wave(samples: np.ndarray, config: Any) -> Any:
    from rnnlab.data.audio import Wave

    return Wave(samples, config.data.sample_rate)
