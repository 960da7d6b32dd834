"""Issue 25, item 4: building the kernels mutates nothing module-level (torch's
``_prepare_ldflags`` appends to the list it is given, which changed the reported build folder),
and a killed build takes its compilers with it (they run in a process group of their own that
dies with its parent). No compile here: the kernels' sources are never built by these tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rnnlab.nn.backends import _ext
from rnnlab.nn.backends._ext.isolated import IsolatedError, run_isolated

SRC = str(Path(__file__).resolve().parents[1] / "src")


def test_torch_gets_copies_of_the_flags_so_the_build_folder_stays_the_same(monkeypatch, tmp_path):
    import torch.utils.cpp_extension as cpp

    seen = {}

    def jit_compile(name, sources, cflags, cuda_cflags, sycl_cflags, ldflags, *rest, **kwargs):
        cpp._prepare_ldflags(ldflags, False, False, False, False)  # what torch's load does
        seen.update(name=name, ldflags=list(ldflags))

    folder = _ext.build_directory()
    monkeypatch.setattr(cpp, "_jit_compile", jit_compile)
    _ext.compile_into(str(tmp_path / folder.name))
    assert len(seen["ldflags"]) > 2  # torch appended its own flags to the copy it was given
    assert _ext._LDFLAGS == ("-fopenmp", "-lmvec") and isinstance(_ext._CFLAGS, tuple)
    assert _ext.build_directory() == folder and seen["name"] == folder.name


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_killing_the_parent_kills_the_isolated_group(tmp_path):
    """A parent runs ``sleep 300`` isolated; ``kill -9`` of the parent ends the sleep too."""
    pid_file = tmp_path / "leader"
    script = (
        "import os, subprocess, sys\n"
        "from rnnlab.nn.backends._ext import isolated\n"
        "real = subprocess.Popen\n"
        "def popen(*a, **k):\n"
        "    child = real(*a, **k)\n"
        "    open(sys.argv[1], 'w').write(str(child.pid))\n"
        "    return child\n"
        "subprocess.Popen = popen\n"
        "isolated.run_isolated('subprocess:call', [['sleep', '300']])\n"
    )
    env = dict(os.environ, PYTHONPATH=SRC)
    parent = subprocess.Popen([sys.executable, "-c", script, str(pid_file)], env=env)
    try:
        deadline = time.monotonic() + 60
        while not (pid_file.is_file() and pid_file.read_text()):
            assert time.monotonic() < deadline and parent.poll() is None
            time.sleep(0.05)
        leader = int(pid_file.read_text())
        assert os.getpgid(leader) == leader  # the child leads a process group of its own
        time.sleep(1.0)  # the sleep has started inside that group
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 10
        while _group_alive(leader):
            assert time.monotonic() < deadline, "the isolated group outlived its parent"
            time.sleep(0.1)
    finally:
        parent.kill()
        parent.wait()


def test_a_failing_function_is_an_error_with_its_output():
    with pytest.raises(IsolatedError, match=r"subprocess:check_call exited with status 1"):
        run_isolated("subprocess:check_call", [["sh", "-c", "echo compiler said no; exit 3"]])
