"""``rnnlab bench``: the benchmark suite of issue 6 (see :mod:`rnnlab.bench.suite`).

``main(argv)`` is the command (``python -m rnnlab.bench``), ``run_benchmarks(...)`` the
library function behind it.
"""

from rnnlab.bench.cli import format_report, main
from rnnlab.bench.suite import run_benchmarks

__all__ = ["main", "run_benchmarks", "format_report"]
