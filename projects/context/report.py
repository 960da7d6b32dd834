"""Writing the context experiment's results: Markdown tables, ``results.json`` and two PNGs.

Every file is written atomically (temporary file in the same folder, then rename), so a reader
never sees half a file.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from projects.context.experiment import ContextResults
from projects.long_range.report import COLOURS, NAMES, STYLES  # the same colour per cell
from rnnlab.checkpoint import versions
from rnnlab.files import atomic_write

__all__ = [
    "format_cloze_table",
    "format_context_table",
    "format_table",
    "plot_cloze",
    "plot_context",
    "write_results",
]


def _k_order(keys: list[str]) -> list[str]:
    return sorted((k for k in keys if k != "all"), key=int) + ["all"]


def format_context_table(results: ContextResults, key: str = "context_loss") -> str:
    """Test loss (nats) with only the last k tokens visible, per cell (mean over seeds), the
    difference to "all" in brackets, then where each cell stops gaining. ``key``:
    ``"context_loss"`` (zero state before the window) or ``"context_loss_replaced"`` (other
    text before it)."""
    cells = list(results.table)
    lines = [
        "| context k | " + " | ".join(f"{NAMES[c]} loss (vs all)" for c in cells) + " |",
        "|---:|" + "---:|" * len(cells),
    ]
    first = results.table[cells[0]][key]
    for k in _k_order(list(first)):
        entries = []
        for c in cells:
            e = results.table[c][key][k]
            entries.append(
                f"{e['loss']:.3f}" if k == "all" else f"{e['loss']:.3f} ({e['minus_all']:+.3f})"
            )
        lines.append(f"| {k} | " + " | ".join(entries) + " |")
    lines.append(
        "| stateful test loss (ppl) | "
        + " | ".join(
            f"{results.table[c]['test_loss']:.3f} ({results.table[c]['test_perplexity']:.0f})"
            for c in cells
        )
        + " |"
    )
    lines.append("")
    tol = results.config.saturation_nats
    for c in cells:
        k = results.table[c][key.replace("context_loss", "stops_gaining")]
        where = f"k = {k}" if k is not None else "beyond the longest k measured"
        lines.append(
            f"{NAMES[c]} stops gaining at {where} (every longer context within {tol:g} nats "
            "or 2 standard errors of all)"
        )
    return "\n".join(lines)


def format_cloze_table(results: ContextResults) -> str:
    """Cloze accuracy (and the right language's share of the candidates' probability) per
    distractor length n, per cell."""
    cells = list(results.table)
    lines = [
        "| distractor words n | "
        + " | ".join(f"{NAMES[c]} acc (prob, gain)" for c in cells)
        + " |",
        "|---:|" + "---:|" * len(cells),
    ]
    for n in results.table[cells[0]]["cloze"]:
        entries = []
        for c in cells:
            e = results.table[c]["cloze"][n]
            entries.append(f"{e['accuracy']:.3f} ({e['probability']:.3f}, {e['gain']:+.3f})")
        lines.append(f"| {n} | " + " | ".join(entries) + " |")
    p = results.probe
    lines.append("")
    lines.append(
        f"chance = 1/{len(p['pairs'])} = {p['chance']:.3f} for acc and prob (the right "
        "language's share of the candidates' probability), 0 for gain (nats more for a "
        "language after its own country than after the others); "
        f"{p['examples_per_distance']} examples per n ({p['spans']} spans x "
        f"{len(p['pairs'])} countries x {len(p['templates'])} templates); languages: "
        + ", ".join(lang for _, lang in p["pairs"])
    )
    return "\n".join(lines)


def format_table(results: ContextResults) -> str:
    """Both tables, with headings."""
    replaced = ""
    if "context_loss_replaced" in next(iter(results.table.values())):
        replaced = (
            f"\n\nThe same, after {results.config.replaced_words} words of other test text in "
            "place of the words before the window (no reset artefact)\n\n"
            + format_context_table(results, "context_loss_replaced")
        )
    return (
        "Context use: test loss when the model sees only the last k tokens (state reset)\n\n"
        + format_context_table(results)
        + replaced
        + "\n\nCloze probe: the country's language ranked first among the candidates\n\n"
        + format_cloze_table(results)
    )


def _figure() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5, 4.2), dpi=110)
    return fig, fig.add_subplot(1, 1, 1)


def _png(fig: Any) -> bytes:
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _line(
    ax: Any, cell: str, xs: list[float], ys: list[float], dashed: bool = False, label: str = ""
) -> None:
    marker, line, width = STYLES[cell]
    ax.plot(
        xs,
        ys,
        marker=marker,
        linestyle="-." if dashed else line,
        color=COLOURS[cell],
        label=NAMES[cell] + label,
        alpha=0.55 if dashed else 1.0,
        linewidth=width,
        markersize=4 + width,
    )


def plot_context(results: ContextResults) -> bytes:
    """PNG bytes: test loss against the context length k (log scale), one line per cell (state
    reset before the window; dash-dotted and faint: other text read first), each cell's
    full-context ("all") loss drawn as a dotted line of its colour."""
    fig, ax = _figure()
    ks: list[int] = []
    for cell, row in results.table.items():
        ks = [int(k) for k in _k_order(list(row["context_loss"]))[:-1]]
        _line(ax, cell, ks, [row["context_loss"][str(k)]["loss"] for k in ks])
        if "context_loss_replaced" in row:
            ys = [row["context_loss_replaced"][str(k)]["loss"] for k in ks]
            _line(ax, cell, ks, ys, dashed=True, label=" (other text first)")
        ax.axhline(row["context_loss"]["all"]["loss"], color=COLOURS[cell], linestyle=":")
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(ks)
    ax.set_xticklabels([str(k) for k in ks])
    ax.set_xlabel("context k (tokens the model may see; dotted: all)")
    ax.set_ylabel("test loss (nats per word)")
    c = results.config
    ax.set_title(
        f"Word LM on {results.corpus['source']}: H={c.hidden_size}, {c.steps} steps", fontsize=10
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def plot_cloze(results: ContextResults) -> bytes:
    """PNG bytes: cloze accuracy against the distractor length n, one line per cell, chance
    dashed."""
    fig, ax = _figure()
    ns: list[int] = []
    for cell, row in results.table.items():
        ns = [int(n) for n in row["cloze"]]
        _line(ax, cell, ns, [row["cloze"][str(n)]["accuracy"] for n in ns])
    chance = results.probe["chance"]
    ax.axhline(
        chance, color="grey", linestyle="--", label=f"chance (1/{len(results.probe['pairs'])})"
    )
    ax.set_xscale("symlog", linthresh=5)
    ax.minorticks_off()
    ax.set_xticks(ns)
    ax.set_xticklabels([str(n) for n in ns])
    ax.set_ylim(0, 1.03)
    ax.set_xlim(-0.3, max(ns) * 1.15 if ns else 1)  # symlog leaves a decade of nothing below 0
    ax.set_xlabel("distractor words between the country and the blank")
    ax.set_ylabel("accuracy (right language ranked first)")
    ax.set_title('"I grew up in France ... I speak fluent ___"', fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def write_results(
    results: ContextResults, out_dir: str | Path, extra: dict[str, Any] | None = None
) -> dict[str, Path]:
    """Write ``results.json``, ``loss_vs_context.png``, ``cloze_vs_distance.png`` and
    ``table.md`` into ``out_dir`` (created if missing); returns their paths. ``extra`` is merged
    into the JSON (e.g. the machine and thread count)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = {**results.to_dict(), "versions": versions(), **(extra or {})}
    figures = {"context_png": plot_context(results), "cloze_png": plot_cloze(results)}
    paths = {
        "json": out / "results.json",
        "context_png": out / "loss_vs_context.png",
        "cloze_png": out / "cloze_vs_distance.png",
        "table": out / "table.md",
    }
    atomic_write(paths["json"], (json.dumps(payload, indent=1) + "\n").encode("utf-8"))
    for key, png in figures.items():
        atomic_write(paths[key], png)
    atomic_write(paths["table"], (format_table(results) + "\n").encode("utf-8"))
    return paths
