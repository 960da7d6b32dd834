"""``rnnlab inspect`` for CTC runs: the posteriogram and the alignment of one input.

Shape legend: T frames, F features per frame, S symbols (blank first).

For a recording (``--wav``), a line image (``--image``) or test string ``--index K``, writes
into ``RUN_DIR/inspect`` (or ``--out``), whole or not at all (:func:`publish`):

* ``posteriogram.png``: the frames read (log-mel bands, or the line's pixel columns), under it
  the posteriogram (frames x symbols, the blank included: the probability of each symbol at
  each frame), and the alignment (the symbol each frame emits on the most probable path of the
  decoded string, blank as "-");
* ``inspect.json``: the input, transcript, its log-probability, the alignment and the
  posteriogram as numbers.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rnnlab.inspect.output import check_out, json_bytes, publish
from rnnlab.inspect.plots import _figure, _png
from rnnlab.runs import load_run, load_run_data
from rnnlab.tasks import PredictError, Prepared, get_task

__all__ = ["command", "inspect_transcription", "posteriogram_png"]

SYMBOLS = ["blank", *(str(d) for d in range(10))]


def posteriogram_png(frames: np.ndarray, probabilities: np.ndarray, alignment: str, title: str):
    """(T, F) frames and (T, S) probabilities -> PNG bytes: frames above, posteriogram below,
    the alignment as the posteriogram's frame labels."""
    T = len(probabilities)
    fig = _figure(min(24, 3 + T * 0.08), 6)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [1, 1]})
    top.imshow(frames.T, aspect="auto", origin="lower", cmap="magma", interpolation="nearest")
    top.set_ylabel("feature")
    top.set_title(title)
    bottom.imshow(
        probabilities.T, aspect="auto", origin="lower", cmap="Greys", vmin=0, vmax=1,
        interpolation="nearest",
    )  # fmt: skip
    bottom.set_yticks(range(len(SYMBOLS)), SYMBOLS)
    emitted = [k for k, s in enumerate(alignment) if s != "-"]
    bottom.set_xticks(emitted, [alignment[k] for k in emitted])
    bottom.set_xlabel("frame (labels: the alignment's non-blank frames)")
    fig.tight_layout()
    return _png(fig)


def inspect_transcription(
    run_dir: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    wav: str | None = None,
    image: str | None = None,
    index: int | None = None,
    beam: int = 1,
    checkpoint: str = "best",
    force: bool = False,
    data_dir: str | None = None,
) -> tuple[dict[str, Any], dict[str, Path]]:
    """Transcribe one input and draw it (see the module docstring); returns
    ``(summary, files)``."""
    config, model, meta = load_run(run_dir, checkpoint)
    out = Path(out) if out is not None else Path(run_dir) / "inspect"
    check_out(out, force)
    task = get_task(config)
    given = [g for g in (wav, image, index) if g is not None]
    if len(given) != 1:
        raise PredictError(
            f"{run_dir}: expected one of --wav, --image or --index, got {len(given)}"
        )
    if index is not None:
        _, data = load_run_data(run_dir, data_dir, config)
        x, lengths = data.test.inputs
        if not 0 <= index < len(lengths):
            raise PredictError(f"--index: expected 0..{len(lengths) - 1}, got {index}")
        n = int(lengths[index])
        x = x[index : index + 1, :n]
        x = x.float().div_(255.0) if x.dtype == torch.uint8 else x
        target = [int(d) for d in data.test.targets[index] if d >= 0]
        prepared = Prepared((x, torch.tensor([n])), [{"input": f"test string {index}"}])
    else:
        flag = "--wav" if wav is not None else "--image"
        want = "--wav" if task.reads == "audio" else "--image"
        if flag != want:
            raise PredictError(f"{run_dir}: expected {want} for a run that reads {task.reads}")
        prepared = task.prepare([wav if wav is not None else image], {})
        target = None
    result = task.predict(model, prepared, beam=beam, probabilities=True)[0]
    probabilities = np.asarray(result.pop("frame_probabilities"))  # (T, S)
    frames = prepared.inputs[0][0].numpy()  # (T, F)
    title = f"{result['input']}: {result['transcript'] or '(nothing)'}"
    summary = {**result, "target": target, "posteriogram": probabilities.round(4).tolist()}
    files = publish(
        {
            "posteriogram.png": posteriogram_png(frames, probabilities, result["alignment"], title),
            "inspect.json": json_bytes(summary),
        },
        out,
    )
    return summary, files


def command(args: argparse.Namespace) -> int:
    """``rnnlab inspect`` on a CTC run: the transcript, then the files written."""
    summary, files = inspect_transcription(
        args.run_dir,
        args.out,
        wav=getattr(args, "wav", None),
        image=args.image,
        index=args.index,
        checkpoint=args.checkpoint,
        force=args.force,
        data_dir=args.data_dir,
    )
    target = summary["target"]
    truth = f" (target {''.join(map(str, target))})" if target is not None else ""
    print(f"{summary['input']}: {summary['transcript'] or '(nothing)'}{truth}")
    print(f"alignment: {summary['alignment']}")
    for _, path in sorted(files.items()):
        print(f"  {path}")
    return 0
