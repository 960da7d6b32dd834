"""The benchmark suite of issue 6, from the benchmarks folder.

``python benchmarks/bench.py [options]`` is ``rnnlab bench [options]`` (the options:
``--help``); a script beside this file can ``from bench import run_benchmarks, WORKLOADS`` and
build its own runs from the same workloads, models and timing code. Nothing is copied: this
file re-exports :mod:`rnnlab.bench`, which the installed package ships.
"""

from __future__ import annotations

from rnnlab.bench import format_report, main, run_benchmarks
from rnnlab.bench.suite import DEFAULT_IMPLS, environment, gemm_peaks, measure_memory
from rnnlab.bench.workloads import WORKLOADS, Workload, build_model, make_batch

__all__ = [
    "DEFAULT_IMPLS",
    "WORKLOADS",
    "Workload",
    "build_model",
    "environment",
    "format_report",
    "gemm_peaks",
    "main",
    "make_batch",
    "measure_memory",
    "run_benchmarks",
]

if __name__ == "__main__":
    raise SystemExit(main())
