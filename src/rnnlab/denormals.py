"""Flush subnormal floats to zero in rnnlab's own threads (x86 flush-to-zero and
denormals-are-zero).

Why: a float32 below 1.18e-38 is subnormal, and on x86 every arithmetic operation that reads or
writes one takes a microcode assist, about a hundred times the cost of a normal one. A
recurrent network's gradient reaches that range on its own: it shrinks at every step it flows
back (the vanishing gradient of Bengio et al. 1994), and at workload E (pixel MNIST, 784 steps)
the gradient of the loss with respect to x_t falls from about 1e-4 at the last step to 1e-21
eighty steps earlier, is subnormal about 180 steps back and exactly zero beyond. On a 2-core
Intel Xeon one fp32 training step of rnnlab's LSTM there took 1,950 ms, and 150 ms with these
modes on (benchmarks/RESULTS.md, "Subnormal floats"). Flushing changes only values below
1.18e-38, which are read as (and rounded to) zero: nothing a float32 model can tell apart from
the zero it becomes a few steps later.

:func:`flush_denormals` sets both modes on the calling thread (``torch.set_flush_denormal``)
and, where rnnlab's compiled extension is built, on every thread of the OpenMP pool that ATen,
oneDNN and MKL compute on (a thread keeps its modes; threads started later copy them from the
thread that starts them). ``rnnlab train``, ``evaluate``, ``predict`` and the checkout's
experiments (``projects/``) call it at start; ``RNNLAB_FLUSH_DENORMALS=0`` turns that off.
Library users call it themselves (or ``torch.set_flush_denormal(True)`` before their first
parallel op, which covers the threads started after it): a library should not change a
process's floating-point modes on import.
"""

from __future__ import annotations

import os

import torch

from rnnlab.nn.backends import _ext

__all__ = ["flush_denormals", "flush_wanted"]


def flush_wanted() -> bool:
    """False when ``RNNLAB_FLUSH_DENORMALS`` is set to 0, false, no or off."""
    value = os.environ.get("RNNLAB_FLUSH_DENORMALS", "1").strip().lower()
    return value not in ("0", "false", "no", "off")


def flush_denormals(enabled: bool = True) -> int:
    """Turn flush-to-zero and denormals-are-zero on (or off, ``enabled=False``); returns how
    many threads were set: 0 where the CPU has no such modes, 1 (the calling thread) where the
    compiled extension is not built, else the calling thread's OpenMP team. Never builds the
    extension."""
    if not torch.set_flush_denormal(enabled):
        return 0
    module = _ext.load() if _ext.is_built() else None
    return module.set_flush_denormals(enabled) if module is not None else 1
