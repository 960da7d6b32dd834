"""Inspecting a language model (Karpathy, Johnson & Fei-Fei 2015, "Visualizing and Understanding
Recurrent Networks"): each token coloured by one unit's cell state c or hidden state h, the
top-5 next-token predictions at every position, and units ranked by their correlation with
simple text features.

Shape legend: T time (tokens read), H hidden units, V vocabulary, L layers.

The features (:func:`text_features`), one value per token, the state after reading it:

* ``quote``: inside double quotes (after an opening quote, until the closing one or the end of
  the line);
* ``brackets``: inside parentheses or square or curly brackets (nesting depth > 0; the end of a
  line closes them all);
* ``line_position``: tokens since the last newline (or ``<eos>``), the start of a line being 0;
* ``html_tag``: inside ``< ... >``;
* ``comment``: inside ``/* ... */``.

A feature that never changes in the text is left out (it has no correlation to speak of).

A quote or bracket left open ends with its line: in the IMDB corpora a line is a review, and one
review's unbalanced quote would otherwise mark every later review as quoted. That matters
because a trained character model can have units whose c grows steadily over the whole text (a
``charlm`` run had one gaining about 1 per character, 10,000 after 10,000 characters); such a
unit correlates with any feature that is on more often late in the text than early.
"""

from __future__ import annotations

import argparse
import html
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rnnlab.checkpoint import versions
from rnnlab.inspect.html import _SCRIPT, _STYLE, colour, picker
from rnnlab.inspect.html import modes as colour_modes
from rnnlab.inspect.output import MARKER, check_out, json_bytes, publish
from rnnlab.inspect.plots import gate_heatmaps
from rnnlab.inspect.trace import InspectError, Trace, activity, pick_units
from rnnlab.runs import load_run
from rnnlab.tasks import LanguageModelTask, get_task

__all__ = [
    "find_units",
    "inspect_language_model",
    "line_index",
    "record_language_model",
    "text_features",
]

PathLike = str | os.PathLike[str]
TOP_PREDICTIONS = 5
SHOWN = {" ": "\u2423", "\n": "\u21b5", "\t": "\u21e5"}  # visible stand-ins for blank characters


def record_language_model(
    model: Any, ids: torch.Tensor, top: int = TOP_PREDICTIONS, state: Any = None
) -> tuple[list[dict], list[tuple[tuple[int, float], ...]]]:
    """Read (1, T) ``ids`` with :meth:`rnnlab.LanguageModel.steps`, forced to the text from
    ``state`` (the run's start state, or zeros), its gates recorded (the reference loop):
    ``(gates, predictions)``,
    ``gates[layer]`` name -> (T, H) numpy (LSTM: i, f, g, o, c, h), ``predictions[t]`` the
    ``top`` likeliest ``(id, probability)`` of the next token after position t.

    Step t reads ids[t] and carries the distribution it was read from, so the prediction after
    position t is step t + 1's; the one after the last position comes from one more step past
    the text (drawn from a fixed private generator, and not shown)."""
    text = ids[0].tolist()
    steps = model.steps(
        [], len(text) + 1, seed=0, top=top, record_gates=True, forced=text, state=state
    )
    steps = list(steps)
    read = steps[:-1]  # the text's own steps
    gates = [
        {name: torch.stack([s.gates[layer][name] for s in read]).numpy() for name in layer_gates}
        for layer, layer_gates in enumerate(read[0].gates)
    ]  # (T, H) each
    return gates, [s.top for s in steps[1:]]


def text_features(labels: list[str]) -> dict[str, np.ndarray]:
    """(T,) values of each feature of the module docstring after reading each token of
    ``labels`` (characters or words; a word moves the features by the characters it holds)."""
    names = ("quote", "brackets", "line_position", "html_tag", "comment")
    out = {name: np.zeros(len(labels)) for name in names}
    quote, depth, column, tag, comment, previous = False, 0, 0, False, False, ""
    for t, token in enumerate(labels):
        column = 0 if token in ("\n", "<eos>") else column + 1
        if column == 0:  # a line's open quotes and brackets end with it
            quote, depth = False, 0
        for ch in "" if token == "<eos>" else token:
            if ch == '"':
                quote = not quote
            elif ch in "([{":
                depth += 1
            elif ch in ")]}":
                depth = max(0, depth - 1)
            elif ch in "<>":
                tag = ch == "<"
            elif ch == "*" and previous == "/":
                comment = True
            elif ch == "/" and previous == "*":
                comment = False
            previous = ch
        values = (quote, depth > 0, max(column - 1, 0), tag, comment)
        for name, value in zip(names, values, strict=True):
            out[name][t] = value
    return {k: v for k, v in out.items() if v.std() > 0}


def line_index(labels: list[str]) -> np.ndarray:
    """(T,) the line each token of ``labels`` belongs to; a newline or ``<eos>`` ends its line."""
    ends = np.array([token in ("\n", "<eos>") for token in labels], dtype=np.int64)
    return np.concatenate([[0], np.cumsum(ends)[:-1]]).astype(np.int64)


def _within_lines(x: np.ndarray, lines: np.ndarray) -> np.ndarray:
    """``x`` (T,) or (T, H) less the mean of its line at every row."""
    counts = np.bincount(lines).astype(np.float64)  # (lines,)
    sums = np.zeros((counts.size, *x.shape[1:]))
    np.add.at(sums, lines, x)
    means = sums / (counts[:, None] if x.ndim == 2 else counts)
    return x - means[lines]


def find_units(
    gates: list[dict],
    features: dict[str, np.ndarray],
    best: int = 3,
    lines: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """Per feature, the ``best`` units (of every layer, by c and by h) whose values over the
    text correlate most with it (Pearson r, by |r|), most correlated first.

    With ``lines`` ((T,) line of each token, :func:`line_index`), r is measured within lines:
    each line's mean is taken out of the feature and of every unit first, so a unit that drifts
    over the whole text, or sits higher in one review than in the next, is not taken for a
    detector of a feature that happens to be on more in some lines. A feature constant within
    every line is then left out."""
    found = []
    for name, feature in features.items():
        feature = _within_lines(feature, lines) if lines is not None else feature
        if feature.std() < 1e-12:
            continue
        f = (feature - feature.mean()) / feature.std()  # (T,)
        rows = []
        for layer, layer_gates in enumerate(gates):
            for state in ("c", "h"):
                if state not in layer_gates:
                    continue
                values = layer_gates[state].astype(np.float64)  # (T, H)
                values = _within_lines(values, lines) if lines is not None else values
                std = values.std(axis=0)  # (H,)
                r = (f @ (values - values.mean(axis=0))) / (len(f) * np.maximum(std, 1e-12))
                r[std < 1e-9] = 0.0  # a unit that never moves correlates with nothing
                for unit in np.argsort(-np.abs(r), kind="stable")[:best]:
                    rows.append((abs(r[unit]), layer, state, int(unit), float(r[unit])))
        for _, layer, state, unit, r in sorted(rows, reverse=True)[:best]:
            found.append({"feature": name, "layer": layer, "state": state, "unit": unit, "r": r})
    return found


def _label(token: str) -> str:
    return "".join(SHOWN.get(ch, ch) for ch in token)


def render_language_page(
    trace: Trace, top: list[list[tuple[str, float]]], unit: int, mode: str, heading: str
) -> str:
    """The token page: tokens coloured by ``mode`` (c, h or f) of ``unit``, the picker of
    :mod:`rnnlab.inspect.html`, and under each token its top-5 next-token predictions."""
    spec = colour_modes(trace)
    if mode not in spec:
        raise InspectError(f"--mode expected one of {sorted(spec)}, got {mode!r}")
    real = np.flatnonzero(trace.real)
    act = activity(trace.gates, trace.real)  # (H,)
    tokens = []
    for k, t in enumerate(real):
        s = spec[mode]
        raw = s["values"][k] if s["kind"] == "gate" else s["values"][k][unit]
        v = raw if s["kind"] == "gate" else raw / s["scale"][unit]
        label = trace.labels[t]
        tip = f"after {label!r}: " + ", ".join(f"{w!r} {p:.3f}" for w, p in top[t])
        preds = "".join(f"{html.escape(_label(w))} {p:.2f}<br>" for w, p in top[t])
        css = "w oov" if trace.extra["oov"][t] else "w"
        tokens.append(
            f'<span class="tok" data-i="{k}" data-value="{raw:.4f}" title="{html.escape(tip)}">'
            f'<span class="{css}" style="background:{colour(float(v), s["kind"])}">'
            f'{html.escape(_label(label))}</span><span class="p">{preds}</span></span>'
        )
    order = np.argsort(-act, kind="stable")
    options_mode, options_unit, payload = picker(spec, mode, unit, act, order)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>rnnlab inspect: {html.escape(heading)}</title>
<style>{_STYLE} .p {{ text-align: left; }}</style>
</head>
<body>
<h1>{html.escape(heading)}</h1>
<p class="meta">Each token is coloured by the chosen unit after reading it; under it, the
model's five most likely next tokens and their probabilities. {len(real)} tokens read.</p>
<div id="controls">
<label>Colour by <select id="mode">{options_mode}</select></label>
<label>Unit <select id="unit">{options_unit}</select></label>
</div>
<p class="legend"><span style="background:{colour(1.0, "unit")}"></span> positive
<span style="background:{colour(-1.0, "unit")}"></span> negative (scaled by the unit's largest
|value| in this text) &nbsp; <span style="background:{colour(1.0, "gate")}"></span> mean forget
gate near 1</p>
<div id="text">{"".join(tokens)}</div>
<script type="application/json" id="inspect-data">{payload}</script>
<script>{_SCRIPT}</script>
</body>
</html>
"""


def inspect_language_model(
    run_dir: PathLike,
    out: PathLike | None = None,
    *,
    text: str,
    units: list[int] | None = None,
    layer: int = 0,
    top: int = 16,
    mode: str | None = None,
    checkpoint: str = "best",
    find: bool = False,
    force: bool = False,
) -> dict[str, Any]:
    """Run a language-model run on ``text`` with its gates recorded and write into ``out``
    (default ``RUN_DIR/inspect``) ``tokens.html`` (coloured by ``units[0]``, default the most
    active unit of ``layer``), ``states.png`` (heatmaps of every gate and state the cell
    records, for the chosen units; mLSTM's memory and normaliser norms per head) and
    ``inspect.json``; with ``find``, also ``units.json``, the
    units best correlated with each text feature (:func:`find_units`). Returns inspect.json."""
    config, model, meta = load_run(run_dir, checkpoint)
    task = get_task(config)
    if not isinstance(task, LanguageModelTask):
        raise InspectError(f"{run_dir}: expected a language-model run, got {config.model.kind!r}")
    out = Path(out) if out is not None else Path(run_dir) / "inspect"
    check_out(out, force)
    task.bind_run(run_dir)
    example = task.example(text, {})
    start = task.start_state(model)  # where generation and scoring start too
    gates, predictions = record_language_model(model, example.inputs[0], state=start)
    if not 0 <= layer < len(gates):
        raise InspectError(f"--layer expected 0..{len(gates) - 1}, got {layer}")
    vocab = task.vocab
    assert vocab is not None, "bind_run sets the vocabulary"
    top_k = [[(vocab.tokens[i], p) for i, p in row] for row in predictions]
    real = example.real
    trace = Trace(
        "text",
        config.model.cell,
        layer,
        0,
        gates[layer],
        real,
        example.labels,
        np.zeros((len(real), 1)),
        ["next"],
        extra={"oov": example.oov},
    )
    chosen = pick_units(gates[layer], real, units, top)
    mode = mode or ("c" if "c" in gates[layer] else "h")
    heading = f"{config.model.cell.upper()} language model, layer {layer}"
    page = render_language_page(trace, top_k, chosen[0], mode, heading)
    files = {
        "tokens.html": page.encode("utf-8"),
        "states.png": gate_heatmaps(
            trace, chosen, title=f"{heading}: every recorded gate and state, token by token"
        ),
    }
    summary: dict[str, Any] = {
        "run": str(run_dir),
        "checkpoint": meta["tag"],
        "step": meta["state"]["step"],
        "kind": config.model.kind,
        "cell": config.model.cell,
        "layer": layer,
        "input": text,
        "steps": int(real.sum()),
        "units": chosen,
        "units_by": "given" if units is not None else "activity (std over steps of c, or h)",
        "states": list(gates[layer]),  # what states.png draws, in its order
    }
    if find:
        labels = [example.labels[t] for t in np.flatnonzero(real)]
        features = text_features(labels)
        shown = [{k: v[real] for k, v in g.items()} for g in gates]
        summary["features"] = sorted(features)
        summary["found_units"] = find_units(shown, features, lines=line_index(labels))
        files["units.json"] = json_bytes(summary["found_units"])
    summary["files"] = sorted([*files, MARKER])
    summary["versions"] = versions()
    files[MARKER] = json_bytes(summary)
    summary["written"] = {name: str(path) for name, path in publish(files, out).items()}
    return summary


def command(args: argparse.Namespace) -> int:
    """``rnnlab inspect`` on a language-model run: :func:`inspect_language_model`, then the
    units drawn, the units found (``--find-units``) and the files written."""
    if args.text is None or args.image is not None or args.index is not None:
        raise InspectError('a language model expected --text "...", got none or --image/--index')
    s = inspect_language_model(
        args.run_dir,
        args.out,
        text=args.text,
        units=args.units,
        layer=args.layer,
        top=args.top,
        mode=args.mode,
        checkpoint=args.checkpoint,
        force=args.force,
        find=args.find_units,
    )
    print(f"{s['cell'].upper()} language model, layer {s['layer']}, {s['steps']} tokens read")
    print(f"units drawn ({s['units_by']}): {' '.join(map(str, s['units'][:16]))}")
    if args.find_units:
        if not s["found_units"]:
            print("no feature varies in this text: give a longer --text with quotes, brackets...")
        for row in s["found_units"]:
            print(
                f"  {row['feature']:<14} layer {row['layer']} {row['state']} unit "
                f"{row['unit']:<4} r = {row['r']:+.3f}"
            )
    for _, path in sorted(s["written"].items()):
        print(f"  {path}")
    return 0
