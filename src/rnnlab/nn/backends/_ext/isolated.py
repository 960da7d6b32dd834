"""Run a function in a child process that leads its own process group and dies with its parent.

The kernels' compile (:func:`rnnlab.nn.backends._ext.build`) runs ninja, g++ and cc1plus. Run in
the calling process, a ``kill -9`` of ``rnnlab build-kernels`` left them compiling as orphans.
Here the work runs in a child started with ``start_new_session`` (its own process group, which
ninja and the compilers inherit); a watchdog thread in the child checks every
:data:`POLL_S` seconds that its parent still lives and otherwise kills the whole group, and the
parent kills the group too when it is interrupted (Ctrl-C, an exception). Running apart also
means nothing torch does to its arguments (``_prepare_ldflags`` appends to the list it is given)
reaches the parent's module-level settings.

The child is ``python -m rnnlab.nn.backends._ext.isolated PARENT_PID MODULE:FUNCTION JSON_ARGS``.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

__all__ = ["POLL_S", "IsolatedError", "run_isolated"]

POLL_S = 0.2


class IsolatedError(RuntimeError):
    """The function failed in the child process (its error's last lines are in the message)."""


def run_isolated(function: str, args: list[Any], timeout: float | None = None) -> None:
    """Call ``function`` (``"module:name"``) with the JSON-able ``args`` in a child process
    leading its own process group; return when it has finished, raise :class:`IsolatedError`
    when it failed. Whatever the child started is killed with it if this process dies or is
    interrupted."""
    command = [sys.executable, "-m", __name__, str(os.getpid()), function, json.dumps(args)]
    child = subprocess.Popen(
        command,
        start_new_session=True,  # a process group of its own: ninja and cc1plus join it
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        output, _ = child.communicate(timeout=timeout)
    except BaseException:
        _kill_group(child.pid)
        child.wait()
        raise
    if child.returncode != 0:
        tail = "\n".join(output.strip().splitlines()[-20:])
        raise IsolatedError(f"{function} exited with status {child.returncode}: {tail}")


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # already gone
        os.killpg(pgid, signal.SIGKILL)


def _watch_parent(parent: int) -> None:
    """Kill this process group (this process included) once ``parent`` is gone."""
    while os.getppid() == parent:
        time.sleep(POLL_S)
    os.killpg(os.getpgrp(), signal.SIGKILL)


def _main(argv: list[str]) -> int:
    parent, function, args = int(argv[0]), argv[1], json.loads(argv[2])
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    module, name = function.split(":")
    getattr(importlib.import_module(module), name)(*args)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
