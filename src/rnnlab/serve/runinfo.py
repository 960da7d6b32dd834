"""What the runs page shows of a served run: its configuration, status, report and the records
of ``metrics.jsonl``, read from fixed file names inside the run directory named on the command
line (no request value ever becomes part of a path).

The files are re-read on every request, so a run that is still training shows its new records.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["metrics_since", "run_overview"]

MAX_RECORDS = 5000  # per answer; a client asks again with the returned ``next``


def _json_file(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``, or None while it does not exist or is half written."""
    try:
        values = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None  # being replaced (writes are atomic renames) or unreadable: ask again later
    return values if isinstance(values, dict) else None


def run_overview(run_dir: Path) -> dict[str, Any]:
    """``{"status", "config", "report", "run"}``: the status from run.json ("running",
    "finished", ...; "unknown" without one), config.json, report.json (None until the run
    finishes) and run.json."""
    info = _json_file(run_dir / "run.json")
    report = _json_file(run_dir / "report.json")
    status = "finished" if report is not None else (info or {}).get("status", "unknown")
    return {
        "status": status,
        "config": _json_file(run_dir / "config.json"),
        "report": report,
        "run": info,
    }


def metrics_since(run_dir: Path, after: int) -> dict[str, Any]:
    """The complete lines of ``metrics.jsonl`` from line ``after`` on (at most
    :data:`MAX_RECORDS`): ``{"records": [...], "next": line number to ask from next, "reset":
    bool}``; ``reset`` is true when the file became shorter than ``after`` (a resumed run cut
    it), and the records then start from its first line. A last
    line still being written (no newline yet) waits for the next request; a line that is not a
    JSON object is skipped."""
    try:
        text = (run_dir / "metrics.jsonl").read_text("utf-8")
    except FileNotFoundError:
        return {"records": [], "next": 0, "reset": after > 0}
    lines = text.split("\n")[:-1]  # complete lines only: the last piece has no newline yet
    reset = after > len(lines)  # the file was truncated (a resumed run): start again
    if reset:
        after = 0
    chosen = lines[after : after + MAX_RECORDS]
    records = []
    for line in chosen:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return {"records": records, "next": after + len(chosen), "reset": reset}
