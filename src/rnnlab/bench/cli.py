"""The ``rnnlab bench`` command: parse arguments, run the suite, print tables, write JSON."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

from rnnlab import argtypes
from rnnlab.allocator import retain_freed_memory
from rnnlab.bench.int8 import INT8_IMPLS
from rnnlab.bench.suite import DEFAULT_IMPLS, MIN_ROWS, memory_probe, run_benchmarks
from rnnlab.bench.workloads import WORKLOADS
from rnnlab.denormals import flush_denormals
from rnnlab.files import OutputRefusedError, atomic_write, check_output
from rnnlab.nn.backends import _ext

__all__ = ["main", "format_report", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rnnlab bench",
        description="Training and inference throughput of rnnlab against torch.nn.LSTM/GRU "
        "and Keras, with the GEMM peak measured in the same run.",
    )
    p.add_argument("--workloads", default=",".join(WORKLOADS), help="e.g. A,B (default: all)")
    p.add_argument("--impls", default=",".join(DEFAULT_IMPLS), help="implementations to run")
    p.add_argument(
        "--modes",
        default="train,infer",
        help="train, infer, token (language models: one token of generation, batch 1, from the "
        "carried state; samples/s is tokens/s and ms the per-token latency), comma-separated",
    )
    p.add_argument(
        "--repeats", type=argtypes.positive_int, default=7, help="interleaved repeats (default 7)"
    )
    p.add_argument(
        "--budget",
        type=argtypes.positive_float,
        default=20.0,
        help="seconds per slow implementation and mode (fewer repeats beyond it)",
    )
    p.add_argument("--quick", action="store_true", help="3 repeats, 3 s budget, no memory")
    p.add_argument(
        "--flush-denormals",
        action="store_true",
        help="flush subnormal floats to zero on every thread, as rnnlab train does "
        "(rnnlab.denormals); the default leaves the CPU's modes as torch has them",
    )
    p.add_argument(
        "--threads",
        type=argtypes.threads,
        help="torch CPU threads for every row (default: torch's choice); pin the process too "
        "(taskset) for timings on a shared machine",
    )
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory probes")
    p.add_argument(
        "--retain-memory",
        action="store_true",
        help="keep freed memory in the process (rnnlab.allocator.retain_freed_memory, what "
        "rnnlab train does) for every implementation alike; default: glibc's own behaviour",
    )
    p.add_argument("--json", metavar="FILE", help="write everything to FILE as JSON (a new file)")
    p.add_argument("--force", action="store_true", help="--json: replace an existing FILE")
    p.add_argument("--memory-probe", help=argparse.SUPPRESS)  # child process of the memory probe
    return p


def _split(value: str, allowed, what: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in allowed]
    if bad or not items:
        raise SystemExit(f"rnnlab bench: expected {what} from {sorted(allowed)}, got {value!r}")
    return items


CLIFF = 0.10  # a train or infer step under this share of the GEMM peak is reported as a cliff


def format_report(report: dict) -> str:
    """Plain-text tables: environment, GEMM peaks, one table per workload, memory."""
    env = report["environment"]
    lines = ["Environment: " + ", ".join(f"{k}={v}" for k, v in env.items()), ""]
    lines.append("GEMM peak, GFLOP/s (M, K, N):")
    for name, g in report["gemm"].items():
        one = f"  oneDNN {g['onednn_gflops']:7.1f}" if "onednn_gflops" in g else ""
        bf = f"  oneDNN bf16 {g['onednn_bf16_gflops']:7.1f}" if "onednn_bf16_gflops" in g else ""
        i8 = f"  int8 dynamic {g['int8_dynamic_gflops']:7.1f}" if "int8_dynamic_gflops" in g else ""
        lines.append(
            f"  {name:10s} {str(tuple(g['shape'])):22s} MKL {g['mkl_gflops']:7.1f}{one}{bf}{i8}"
        )
    header = (
        f"  {'impl':17s} {'mode':5s} {'samples/s':>10s} {'(min-max)':>19s} {'ms':>9s} "
        f"{'x base':>7s} {'x torch':>7s} {'GFLOP/s':>8s} {'%MKL':>5s} {'%oDNN':>5s} "
        f"{'%roof':>5s} n"
    )
    for wl in dict.fromkeys(r["workload"] for r in report["results"]):
        lines += ["", f"Workload {wl}:", header]
        for r in (r for r in report["results"] if r["workload"] == wl):
            ratio = lambda v: f"{v:7.2f}" if v is not None else "      -"  # noqa: E731
            lines.append(
                f"  {r['impl']:17s} {r['mode']:5s} {r['samples_per_second']:10.0f} "
                f"({r['samples_per_second_min']:8.0f}-{r['samples_per_second_max']:8.0f}) "
                f"{r['step_ms']:9.2f} {ratio(r['ratio_vs_baseline'])} "
                f"{ratio(r['ratio_vs_torch_lstm'])} {r['recurrent_gflops']:8.1f} "
                f"{100 * r['fraction_of_mkl_peak']:5.0f} "
                f"{100 * r.get('fraction_of_onednn_peak', float('nan')):5.0f} "
                f"{_percent(r.get('roofline_share'))} {r['repeats']}"
            )
        lines += _roofline_lines([r for r in report["results"] if r["workload"] == wl])
    if report["memory"]:
        lines += ["", "Peak memory of a training step (RSS high-water mark, MiB):"]
        for key, m in report["memory"].items():
            if "error" in m:
                lines.append(f"  {key:22s} failed: {m['error']}")
            else:
                lines.append(
                    f"  {key:22s} peak {m['peak_rss_mb']:8.0f}  growth over the "
                    f"pre-step RSS {m['step_peak_mb']:8.0f}"
                )
    cliffs = [
        f"{r['workload']} {r['impl']} {r['mode']} ({100 * r['fraction_of_mkl_peak']:.0f}%)"
        for r in report["results"]
        if r["mode"] != "token" and r["fraction_of_mkl_peak"] < CLIFF
    ]
    if cliffs:  # token rows (batch 1) are bound by reading the weights, not a cliff
        lines += ["", f"Cliffs (under {CLIFF:.0%} of the MKL GEMM peak): " + ", ".join(cliffs)]
    lines += _int8_lines(report["results"])
    for impl, why in report["skipped"].items():
        lines.append(f"Skipped {impl}: {why}")
    return "\n".join(lines)


def _percent(share: float | None) -> str:
    return "    -" if share is None else f"{100 * share:5.0f}"


def _roofline_lines(rows: list[dict]) -> list[str]:
    """Each mode's roofline (rnnlab.bench.roofline: the step's recurrent products at their
    isolated rates), with the rows it bounds; %roof above is each row's share of its own."""
    lines = []
    for mode in dict.fromkeys(r["mode"] for r in rows):
        groups: dict[float, list[str]] = {}
        for r in rows:
            if r["mode"] == mode and r.get("roofline_ms") is not None:
                groups.setdefault(round(r["roofline_ms"], 3), []).append(r["impl"])
        if groups:
            lines.append(
                f"  roofline of a {mode} step (its recurrent GEMMs at their isolated rates): "
                + "; ".join(f"{ms:.2f} ms for {', '.join(impls)}" for ms, impls in groups.items())
            )
    return lines


def _int8_lines(results: list[dict]) -> list[str]:
    """rnnlab-int8 against its float32 row (rnnlab, backend auto) and against torch-int8."""
    by_key = {(r["workload"], r["impl"], r["mode"]): r for r in results}
    lines = []
    for r in results:
        if r["impl"] != "rnnlab-int8":
            continue
        ratios = []
        for other, label in (("rnnlab", "rnnlab float32"), ("torch-int8", "torch int8")):
            o = by_key.get((r["workload"], other, r["mode"]))
            if o:
                ratios.append(f"{r['samples_per_second'] / o['samples_per_second']:.2f}x {label}")
        if ratios:
            lines.append(f"  {r['workload']} {r['mode']:5s} rnnlab-int8: " + ", ".join(ratios))
    return ["", "int8 (same run):", *lines] if lines else []


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.memory_probe:
        print(json.dumps(memory_probe(args.memory_probe)))
        return 0
    if args.json:  # refused now, not after minutes of benchmarks
        try:
            check_output(args.json, args.force, flag="--json")
        except OutputRefusedError as exc:  # a user's error: one line, exit status 2
            print(f"rnnlab bench: error: {exc}", file=sys.stderr)
            return 2
    workloads = _split(args.workloads, WORKLOADS, "workloads")
    known = set(DEFAULT_IMPLS) | {"rnnlab-gru", "torch-gru", "rnnlab-unfolded"} | set(MIN_ROWS)
    known |= set(INT8_IMPLS)
    impls = _split(args.impls, known, "impls")
    modes = _split(args.modes, {"train", "infer", "token"}, "modes")
    repeats, budget, memory = args.repeats, args.budget, not args.no_memory
    if args.quick:
        repeats, budget, memory = 3, 3.0, False
    if args.threads:
        torch.set_num_threads(args.threads)  # before anything starts OpenMP's pool
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the memory probes' processes
    retained = retain_freed_memory() if args.retain_memory else False
    flushed = 0
    if args.flush_denormals:
        _ext.load()  # built first: flush_denormals sets the OpenMP pool through it
        flushed = flush_denormals()
    if args.retain_memory and not retained:
        raise SystemExit("rnnlab bench: --retain-memory needs glibc's mallopt, not found here")
    start = time.time()
    report = run_benchmarks(
        workloads,
        tuple(impls),
        tuple(modes),
        repeats,
        budget,
        memory,
        progress=lambda msg: print(f"[{time.time() - start:6.1f}s] {msg}", file=sys.stderr),
    )
    report["command"] = "rnnlab bench " + " ".join(argv if argv is not None else sys.argv[1:])
    report["environment"]["allocator"] = (
        "glibc, freed memory retained (--retain-memory)" if retained else "default"
    )
    report["environment"]["denormals"] = (
        f"flushed to zero on {flushed} threads (--flush-denormals)" if flushed else "kept"
    )
    report["wall_seconds"] = time.time() - start
    print(format_report(report))
    if args.json:  # whole or not at all: a partial file would read as a finished run
        atomic_write(args.json, json.dumps(report, indent=2).encode("utf-8"))
    return 0
