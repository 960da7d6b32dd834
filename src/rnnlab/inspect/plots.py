"""The inspection figures, each rendered to PNG bytes (matplotlib, Agg backend, no display).

Shape legend: T time, H hidden units, U units drawn, C classes.
"""

from __future__ import annotations

import io

import numpy as np

from rnnlab.inspect.trace import HIGH, LOW, Trace

__all__ = ["audio_predictions", "gate_heatmaps", "image_predictions", "saturation_scatter"]

TITLES = {
    "i": "input gate i",
    "f": "forget gate f",
    "g": "candidate g",
    "o": "output gate o",
    "c": "cell state c",
    "h": "hidden state h",
    "r": "reset gate r",
    "z": "update gate z",
    "n": "candidate n",
    "h_tilde": "candidate h~",
    "m": "stabiliser m",
    "C_norm": "memory |C| per head",
    "n_norm": "normaliser |n| per head",
}
MAX_TICK_LABELS = 60


def _figure(width: float, height: float):
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100)


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _colour_scale(name: str, values: np.ndarray, cell: str = "lstm") -> tuple[str, float, float]:
    exponential = cell in ("slstm", "mlstm") and name in ("i", "f")  # xLSTM: exp(.) gates
    if name in ("i", "f", "o", "r", "z") and not exponential:  # sigmoid: 0..1
        return "viridis", 0.0, 1.0
    if exponential or name in ("C_norm", "n_norm", "n", "m"):  # unbounded, mostly one sign
        lo, hi = float(values.min()), float(values.max())
        return "viridis", lo, max(hi, lo + 1e-6)
    if name in ("c", "h_tilde") or np.abs(values).max() > 1.0:  # unbounded: symmetric around 0
        bound = max(float(np.abs(values).max()), 1e-6)
        return "RdBu_r", -bound, bound
    return "RdBu_r", -1.0, 1.0  # tanh-valued


def gate_heatmaps(trace: Trace, units: list[int], title: str = "") -> bytes:
    """One panel per recorded quantity (time across, the chosen ``units`` down), all sharing the
    time axis, labelled with the words (or rows) when there are few enough steps."""
    names = list(trace.gates)
    T, U = len(trace.labels), len(units)
    fig = _figure(min(4 + 0.16 * T, 24), 1.2 + len(names) * (0.6 + 0.13 * U))
    axes = fig.subplots(len(names), 1, sharex=True, squeeze=False)[:, 0]
    H = trace.hidden_size
    for ax, name in zip(axes, names, strict=True):
        record = trace.gates[name]  # (T, H), or (T, heads) for mLSTM's per-head quantities
        shown = units if record.shape[1] == H else list(range(record.shape[1]))
        values = record[:, shown].T  # (U, T)
        cmap, lo, hi = _colour_scale(name, values, trace.cell)
        image = ax.imshow(
            values, aspect="auto", cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest"
        )
        fig.colorbar(image, ax=ax, fraction=0.025, pad=0.01)
        ax.set_ylabel(TITLES.get(name, name), fontsize=8)
        rows = len(shown)
        ticks = range(rows) if rows <= 32 else range(0, rows, max(1, rows // 16))
        ax.set_yticks(list(ticks))
        prefix = "" if shown is units else "head "
        ax.set_yticklabels([f"{prefix}{shown[k]}" for k in ticks], fontsize=6)
        for t in np.flatnonzero(~trace.real):  # padding: hatched over
            ax.axvspan(t - 0.5, t + 0.5, color="white", alpha=0.6, linewidth=0)
    if T <= MAX_TICK_LABELS:
        axes[-1].set_xticks(range(T))
        axes[-1].set_xticklabels(trace.labels, rotation=90, fontsize=7)
    else:
        axes[-1].set_xlabel("step")
    fig.suptitle(
        title
        or f"{trace.cell.upper()} layer {trace.layer}, direction "
        f"{trace.direction}: units {'sorted by activity' if U > 1 else units[0]}",
        fontsize=10,
    )
    fig.tight_layout()
    return _png(fig)


def image_predictions(trace: Trace, image: np.ndarray, target: int | None = None) -> bytes:
    """The image (rows read top to bottom) beside the class probabilities after each row, on
    the same row axis, and the probability of the final prediction (and of the true class)
    as the rows arrive."""
    probs = trace.probabilities  # (T, C)
    fig = _figure(11, 4.2)
    left, middle, right = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1, 1.1, 1.4]})
    left.imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    left.set_title("input (read row by row)", fontsize=9)
    left.set_ylabel("row")
    left.set_xticks([])
    shown = middle.imshow(
        probs, aspect="auto", cmap="magma", vmin=0, vmax=1, interpolation="nearest"
    )
    fig.colorbar(shown, ax=middle, fraction=0.05, pad=0.02)
    middle.set_xticks(range(len(trace.class_names)))
    middle.set_xticklabels(trace.class_names, fontsize=8)
    middle.set_title("P(class) after each row", fontsize=9)
    middle.set_ylabel("row")
    _final_curve(right, trace, target, "rows read", ("o-", "s-"))
    fig.tight_layout()
    return _png(fig)


def _final_curve(ax, trace: Trace, target: int | None, xlabel: str, styles: tuple[str, str]):
    """The probability of the final prediction (and of the true class, when it differs) after
    each step, titled with the final prediction: the last panel of the prediction figures."""
    probs = trace.probabilities  # (T, C)
    final = int(np.argmax(trace.final_probabilities))
    steps = np.arange(probs.shape[0])
    names = trace.class_names
    ax.plot(steps, probs[:, final], styles[0], markersize=3, label=f"predicted {names[final]}")
    if target is not None and target != final:
        ax.plot(steps, probs[:, target], styles[1], markersize=3, label=f"true {names[target]}")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("probability")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    truth = "" if target is None else f", true class {names[target]}"
    ax.set_title(
        f"final: {names[final]} ({trace.final_probabilities[final]:.3f}){truth}", fontsize=9
    )


def saturation_scatter(stats: dict, title: str = "") -> bytes:
    """Karpathy et al. (2015), figure 4: per gate, each unit a dot at (fraction of steps
    < 0.1, fraction of steps > 0.9). Dots near the top left are gates almost always open, near
    the bottom right almost always shut, near the origin gates that stay in between."""
    names = list(stats["gates"])
    fig = _figure(3.4 * len(names) + 0.4, 3.6)
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    for ax, name in zip(axes, names, strict=True):
        left, right = stats["gates"][name]["left"], stats["gates"][name]["right"]
        ax.scatter(left, right, s=12, alpha=0.6)
        ax.plot([0, 1], [1, 0], color="grey", linewidth=0.8, linestyle="--")
        ax.set_xlim(-0.03, 1.03)
        ax.set_ylim(-0.03, 1.03)
        ax.set_aspect("equal")
        ax.set_xlabel(f"fraction of steps < {LOW}", fontsize=8)
        ax.set_ylabel(f"fraction of steps > {HIGH}", fontsize=8)
        ax.set_title(TITLES.get(name, name), fontsize=9)
        ax.grid(alpha=0.3)
    examples = stats.get("examples", 1)
    fig.suptitle(
        title
        or f"gate saturation, each dot a unit: {stats['steps']} steps of "
        f"{examples} example{'s' if examples != 1 else ''}",
        fontsize=10,
    )
    fig.tight_layout()
    return _png(fig)


def audio_predictions(trace: Trace, frames: np.ndarray, target: int | None = None) -> bytes:
    """A recording's (T, F) features (log-mel bands over frames) above the class probabilities
    had the recording ended after each frame, on the same frame axis, and below them the
    probability of the final prediction (and of the true class) as the frames arrive."""
    probs = trace.probabilities  # (T, C)
    T = probs.shape[0]
    fig = _figure(min(16, 5 + T * 0.06), 7.5)
    top, middle, bottom = fig.subplots(
        3, 1, sharex=True, gridspec_kw={"height_ratios": [1.2, 1, 1]}
    )
    top.imshow(frames.T, aspect="auto", origin="lower", cmap="magma", interpolation="nearest")
    top.set_ylabel("band")
    top.set_title("input features (frames read left to right)", fontsize=9)
    middle.imshow(
        probs.T, aspect="auto", origin="lower", cmap="Greys", vmin=0, vmax=1,
        interpolation="nearest",
    )  # fmt: skip
    middle.set_yticks(range(len(trace.class_names)), trace.class_names, fontsize=8)
    middle.set_title("P(class) had the recording ended after each frame", fontsize=9)
    _final_curve(bottom, trace, target, "frame", ("-", "--"))
    fig.tight_layout()
    return _png(fig)
