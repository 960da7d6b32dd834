"""Inspecting a sequence-to-sequence run: where the decoder looked (the attention matrix of a
greedy translation, Bahdanau et al. 2014's figure 3) and what its gates did at each output step.

Shape legend: T output steps (tokens and ``</s>``), S source tokens, H decoder units.

The source is decoded greedily by :meth:`rnnlab.nn.Seq2Seq.steps` with the decoder's gates
recorded (the reference loop, routed per call); each step brings its attention row (S,) and
its gates, per decoder layer name -> (H,). Written, whole or not at all
(:func:`rnnlab.inspect.output.publish`): ``attention.png`` (the matrix, and the chosen layer's
gates of the most active units over the output steps), ``attention.html`` (the matrix as a
table of shaded cells, each weight on hover, and the gates' means per step) and
``inspect.json``.
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
from rnnlab.inspect.html import colour
from rnnlab.inspect.output import MARKER, check_out, json_bytes, publish
from rnnlab.inspect.plots import _figure, _png
from rnnlab.inspect.trace import InspectError, activity, pick_units
from rnnlab.runs import load_run
from rnnlab.tasks import get_task

__all__ = ["attention_page", "attention_png", "command", "inspect_seq2seq"]

PathLike = str | os.PathLike[str]


def attention_png(
    weights: np.ndarray,
    sources: list[str],
    outputs: list[str],
    gates: dict[str, np.ndarray],
    units: list[int],
    title: str,
) -> bytes:
    """The (T, S) attention matrix, then one panel per gate of ``units`` (T across)."""
    names = [n for n in ("i", "f", "o", "c", "r", "z", "h") if n in gates]
    T, S = weights.shape
    fig = _figure(max(6.0, 0.35 * max(S, T) + 3), 3 + 0.3 * T + 1.6 * len(names))
    grid = fig.add_gridspec(1 + len(names), 1, height_ratios=[max(T, 3)] + [3] * len(names))
    ax = fig.add_subplot(grid[0])
    image = ax.imshow(weights, cmap="Greys", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(S), sources)
    ax.set_yticks(range(T), outputs)
    ax.set_xlabel("source")
    ax.set_ylabel("output")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.03)
    for k, name in enumerate(names, start=1):
        ax = fig.add_subplot(grid[k])
        values = gates[name][:, units].T  # (units, T)
        low, high = (0.0, 1.0) if name in ("i", "f", "o", "r", "z") else (-1.0, 1.0)
        if name == "c":
            high = max(float(np.abs(values).max()), 1e-6)
            low = -high
        ax.imshow(
            values,
            cmap="viridis" if low == 0 else "RdBu_r",
            vmin=low,
            vmax=high,
            aspect="auto",
            interpolation="nearest",
        )
        ax.set_yticks(range(len(units)), [str(u) for u in units], fontsize=6)
        ax.set_xticks(range(T), outputs, fontsize=7)
        ax.set_ylabel(f"decoder {name}")
    fig.tight_layout()
    return _png(fig)


def attention_page(
    weights: np.ndarray,
    sources: list[str],
    outputs: list[str],
    gates: dict[str, np.ndarray],
    heading: str,
) -> str:
    """A table of shaded cells (rows outputs, columns sources) and the decoder gates' mean over
    units at each output step."""
    head = "".join(f"<th>{html.escape(s)}</th>" for s in sources)
    rows = []
    means = {n: v.mean(axis=1) for n, v in gates.items() if n in ("i", "f", "o", "r", "z")}
    for t, out in enumerate(outputs):
        cells = "".join(
            f'<td class="att" style="background:{colour(float(w), "gate")}" '
            f'title="{html.escape(out)} &lt;- {html.escape(sources[s])}: {w:.3f}" '
            f'data-weight="{w:.4f}"></td>'
            for s, w in enumerate(weights[t])
        )
        gate_cells = "".join(f"<td>{means[n][t]:.3f}</td>" for n in means)
        rows.append(f"<tr><th>{html.escape(out)}</th>{cells}<td></td>{gate_cells}</tr>")
    gate_head = "".join(f"<th>mean {n}</th>" for n in means)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>rnnlab inspect: {html.escape(heading)}</title>
<style>body {{ font-family: sans-serif; margin: 1.5em; }}
table {{ border-collapse: collapse; font-family: monospace; }}
td.att {{ width: 1.6em; height: 1.4em; border: 1px solid #eee; }}
th, td {{ padding: 0 0.3em; }}</style>
</head>
<body>
<h1>{html.escape(heading)}</h1>
<p>Rows: each output token of the greedy translation (and &lt;/s&gt;); columns: the source
tokens. Darker: more attention; every row sums to 1. Right: the decoder's gates, the mean over
its units, at each output step.</p>
<table id="attention"><tr><th></th>{head}<th></th>{gate_head}</tr>{"".join(rows)}</table>
</body>
</html>
"""


def inspect_seq2seq(
    run_dir: PathLike,
    out: PathLike | None = None,
    *,
    text: str,
    units: list[int] | None = None,
    layer: int = 0,
    top: int = 16,
    checkpoint: str = "best",
    force: bool = False,
) -> dict[str, Any]:
    """Translate ``text`` greedily with a seq2seq run, the decoder's gates recorded, and write
    ``attention.png``, ``attention.html`` and ``inspect.json`` into ``out`` (default
    ``RUN_DIR/inspect``). Returns inspect.json's values."""
    config, model, meta = load_run(run_dir, checkpoint)
    task = get_task(config)
    task.check_verb("translate", str(run_dir))
    out = Path(out) if out is not None else Path(run_dir) / "inspect"
    check_out(out, force)
    task.bind_run(run_dir)
    example = task.example(text, {})
    src = example.inputs[0][0]  # (S,)
    steps = list(model.steps(src, config.data.max_length, top=0, record_gates=True))
    if not 0 <= layer < len(steps[0].gates):
        raise InspectError(f"--layer expected 0..{len(steps[0].gates) - 1}, got {layer}")
    target = task.target
    outputs = [target.tokens[s.token] for s in steps]  # the last is </s> unless cut
    weights = torch.stack([s.attention for s in steps]).double().numpy()  # (T, S)
    gates = {
        n: torch.stack([s.gates[layer][n] for s in steps]).double().numpy()  # (T, H)
        for n in steps[0].gates[layer]
    }
    real = np.ones(len(steps), dtype=bool)
    chosen = pick_units(gates, real, units, top)
    cell = config.model.decoder_cell.upper()
    heading = f"{cell} decoder with {config.model.attention} attention: {text.strip()!r}"
    files = {
        "attention.png": attention_png(weights, example.labels, outputs, gates, chosen, heading),
        "attention.html": attention_page(weights, example.labels, outputs, gates, heading).encode(
            "utf-8"
        ),
    }
    summary: dict[str, Any] = {
        "run": str(run_dir),
        "checkpoint": meta["tag"],
        "step": meta["state"]["step"],
        "kind": config.model.kind,
        "cell": config.model.decoder_cell,
        "layer": layer,
        "input": text,
        "source": example.labels,
        "output": outputs,
        "translation": target.decode(s.token for s in steps),
        "attention": np.round(weights, 4).tolist(),
        "units": chosen,
        "activity": np.round(activity(gates, real)[chosen], 4).tolist(),
        "unknown": [t for t, o in zip(example.labels, example.oov or [], strict=False) if o],
    }
    summary["files"] = sorted([*files, MARKER])
    summary["versions"] = versions()
    files[MARKER] = json_bytes(summary)
    summary["written"] = {name: str(path) for name, path in publish(files, out).items()}
    return summary


def command(args: argparse.Namespace) -> int:
    """``rnnlab inspect`` on a seq2seq run: :func:`inspect_seq2seq`, then the translation and
    the files written."""
    if args.text is None or args.image is not None or args.index is not None:
        raise InspectError('a seq2seq model expected --text "SOURCE", got none or --image/--index')
    s = inspect_seq2seq(
        args.run_dir,
        args.out,
        text=args.text,
        units=args.units,
        layer=args.layer,
        top=args.top,
        checkpoint=args.checkpoint,
        force=args.force,
    )
    print(f"{s['input']!r} -> {s['translation']!r} ({len(s['output'])} steps, greedy)")
    if s["unknown"]:
        print(f"read as <unk>: {' '.join(s['unknown'])}")
    for _, path in sorted(s["written"].items()):
        print(f"  {path}")
    return 0
