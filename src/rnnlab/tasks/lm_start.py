"""Where a language model starts reading: a real state, reached in training just before a
document boundary.

Training streams carry the state from window to window across documents (an IMDB review is a
line ending with ``\\n`` at character level, ``<eos>`` at word level), so the model almost never
sees the zero state. Generation and scoring used to start from zeros anyway, and the first
characters of a text then scored about a bit worse per character than the same characters
inside a stream, and an empty prompt gave symbol soup. Resetting the state at every boundary in
training would make every window ragged and lose the fast kernels; instead a run keeps the
:data:`WARM_UP` training tokens that precede a boundary (``start.json``, chosen
deterministically: the first boundary at least that far into the training stream). Reading them
from zeros gives the state the model carries at that boundary, for whatever checkpoint is
loaded; reading the boundary token from it then starts a new document as training did.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rnnlab.nn.language_model import LanguageModel, State

__all__ = ["START", "WARM_UP", "read_start_ids", "start_ids", "warm_state"]

START = "start.json"
WARM_UP = 1000  # tokens read before the boundary: the zero start is long forgotten by then


def start_ids(train: np.ndarray, boundary: int | None, length: int = WARM_UP) -> dict[str, Any]:
    """``start.json``'s content: the ``length`` training tokens just before the first
    ``boundary`` token at or after position ``length`` (fewer when the stream is shorter), or
    no ids when the stream has no such boundary (the run then starts from zeros)."""
    if boundary is None:
        return {"ids": [], "boundary": None}
    found = np.flatnonzero(np.asarray(train[length:]) == boundary)
    if found.size == 0:
        found = np.flatnonzero(np.asarray(train) == boundary)[-1:]  # a short stream's last
        end = int(found[0]) if found.size else 0
    else:
        end = length + int(found[0])
    return {"ids": [int(t) for t in train[max(0, end - length) : end]], "boundary": boundary}


def read_start_ids(run_dir: Path) -> list[int]:
    """The warm-up ids a run keeps (none for a run made before ``start.json`` existed)."""
    path = Path(run_dir) / START
    if not path.is_file():
        return []
    return [int(t) for t in json.loads(path.read_text("utf-8"))["ids"]]


def warm_state(model: LanguageModel, ids: list[int]) -> State | None:
    """The state (L, 1, H) ``model`` is in after reading ``ids`` from zeros; None for none."""
    if not ids:
        return None
    device = model.decoder.weight.device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            _, state = model(torch.tensor([ids], dtype=torch.long, device=device))  # (1, W)
    finally:
        model.train(was_training)
    return state
