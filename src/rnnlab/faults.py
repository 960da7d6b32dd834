"""A testing hook for fault injection: ``RNNLAB_FAULT_AT=<point>:<n>`` makes the process kill
itself with SIGKILL (no handler, no cleanup: as ``kill -9`` or a power cut would) the ``n``-th
time it reaches the named point. The fault-injection tests (``tests/test_faults.py``) use it to
stop a run at exact places: during the kernel build, mid-step, between a checkpoint's tensor
file and its metadata, mid-evaluation, just before ``report.json``. It is not for users: unset
(always, outside those tests) :func:`fault_point` does nothing but read the environment.

The points, in the order a run meets them: ``kernel-build`` (holding rnnlab's build lock),
``claimed`` (a fresh run directory claimed), ``data-load`` (before the task's data is read),
``step`` (after the backward pass, before the optimizer step), ``checkpoint-tensors`` (a
checkpoint's tensor file written, its ``TAG.json`` not yet), ``checkpoint-meta`` (``TAG.json``
written, older tensor files not yet removed), ``evaluate`` (after an evaluation batch),
``report`` (everything written but ``report.json``).
"""

from __future__ import annotations

import os
import signal

__all__ = ["ENV_VAR", "POINTS", "fault_point"]

ENV_VAR = "RNNLAB_FAULT_AT"
POINTS = (
    "kernel-build",
    "claimed",
    "data-load",
    "step",
    "checkpoint-tensors",
    "checkpoint-meta",
    "evaluate",
    "report",
)
_reached: dict[str, int] = {}


def fault_point(name: str) -> None:
    """Count a visit to point ``name``; SIGKILL this process at the visit ``RNNLAB_FAULT_AT``
    names (see the module docstring)."""
    spec = os.environ.get(ENV_VAR)
    if not spec:
        return
    assert name in POINTS, f"fault point {name!r} is not in POINTS"
    point, _, count = spec.rpartition(":")
    if point != name:
        return
    _reached[name] = _reached.get(name, 0) + 1
    if str(_reached[name]) == count.strip():
        os.kill(os.getpid(), signal.SIGKILL)
