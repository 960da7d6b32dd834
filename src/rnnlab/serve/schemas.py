"""Request bodies of the JSON API and the limits that guard them. Every request is a JSON
object; unknown fields are refused (422 naming them), so a typo is not silently ignored.

Inputs of the classifiers (exactly one of):

* ``text``: a review, at most :data:`MAX_TEXT_BYTES` bytes of UTF-8 (text runs);
* ``image``: 28 rows of ``I`` numbers in [0, 1] (image runs; MNIST's ``I`` is 28), 0 black;
* ``png``: a base64-encoded PNG of 28x``I`` pixels, at most :data:`MAX_PNG_BYTES` bytes
  (colour is averaged to grey, alpha ignored).

Images drawn dark on light are turned around like MNIST's light on dark when ``invert`` is
"auto" (a light border) or "always".
"""

from __future__ import annotations

import base64
import binascii
import io
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from rnnlab.serve.models import InputError

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_PNG_BYTES",
    "MAX_TEXT_BYTES",
    "MAX_TOKENS",
    "ClassifyRequest",
    "GenerateRequest",
    "ScoreRequest",
    "TooLargeError",
    "TraceRequest",
    "check_text",
    "decode_image",
]

MAX_TEXT_BYTES = 100_000
MAX_PNG_BYTES = 64_000
MAX_TOKENS = 1000  # generation length
MAX_BODY_BYTES = 1_000_000  # a 100 kB text escaped as \uXXXX still fits


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ClassifyRequest(_Body):
    text: str | None = Field(None, description="a review (text runs), at most 100 kB of UTF-8")
    image: list[list[float]] | None = Field(
        None, description="28 rows of numbers in [0, 1], 0 black (image runs)"
    )
    png: str | None = Field(None, description="a base64 PNG of 28x28 pixels (image runs)")
    invert: Literal["auto", "always", "never"] = Field(
        "auto", description="turn dark-on-light images into MNIST's light on dark"
    )


class TraceRequest(ClassifyRequest):
    layer: int = Field(0, ge=0, description="stacked layer to record, 0 first")
    direction: int = Field(0, ge=0, le=1, description="0 forwards, 1 backwards")


class GenerateRequest(_Body):
    prompt: str = Field(..., description="text the model continues, at most 100 kB of UTF-8")
    max_tokens: int = Field(200, ge=1, le=MAX_TOKENS, description="tokens to generate")
    temperature: float = Field(1.0, gt=0.0, le=10.0, description="softmax temperature")
    top_k: int | None = Field(
        None,
        ge=1,
        le=1000,
        description="sample from the k likeliest (>= 1, as the CLI's --top-k); absent: all",
    )
    top_p: float | None = Field(
        None, gt=0.0, le=1.0, description="nucleus sampling, as the CLI's --top-p; absent: 1"
    )
    unit: int = Field(0, ge=0, description="unit whose value colours each token")
    layer: int = Field(0, ge=0, description="stacked layer of that unit, 0 first")
    state: Literal["c", "h"] | None = Field(
        None, description="the unit's cell state c or hidden state h; default c (LSTM) or h"
    )
    seed: int | None = Field(
        None, ge=0, lt=2**63, description="seeds the draw: the same request, the same text"
    )
    every_unit: bool = Field(
        False, description="also stream every unit's value of the layer (to recolour by any)"
    )


class ScoreRequest(_Body):
    text: str = Field(..., description="text to score, at most 100 kB of UTF-8")


class TooLargeError(InputError):
    """An input over its size limit (413)."""


def check_text(field: str, text: str) -> None:
    """Refuse text over :data:`MAX_TEXT_BYTES` (answered 413 naming ``field``)."""
    size = len(text.encode("utf-8", errors="surrogatepass"))
    if size > MAX_TEXT_BYTES:
        raise TooLargeError(field, f"expected at most {MAX_TEXT_BYTES} bytes of UTF-8, got {size}")


def decode_image(body: ClassifyRequest) -> np.ndarray | None:
    """The request's image as a float32 (rows, cols) array in [0, 1], or None when it has
    none. Sizes are checked by the run (:meth:`ServedRun.classify`); here only the encoding."""
    if body.image is not None:
        image = np.asarray(body.image, dtype=np.float32) if _rectangular(body.image) else None
        if image is None or image.ndim != 2:
            raise InputError("image", "expected a list of equally long rows of numbers")
        if not np.isfinite(image).all() or image.min() < 0 or image.max() > 1:
            raise InputError(
                "image", f"expected values in [0, 1], got [{image.min()}, {image.max()}]"
            )
        return image
    if body.png is not None:
        return _decode_png(body.png)
    return None


def _rectangular(rows: list[list[float]]) -> bool:
    return len(rows) > 0 and len({len(row) for row in rows}) == 1 and len(rows[0]) > 0


def _decode_png(text: str) -> np.ndarray:
    if len(text) > MAX_PNG_BYTES * 4 // 3 + 4:
        raise TooLargeError("png", f"expected at most {MAX_PNG_BYTES} bytes of PNG, got more")
    if text.startswith("data:"):  # a data URL as a canvas gives it: data:image/png;base64,...
        text = text.partition(",")[2]
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InputError("png", f"expected base64, got {exc}") from exc
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise InputError("png", "expected a PNG image, got other data")
    from PIL import Image, UnidentifiedImageError

    try:
        png = Image.open(io.BytesIO(data), formats=["PNG"])  # reads the header only
    except (UnidentifiedImageError, OSError) as exc:
        raise InputError("png", f"expected a readable PNG, got {type(exc).__name__}") from exc
    with png:
        # refuse big images before decoding a pixel (the size comes from the header)
        if png.size[0] > 64 or png.size[1] > 64:
            raise InputError("png", f"expected a 28x28 image, got {png.size[0]}x{png.size[1]}")
        try:
            grey = np.asarray(png.convert("RGB"), dtype=np.float32).mean(-1) / 255.0  # (H, W)
        except (OSError, ValueError) as exc:
            raise InputError("png", f"expected a readable PNG, got {type(exc).__name__}") from exc
    return grey
