"""A self-contained HTML page for a text model: each token coloured by one unit's cell state or
hidden state, or by the mean forget gate, with a unit picker and the prediction after each
token. No external scripts, styles or fonts: everything is inline, so the file opens anywhere.

The page is coloured when written (for the default unit) and recoloured by a few lines of inline
JavaScript when the picker changes; both use the same rule (:func:`colour`).
"""

from __future__ import annotations

import html
import json
from typing import Any

import numpy as np

from rnnlab.inspect.trace import Trace, activity

__all__ = ["colour", "modes", "render_text_page"]

POSITIVE, NEGATIVE, GATE = (214, 39, 40), (31, 119, 180), (44, 160, 44)

_STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; background: #fff; }
h1 { font-size: 1.2em; } .meta { color: #555; font-size: 0.9em; }
#controls { margin: 1em 0; } #controls label { margin-right: 1.2em; }
#text { line-height: 2.6em; max-width: 60em; }
.tok { display: inline-block; text-align: center; margin: 0 2px; vertical-align: top; }
.w { padding: 2px 3px; border-radius: 3px; } .oov { font-style: italic; color: #666; }
.p { display: block; font-size: 0.65em; line-height: 1.1em; color: #555; }
.legend span { display: inline-block; width: 1.2em; height: 0.9em; vertical-align: middle; }
"""

_SCRIPT = """
(function () {
  var data = JSON.parse(document.getElementById("inspect-data").textContent);
  var mode = document.getElementById("mode"), unit = document.getElementById("unit");
  function colour(v, m) {
    if (m === "gate") { return "rgba(" + data.gate + "," + v.toFixed(3) + ")"; }
    var rgb = v >= 0 ? data.positive : data.negative;
    return "rgba(" + rgb + "," + Math.min(1, Math.abs(v)).toFixed(3) + ")";
  }
  function paint() {
    var m = mode.value, u = parseInt(unit.value, 10), spec = data.modes[m];
    unit.disabled = spec.kind === "gate";
    var words = document.querySelectorAll(".tok .w");
    for (var k = 0; k < words.length; k++) {
      var v = spec.kind === "gate" ? spec.values[k] : spec.values[k][u] / spec.scale[u];
      var raw = spec.kind === "gate" ? spec.values[k] : spec.values[k][u];
      words[k].style.background = colour(v, spec.kind);
      words[k].parentNode.setAttribute("data-value", raw.toFixed(4));
    }
  }
  mode.addEventListener("change", paint);
  unit.addEventListener("change", paint);
  // a link may preselect: tokens.html#mode=f or #mode=h&unit=7
  var q = new URLSearchParams(location.hash.slice(1));
  if (q.has("mode") && data.modes[q.get("mode")]) { mode.value = q.get("mode"); }
  if (q.has("unit") && unit.querySelector('option[value="' + q.get("unit") + '"]')) {
    unit.value = q.get("unit");
  }
  if (q.has("mode") || q.has("unit")) { paint(); }
})();
"""


def modes(trace: Trace) -> dict[str, dict]:
    """What the page can colour by: per unit ``c`` (LSTM) and ``h``, values (n, H) over the real
    steps with a per-unit ``scale`` (max |value|, so each unit uses its full colour range), and
    the mean forget gate (LSTM) or mean update gate (GRU), (n,) in [0, 1]."""
    real = trace.real
    out: dict[str, dict] = {}
    for name in ("c", "h"):
        if name in trace.gates:
            values = trace.gates[name][real]  # (n, H)
            scale = np.maximum(np.abs(values).max(axis=0), 1e-6)  # (H,)
            out[name] = {"kind": "unit", "values": values, "scale": scale}
    gate = "f" if "f" in trace.gates else "z" if "z" in trace.gates else None
    if gate is not None:
        out[gate] = {"kind": "gate", "values": trace.gates[gate][real].mean(axis=1)}  # (n,)
    return out


def colour(value: float, kind: str) -> str:
    """The CSS colour of a value: ``kind`` "gate" shades green by a value in [0, 1]; "unit"
    red for positive, blue for negative, by a value in [-1, 1]."""
    if kind == "gate":
        return f"rgba({','.join(map(str, GATE))},{value:.3f})"
    rgb = POSITIVE if value >= 0 else NEGATIVE
    return f"rgba({','.join(map(str, rgb))},{min(1.0, abs(value)):.3f})"


MODE_NAMES = {
    "c": "one unit's cell state c",
    "h": "one unit's hidden state h",
    "f": "mean forget gate f (all units)",
    "z": "mean update gate z (all units)",
}


def render_text_page(
    trace: Trace, text: str, unit: int, mode: str | None = None, title: str = ""
) -> str:
    """The page's HTML. ``unit`` is preselected (the picker lists units most active first);
    ``mode`` is "c", "h", "f" (LSTM) or "z" (GRU), by default "c" or "h"."""
    spec = modes(trace)
    mode = mode or ("c" if "c" in spec else "h")
    if mode not in spec:
        raise ValueError(f"render_text_page expected mode in {sorted(spec)}, got {mode!r}")
    n = int(trace.real.sum())
    labels = [trace.labels[k] for k in np.flatnonzero(trace.real)]
    oov = trace.extra.get("oov") or [False] * len(trace.labels)
    oov = [oov[k] for k in np.flatnonzero(trace.real)]
    probs = trace.probabilities[trace.real]  # (n, C)
    names = trace.class_names
    shown = 1 if len(names) == 2 else int(np.argmax(trace.final_probabilities))
    act = activity(trace.gates, trace.real)  # (H,)
    order = np.argsort(-act, kind="stable")  # the picker lists the most active units first

    tokens = []
    for k in range(n):
        s = spec[mode]
        v = s["values"][k] if s["kind"] == "gate" else s["values"][k][unit] / s["scale"][unit]
        raw = s["values"][k] if s["kind"] == "gate" else s["values"][k][unit]
        best = int(np.argmax(probs[k]))
        unknown = " (outside the vocabulary: read as [OOV])" if oov[k] else ""
        tip = f"after {labels[k]!r}{unknown}: " + ", ".join(
            f"{names[c]} {probs[k][c]:.3f}" for c in range(len(names))
        )
        word_class = "w oov" if oov[k] else "w"
        tokens.append(
            f'<span class="tok" data-i="{k}" data-value="{raw:.4f}" title="{html.escape(tip)}">'
            f'<span class="{word_class}" style="background:{colour(float(v), s["kind"])}">'
            f"{html.escape(labels[k])}</span>"
            f'<span class="p">{probs[k][shown]:.2f}{"" if best == shown else "*"}</span></span>'
        )
    options_mode, options_unit, payload = picker(spec, mode, unit, act, order)
    final = int(np.argmax(trace.final_probabilities))
    heading = title or (f"{trace.cell.upper()} layer {trace.layer}, direction {trace.direction}")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>rnnlab inspect: {html.escape(heading)}</title>
<style>{_STYLE}</style>
</head>
<body>
<h1>{html.escape(heading)}</h1>
<p class="meta">Prediction: <b id="final">{html.escape(names[final])}</b>
({trace.final_probabilities[final]:.3f}). The number under each token is P({
        html.escape(names[shown])
    }) had the text ended there (* where another class led).
{n} tokens read.</p>
<div id="controls">
<label>Colour by <select id="mode">{options_mode}</select></label>
<label>Unit <select id="unit">{options_unit}</select></label>
</div>
<p class="legend"><span style="background:{colour(1.0, "unit")}"></span> positive
<span style="background:{colour(-1.0, "unit")}"></span> negative (scaled by the unit's largest
|value| in this text) &nbsp; <span style="background:{colour(1.0, "gate")}"></span> gate near 1
(keeps memory)</p>
<div id="text">{"".join(tokens)}</div>
<p class="meta">Input: {html.escape(text[:2000])}</p>
<script type="application/json" id="inspect-data">{payload}</script>
<script>{_SCRIPT}</script>
</body>
</html>
"""


def picker(
    spec: dict[str, dict[str, Any]], mode: str, unit: int, act: np.ndarray, order: Any
) -> tuple[str, str, str]:
    """The page's controls and data, shared by the classifier and language-model pages:
    ``(mode <option>s, unit <option>s in ``order`` with their activity, the JSON payload the
    page's script recolours tokens from)``."""
    options_mode = "".join(
        f'<option value="{m}"{" selected" if m == mode else ""}>{MODE_NAMES[m]}</option>'
        for m in spec
    )
    options_unit = "".join(
        f'<option value="{u}"{" selected" if u == unit else ""}>unit {u} '
        f"(activity {act[u]:.3f})</option>"
        for u in order
    )
    data = {
        "positive": ",".join(map(str, POSITIVE)),
        "negative": ",".join(map(str, NEGATIVE)),
        "gate": ",".join(map(str, GATE)),
        "modes": {
            m: {
                "kind": s["kind"],
                "values": np.round(s["values"], 4).tolist(),
                **({"scale": np.round(s["scale"], 6).tolist()} if "scale" in s else {}),
            }
            for m, s in spec.items()
        },
    }
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    return options_mode, options_unit, payload
