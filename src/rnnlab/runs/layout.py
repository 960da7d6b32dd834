"""The run directory: its layout, and reading what a run left there.

A run directory holds::

    config.json          the resolved configuration
    run.json             preset, data directory, status ("running", "finished", "interrupted",
                         "diverged"), argv, versions
    <artifacts>          what the task keeps beside the weights (text: vocab.json, the word
                         index new reviews are encoded with)
    metrics.jsonl        one line per logged step and per epoch
    checkpoints/         last.json + last-<step>.safetensors, best.json + best-<step>...
    learning_curve.png   loss and the first metric against steps
    report.json          the final numbers (written last: its presence means "finished")
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from rnnlab.config import Config, ConfigError
from rnnlab.files import atomic_write, inside_run_checkpoints

__all__ = [
    "RunError",
    "RunWarning",
    "check_new_out",
    "default_run_dir",
    "json_bytes",
    "read_config",
    "read_json",
    "run_data_dir",
]
PathLike = str | os.PathLike[str]


class RunError(ValueError):
    """A run directory is missing, foreign, finished, not writable, or its run failed."""


class RunWarning(UserWarning):
    """A run directory disagrees with itself (e.g. an edited config.json); the checkpoint wins."""


def json_bytes(values: Any) -> bytes:
    return (json.dumps(values, indent=2) + "\n").encode("utf-8")


def default_run_dir(name: str) -> Path:
    return Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def check_new_out(out: Path, create: bool = False) -> None:
    """``out`` must be new or an empty directory (the ``--out`` of a fresh run), or hold an
    rnnlab claim (``.rnnlab.lock``: :func:`rnnlab.runs.lock.claim_new_run_dir` decides whether
    it was abandoned), and never be inside a run's ``checkpoints/``; with ``create``, make it
    and check that it is writable."""
    checkpoints = inside_run_checkpoints(out)
    if checkpoints is not None:
        raise RunError(
            f"--out {out}: expected a directory outside a run's checkpoints/, got one inside "
            f"{checkpoints}"
        )
    claimed = (out / ".rnnlab.lock").is_file()
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not claimed)):
        raise RunError(
            f"--out {out}: expected a new or empty directory, got an existing "
            f"{'file' if not out.is_dir() else 'non-empty directory'} (resume a run "
            "with --resume, or choose another --out)"
        )
    if not create:
        return
    try:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / ".write-test", b"")
        (out / ".write-test").unlink()
    except OSError as exc:
        raise RunError(
            f"--out {out}: expected a writable directory, got {type(exc).__name__}: {exc}"
        ) from exc


def read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text("utf-8"))
    except FileNotFoundError as exc:
        raise RunError(f"{path}: expected {what}, got no such file") from exc
    except (OSError, ValueError) as exc:
        raise RunError(f"{path}: expected {what}, got {type(exc).__name__}: {exc}") from exc


def read_config(run_dir: PathLike) -> Config:
    """The configuration of an existing run directory (a clear error for a foreign folder)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunError(
            f"{run_dir}: expected an rnnlab run directory, got "
            f"{'a file' if run_dir.exists() else 'nothing there'}"
        )
    if (run_dir / ".rnnlab.lock").is_file() and not (run_dir / "config.json").is_file():
        raise RunError(
            f"{run_dir.absolute()}: expected an rnnlab run, got only the claim of a run that "
            "stopped before writing anything; start it again with `rnnlab train PRESET --out "
            f"{run_dir}` (the directory is reused)"
        )
    values = read_json(run_dir / "config.json", "an rnnlab run's config.json")
    try:
        return Config.from_dict(values)
    except ConfigError as exc:
        raise RunError(
            f"{run_dir / 'config.json'}: expected an rnnlab configuration, got "
            f"an incompatible one ({exc})"
        ) from exc


def check_data_dir(config: Config, data_dir: PathLike | None) -> None:
    """A ``--data-dir`` must exist and be read: a preset on the package's sample
    (``data.sample``) or on a ``data.path`` folder reads no data directory, so one given there
    is refused rather than ignored (it would be recorded in run.json yet unused)."""
    if data_dir is None:
        return
    path = Path(data_dir)
    if not path.is_dir():
        found = "a file" if path.exists() else "nothing there"
        raise RunError(f"--data-dir {path}: expected an existing directory, got {found}")
    d = config.data
    if d.sample or d.path:
        what = (
            "the sample shipped in the package (data.sample=true)"
            if d.sample
            else f"data.path={d.path!r}"
        )
        raise RunError(
            f"--data-dir {path}: expected no --data-dir for a run that reads {what}, got one; "
            "drop --data-dir, or train a preset that reads a data directory (e.g. "
            f"--set data.sample=false)"
        )


def run_data_dir(run_dir: PathLike, data_dir: PathLike | None = None) -> PathLike | None:
    """``data_dir`` if given, else the data directory the run was trained on (run.json)."""
    if data_dir is not None:
        return data_dir
    info = Path(run_dir) / "run.json"
    if not info.is_file():
        return None
    return read_json(info, "an rnnlab run's run.json").get("data_dir")
