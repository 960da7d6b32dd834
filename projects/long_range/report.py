"""Writing the long-range experiment's results: a text table, ``results.json`` and a PNG.

Every file is written atomically (temporary file in the same folder, then rename), so a reader
never sees half a file.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from projects.long_range.experiment import LongRangeResults
from rnnlab.checkpoint import versions
from rnnlab.files import atomic_write

__all__ = ["format_table", "plot_accuracy_vs_gap", "write_results"]

# one name, colour and line style for every cell of the registry (--cells takes any of them;
# tests/test_long_range.py checks that none is missing, which once crashed a finished run)
NAMES = {
    "rnn": "RNN",
    "lstm": "LSTM",
    "gru": "GRU",
    "mingru": "minGRU",
    "minlstm": "minLSTM",
    "slstm": "sLSTM",
    "mlstm": "mLSTM",
}
COLOURS = {
    "rnn": "tab:red",
    "lstm": "tab:blue",
    "gru": "tab:green",
    "mingru": "tab:olive",
    "minlstm": "tab:cyan",
    "slstm": "tab:purple",
    "mlstm": "tab:orange",
}
STYLES = {  # lines that coincide (all at 1.0) stay visible: the earlier ones drawn wider, beneath
    "rnn": ("o", "-", 2.0),
    "lstm": ("s", "-", 3.5),
    "gru": ("^", "--", 1.8),
    "mingru": ("v", ":", 1.6),
    "minlstm": ("D", "-.", 1.4),
    "slstm": ("P", "-", 1.2),
    "mlstm": ("X", "--", 1.0),
}


def format_table(results: LongRangeResults) -> str:
    """A Markdown table: one row per gap, each cell's mean accuracy over seeds (and each seed's
    when there are several), then the gaps each cell solved and where it hit chance."""
    cells = results.config.cells
    lines = [
        "| gap | " + " | ".join(NAMES[c] for c in cells) + " |",
        "|---:|" + "---:|" * len(cells),
    ]
    for row in results.table:
        entries = []
        for cell in cells:
            s = row.get(cell)
            if s is None:
                entries.append("-")
            elif s["seeds"] > 1:  # the mean, then each seed's accuracy in seed order
                entries.append(f"{s['mean']:.3f} ({' '.join(f'{a:.2f}' for a in s['per_seed'])})")
            else:
                entries.append(f"{s['mean']:.3f}")
        lines.append(f"| {row['gap']} | " + " | ".join(entries) + " |")
    c = results.config
    lines.append("")
    lines.append(
        f"chance = {c.chance:.3f}; solved = mean accuracy >= {c.solved}; "
        f"at chance = within {c.chance_margin:g} standard errors of chance"
    )
    for cell in cells:
        solved = ", ".join(map(str, results.solved[cell])) or "none"
        chance = ", ".join(map(str, results.at_chance[cell])) or "none"
        seeds = (
            ", ".join(
                f"{row[cell]['seeds_at_chance']}/{row[cell]['seeds']} at gap {row['gap']}"
                for row in results.table
                if cell in row and row[cell]["seeds_at_chance"]
            )
            or "none"
        )
        lines.append(
            f"{NAMES[cell]}: solved gaps {solved}; mean at chance at gaps {chance}; "
            f"seeds at chance: {seeds}"
        )
    return "\n".join(lines)


def plot_accuracy_vs_gap(results: LongRangeResults) -> bytes:
    """PNG bytes: held-out accuracy against gap (log scale), one line per cell (mean over
    seeds, each seed a faint dot), chance drawn dashed."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    c = results.config
    fig = Figure(figsize=(6.5, 4.2), dpi=110)
    ax = fig.add_subplot(1, 1, 1)
    for cell in c.cells:
        gaps = [row["gap"] for row in results.table if cell in row]
        means = [row[cell]["mean"] for row in results.table if cell in row]
        marker, line, width = STYLES[cell]
        ax.plot(
            gaps,
            means,
            marker=marker,
            linestyle=line,
            color=COLOURS[cell],
            label=NAMES[cell],
            linewidth=width,
            markersize=4 + width,
        )
        dots = [(r["gap"], r["accuracy"]) for r in results.runs if r["cell"] == cell]
        if len(c.seeds) > 1:
            ax.scatter(*zip(*dots, strict=True), color=COLOURS[cell], alpha=0.35, s=14)
    ax.axhline(c.chance, color="grey", linestyle="--", label=f"chance (1/{c.num_classes})")
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(list(c.gaps))
    ax.set_xticklabels([str(g) for g in c.gaps])
    ax.set_ylim(0, 1.03)
    ax.set_xlabel("gap (distractor steps between the symbol and the answer)")
    ax.set_ylabel("held-out accuracy")
    seeds = f"{len(c.seeds)} seed{'s' if len(c.seeds) > 1 else ''}"
    ax.set_title(f"Noisy recall: H={c.hidden_size}, {c.steps} steps, {seeds}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=4)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def write_results(
    results: LongRangeResults, out_dir: str | Path, extra: dict[str, Any] | None = None
) -> dict[str, Path]:
    """Write ``results.json``, ``accuracy_vs_gap.png`` and ``table.md`` into ``out_dir``
    (created if missing); returns their paths. ``extra`` is merged into the JSON (e.g. the
    machine and thread count)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = {**results.to_dict(), "versions": versions(), **(extra or {})}
    png = plot_accuracy_vs_gap(results)  # rendered before anything is written
    paths = {
        "json": out / "results.json",
        "png": out / "accuracy_vs_gap.png",
        "table": out / "table.md",
    }
    atomic_write(paths["json"], (json.dumps(payload, indent=1) + "\n").encode("utf-8"))
    atomic_write(paths["png"], png)
    atomic_write(paths["table"], (format_table(results) + "\n").encode("utf-8"))
    return paths
