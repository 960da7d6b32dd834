"""``rnnlab train PRESET`` as a whole command against its plain-PyTorch peer (issue 24).

For each preset (mnist-seed, imdb-seed) and each of ``--repeats`` rounds, this runs the rnnlab
command and the peer program of the same recipe (``benchmarks/peers/``) as subprocesses, one
after the other, in alternating order (rnnlab first in even rounds, the peer first in odd ones,
so a drift in the machine's load falls on both), each pinned with ``taskset`` to ``--core`` and
given ``--threads`` threads. Each run is measured from outside (wall seconds of the process,
Python's start and imports included) and read back from inside (its own training seconds and
final test accuracy: rnnlab's ``report.json``, the peer's ``--out`` JSON). The speed figure is
the ratio peer wall / rnnlab wall per round and its median: above 1, rnnlab's command is faster.

With ``--lock FILE`` every run first takes an exclusive ``flock`` on FILE (released after it),
so runs of other programs that take the same lock never overlap a measured one; the wait for
the lock is not timed. Example::

    PYTHONPATH=src python benchmarks/whole_commands.py --data-dir ../shared/data \\
        --presets mnist-seed --repeats 3 --core 1 --threads 1 --out whole.json

``--epochs N`` trains both programs for N epochs instead of the preset's (a shorter, partial
measurement of a long preset; said in the output).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch

import rnnlab

ROOT = Path(__file__).resolve().parents[1]
PEERS = {"mnist-seed": "mnist_seed.py", "imdb-seed": "imdb_seed.py"}


@contextmanager
def held(lock: str | None):
    """An exclusive flock on ``lock`` for the duration (nothing without one)."""
    if lock is None:
        yield
        return
    with open(lock, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def rnnlab_command(preset: str, args: argparse.Namespace, out: Path) -> list[str]:
    """The command a user types: the venv's ``rnnlab`` script (``python -m rnnlab`` without)."""
    script = Path(sys.executable).with_name("rnnlab")
    head = [str(script)] if script.is_file() else [sys.executable, "-m", "rnnlab"]
    cmd = [*head, "train", preset, "--threads", str(args.threads), "--no-progress"]
    cmd += ["--out", str(out)]
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    if args.epochs:
        cmd += ["--set", f"train.epochs={args.epochs}"]
    return cmd


def peer_command(preset: str, args: argparse.Namespace, out: Path) -> list[str]:
    cmd = [sys.executable, str(ROOT / "benchmarks" / "peers" / PEERS[preset])]
    cmd += ["--threads", str(args.threads), "--out", str(out)]
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    if args.epochs:
        cmd += ["--epochs", str(args.epochs)]
    return cmd


def run_one(kind: str, preset: str, args: argparse.Namespace, scratch: Path) -> dict:
    """One pinned run of ``kind`` ("rnnlab" or "peer"): wall seconds, its own training
    seconds and test accuracy, the load average just before it, the tail of its output."""
    target = scratch / f"{kind}-{preset}-{time.monotonic_ns()}"
    if kind == "rnnlab":
        cmd = rnnlab_command(preset, args, target)
    else:
        cmd = peer_command(preset, args, target.with_suffix(".json"))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": str(args.threads)}
    with held(args.lock):
        load = os.getloadavg()[0]
        start = time.perf_counter()
        done = subprocess.run(
            ["taskset", "-c", str(args.core), *cmd], env=env, capture_output=True, text=True
        )
        wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    if kind == "rnnlab":
        report = json.loads((target / "report.json").read_text())
        inside = {"train_s": report["train_seconds"], "inside_s": report["wall_seconds"]}
        inside["test_accuracy"] = report["test_accuracy"]
        shutil.rmtree(target)
    else:
        result = json.loads(target.with_suffix(".json").read_text())
        inside = {"train_s": result["train_s"], "inside_s": result["total_s"]}
        inside["test_accuracy"] = result["test_accuracy"]
    tail = done.stdout.strip().splitlines()[-3:]
    return {"wall_s": wall, **inside, "load_before": load, "command": cmd, "tail": tail}


def measure(preset: str, args: argparse.Namespace, scratch: Path) -> dict:
    rounds = []
    for r in range(args.repeats):
        order = ("rnnlab", "peer") if r % 2 == 0 else ("peer", "rnnlab")
        runs = {kind: run_one(kind, preset, args, scratch) for kind in order}
        ratio = runs["peer"]["wall_s"] / runs["rnnlab"]["wall_s"]
        train_ratio = runs["peer"]["train_s"] / runs["rnnlab"]["train_s"]
        rounds.append({"order": order, **runs, "ratio": ratio, "train_ratio": train_ratio})
        print(
            f"{preset} round {r + 1} ({' then '.join(order)}): "
            + "; ".join(
                f"{k} {runs[k]['wall_s']:.1f} s wall, {runs[k]['train_s']:.1f} s training, "
                f"acc {runs[k]['test_accuracy']:.4f}, load {runs[k]['load_before']:.2f}"
                for k in ("rnnlab", "peer")
            )
            + f"; peer/rnnlab {ratio:.3f} (training {train_ratio:.3f})",
            flush=True,
        )

    def spread(key: str, kind: str | None = None) -> dict:
        xs = [r[key] if kind is None else r[kind][key] for r in rounds]
        return {"median": statistics.median(xs), "min": min(xs), "max": max(xs)}

    summary = {
        "ratio": spread("ratio"),
        "train_ratio": spread("train_ratio"),
        **{f"{k}_{q}": spread(q, k) for k in ("rnnlab", "peer") for q in ("wall_s", "train_s")},
    }
    r = summary["ratio"]
    print(
        f"{preset}: peer/rnnlab wall median {r['median']:.3f} (min {r['min']:.3f}, max "
        f"{r['max']:.3f}) over {len(rounds)} rounds; training "
        f"{summary['train_ratio']['median']:.3f}",
        flush=True,
    )
    return {"rounds": rounds, "summary": summary}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", nargs="+", default=list(PEERS), choices=list(PEERS))
    p.add_argument("--data-dir", default=None)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--core", type=int, default=1, help="the CPU core taskset pins each run to")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--epochs", type=int, default=None, help="override the preset's epochs")
    p.add_argument("--lock", default=None, help="flock this file around each run")
    p.add_argument("--out", default=None, help="JSON result file")
    args = p.parse_args()
    if shutil.which("taskset") is None:
        raise SystemExit("whole_commands expected taskset (util-linux) on PATH, got none")
    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "rnnlab": rnnlab.__version__,
        "cpu_count": os.cpu_count(),
        "core": args.core,
        "threads": args.threads,
        "epochs": args.epochs or "preset's",
    }
    print("whole commands:", json.dumps(env), flush=True)
    results = {"environment": env, "arguments": vars(args), "presets": {}}
    with tempfile.TemporaryDirectory(prefix="whole_commands_") as scratch:
        for preset in args.presets:
            results["presets"][preset] = measure(preset, args, Path(scratch))
            if args.out:  # after each preset, so a long run keeps what it measured
                Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
