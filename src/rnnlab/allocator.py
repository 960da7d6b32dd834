"""Keep freed memory in the process instead of returning it to the kernel (glibc malloc).

Why: by default glibc serves every allocation above a threshold (128 KiB, rising to at most
32 MiB as large blocks are freed) with a fresh ``mmap`` and gives it back with ``munmap`` when
the tensor is freed, and it trims the top of the heap once more than twice that is free. A
training step allocates and frees the same large tensors (activations, gate buffers, gradients)
every time, so each step page-faults all of them in again, and the kernel zeroes every page.
On a 2-core machine, torch.nn.LSTM trained the tutorial's IMDB model 48% faster
with retained memory (benchmarks/RESULTS.md).

With :func:`retain_freed_memory` every block comes from the heap and freed ones stay there for
the next step to reuse: the resident size stays at its peak instead of shrinking between steps.
It changes where memory comes from, not how much a step needs, but freed blocks of many sizes
can fragment the heap. On one epoch of the ``imdb`` preset (length-bucketed batches) the peak
RSS rose from 3.96 to 4.44 GB while the epoch took 74 s instead of 87 s. The alternatives
measured on that epoch: only stopping the trim (which also freezes glibc's mmap threshold at
128 KiB) took 145 s, and a 32 MiB threshold with no trim 89 s, as it still maps and unmaps the
largest blocks.

``rnnlab train``, ``evaluate``, ``predict`` and the checkout's experiments (``projects/``)
call it at start (both for rnnlab's layers and for ``model.backend="torch"``);
``RNNLAB_RETAIN_MEMORY=0`` turns that off. Library users call it themselves if they want it: a
library should not change a process's allocator on import.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["retain_freed_memory", "retention_wanted"]

# mallopt parameters from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_TRIM_THRESHOLD = 2**31 - 1  # the largest value mallopt takes: in effect, never trim

_done: bool | None = None


def retention_wanted() -> bool:
    """False when ``RNNLAB_RETAIN_MEMORY`` is set to 0, false, no or off."""
    value = os.environ.get("RNNLAB_RETAIN_MEMORY", "1").strip().lower()
    return value not in ("0", "false", "no", "off")


def retain_freed_memory() -> bool:
    """Tell glibc malloc to keep freed memory for reuse; returns whether it took effect (False
    on other C libraries or platforms, where nothing is changed). Idempotent."""
    global _done
    if _done is not None:
        return _done
    _done = False
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    # No block is mapped on its own (M_MMAP_MAX 0: every size comes from the heap, so the
    # 40 MiB gate buffers of a large batch are reused too; a threshold cannot do that, glibc
    # caps it at 32 MiB), and the heap's free top is never given back.
    _done = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
    return _done
