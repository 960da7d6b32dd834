"""The classifiers' ``rnnlab inspect`` (text, image and spoken-digit kinds): :func:`inspect_run`
does it all as one importable function, :func:`command` prints its result for the CLI. The
output folder appears whole or not at all (:mod:`rnnlab.inspect.output`).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rnnlab.checkpoint import versions
from rnnlab.inspect.html import render_text_page
from rnnlab.inspect.inputs import (
    first_examples,
    image_example,
    prefix_probabilities,
    test_split,
    text_example,
)
from rnnlab.inspect.output import MARKER, check_out, json_bytes, publish
from rnnlab.inspect.plots import (
    audio_predictions,
    gate_heatmaps,
    image_predictions,
    saturation_scatter,
)
from rnnlab.inspect.trace import (
    InspectError,
    Trace,
    pick_units,
    record_gates,
    record_many,
    saturation,
)
from rnnlab.runs import load_run
from rnnlab.runs.load import read_run_artifacts
from rnnlab.tasks import get_task

__all__ = ["InspectResult", "command", "inspect_run"]

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class InspectResult:
    """Where the files went (``files``: name -> path) and what was found (``summary``, the
    content of ``inspect.json``)."""

    out: Path
    files: dict[str, Path]
    summary: dict[str, Any]


def inspect_run(
    run_dir: PathLike,
    out: PathLike | None = None,
    *,
    text: str | None = None,
    image: PathLike | None = None,
    index: int | None = None,
    wav: PathLike | None = None,
    units: list[int] | None = None,
    layer: int = 0,
    direction: int = 0,
    top: int = 16,
    mode: str | None = None,
    checkpoint: str = "best",
    data_dir: PathLike | None = None,
    stats_examples: int = 0,
    force: bool = False,
) -> InspectResult:
    """Run a trained run's model on one input with ``return_gates=True`` and write into ``out``
    (default ``RUN_DIR/inspect``):

    * ``gates.png``: heatmaps (time x units) of every recorded quantity (LSTM i, f, g, o, c, h)
      of ``layer``/``direction`` for ``units`` (default: the ``top`` most active units);
    * ``saturation.json`` and ``saturation.png``: per unit, the fraction of steps each sigmoid
      gate is below 0.1 and above 0.9 (Karpathy et al. 2015), over the input's steps, or with
      ``stats_examples`` N over the real steps of the first N test examples (``data_dir``, by
      default the data the run was trained on);
    * text models (``text``): ``tokens.html``, the tokens coloured by a unit's c or h or by the
      mean forget gate, with a unit picker and the prediction after each token;
    * image models (``image`` file or test ``index``): ``prediction.png``, the image beside the
      class probabilities after each row;
    * spoken-digit models (``wav`` file or test ``index``): ``prediction.png``, the log-mel
      frames above the class probabilities had the recording ended after each frame;
    * ``inspect.json``: the input, the prediction, the units drawn and the file list.
    """
    config, model, meta = load_run(run_dir, checkpoint)
    out = Path(out) if out is not None else Path(run_dir) / "inspect"
    check_out(out, force)
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise InspectError(f"top expected a positive int, got {top!r}")
    task = get_task(config)
    if task.floor("inspect") is not command:  # a kind that draws itself (a language model...)
        raise InspectError(
            f"{run_dir}: expected a classifier run, got a {task.kind!r} run (`rnnlab inspect` "
            "draws it with its own command)"
        )
    names = task.label_names()
    read = _READERS[task.floors.reads]  # what the run's task reads: text or an image
    given = {"text": text, "image": image, "index": index, "wav": wav}
    example, draw, shown = read(config, run_dir, task, meta, given, data_dir)
    gates = record_gates(model, example.inputs, layer, direction)
    trace = Trace(
        task.floors.reads,
        config.model.cell,
        layer,
        direction,
        gates,
        example.real,
        example.labels,
        prefix_probabilities(model, config, example),
        names,
        extra={"oov": example.oov},
    )
    chosen = pick_units(gates, example.real, units, top)
    if stats_examples:
        inputs, real = first_examples(config, test_split(config, run_dir, data_dir), stats_examples)
        many, many_real = record_many(model, inputs, real, layer, direction)
        stats = saturation(many, many_real, config.model.cell)
        stats["examples"] = stats_examples
    else:
        stats = saturation(gates, example.real, config.model.cell)
        stats["examples"] = 1
    files: dict[str, bytes] = {"gates.png": gate_heatmaps(trace, chosen)}
    name, drawing = draw(trace, chosen, mode)
    files[name] = drawing
    if stats["gates"]:
        files["saturation.png"] = saturation_scatter(stats)
    files["saturation.json"] = json_bytes(stats)
    final = trace.final_probabilities
    best = int(np.argmax(final))
    summary = {
        "run": str(run_dir),
        "checkpoint": meta["tag"],
        "step": meta["state"]["step"],
        "kind": config.model.kind,
        "cell": trace.cell,
        "layer": layer,
        "direction": direction,
        "input": shown,
        "steps": len(trace.labels),
        "real_steps": int(trace.real.sum()),
        "prediction": {"label": best, "label_name": names[best], "probabilities": final.tolist()},
        "units": chosen,
        "units_by": "given" if units is not None else "activity (std over steps of c, or h)",
        "files": sorted([*files, MARKER]),
        "versions": versions(),
    }
    files[MARKER] = json_bytes(summary)
    written = publish(files, out)
    return InspectResult(out, written, summary)


def _only(run_dir: PathLike, given: dict[str, Any], allowed: tuple[str, ...], want: str) -> None:
    """Refuse the inputs a kind does not read, naming what it expected and what came."""
    foreign = [
        f"--{name}" for name, value in given.items() if value is not None and name not in allowed
    ]
    if foreign:
        raise InspectError(f"{run_dir}: {want}, got {' and '.join(foreign)}")


def _read_text(config, run_dir, task, meta, given, data_dir):
    """A review: the example, its token page and the input as inspect.json shows it."""
    _only(run_dir, given, ("text",), 'a text model expected --text "..."')
    text = given["text"]
    if text is None:
        raise InspectError(f'{run_dir}: a text model expected --text "...", got none')
    vocab = read_run_artifacts(run_dir, task, meta)["vocab.json"]

    def draw(trace: Trace, chosen: list[int], mode: str | None) -> tuple[str, bytes]:
        return "tokens.html", render_text_page(trace, text, chosen[0], mode).encode("utf-8")

    return text_example(config, vocab, text), draw, text


def _read_image(config, run_dir, task, meta, given, data_dir):
    """An image file or a test example: the example, its row-by-row figure and the input."""
    _only(run_dir, given, ("image", "index"), "an image model expected --image FILE or --index N")
    image, index = given["image"], given["index"]
    example = image_example(config, run_dir, image, index, data_dir)

    def draw(trace: Trace, chosen: list[int], mode: str | None) -> tuple[str, bytes]:
        return "prediction.png", image_predictions(trace, example.image, example.target)

    shown = str(image) if image is not None else {"test_index": index, "target": example.target}
    return example, draw, shown


def _read_audio(config, run_dir, task, meta, given, data_dir):
    """A WAV file or a test recording: the example, its frame-by-frame figure and the input."""
    _only(run_dir, given, ("wav", "index"), "a spoken-digit model expected --wav FILE or --index N")
    wav, index = given["wav"], given["index"]
    if (wav is None) == (index is None):
        raise InspectError(
            f"{run_dir}: a spoken-digit model expected exactly one of --wav FILE or --index N, "
            f"got {'both' if wav is not None else 'neither'}"
        )
    if wav is not None:
        example, shown = task.example(wav, {}), str(wav)
    else:
        test = test_split(config, run_dir, data_dir)
        if not 0 <= index < len(test):
            raise InspectError(f"--index expected 0..{len(test) - 1} (the test split), got {index}")
        x, lengths = test.inputs
        frames = x[index, : int(lengths[index])].numpy()  # (T, F)
        target = int(test.targets[index])
        example, shown = (
            task.frames_example(frames, target),
            {"test_index": index, "target": target},
        )

    def draw(trace: Trace, chosen: list[int], mode: str | None) -> tuple[str, bytes]:
        return "prediction.png", audio_predictions(trace, example.image, example.target)

    return example, draw, shown


# how a classifier's input is read and drawn, by what its task reads (task.floors.reads)
_READERS = {"text": _read_text, "image": _read_image, "audio": _read_audio}


def command(args: argparse.Namespace) -> int:
    """``rnnlab inspect`` on a classifier run: :func:`inspect_run`, then one line on the
    prediction, the units drawn and the files written."""
    if args.find_units:
        raise InspectError("--find-units expected a language-model run, got a classifier")
    result = inspect_run(
        args.run_dir,
        args.out,
        text=args.text,
        image=args.image,
        index=args.index,
        wav=args.wav,
        units=args.units,
        layer=args.layer,
        direction=args.direction,
        top=args.top,
        mode=args.mode,
        checkpoint=args.checkpoint,
        force=args.force,
        data_dir=args.data_dir,
        stats_examples=args.stats_examples,
    )
    s = result.summary
    p = s["prediction"]
    print(
        f"{s['cell'].upper()} layer {s['layer']} direction {s['direction']}, "
        f"{s['real_steps']} steps: prediction {p['label_name']} "
        f"({p['probabilities'][p['label']]:.3f})"
    )
    print(f"units drawn ({s['units_by']}): {' '.join(map(str, s['units']))}")
    for _, path in sorted(result.files.items()):
        print(f"  {path}")
    return 0
