"""rnnlab.allocator: glibc keeps freed memory for reuse instead of unmapping and trimming it."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap

import pytest

from rnnlab import allocator

# The module, not the function that rnnlab.cli re-exports under the same name.
cli_main = importlib.import_module("rnnlab.cli.main")

glibc_only = pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.confstr("CS_GNU_LIBC_VERSION") is None,
    reason="mallopt is glibc's",
)

# Frees a 64 MiB tensor and reports how much free memory the heap then holds (mallinfo2's
# fordblks): glibc by default maps such a block on its own and unmaps it on free (about 0 MiB
# left); after retain_freed_memory it comes from the heap and stays there.
_PROBE = textwrap.dedent(
    """
    import ctypes, sys, torch
    from rnnlab import allocator
    if sys.argv[1] == "retain":
        assert allocator.retain_freed_memory()
    class Info(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in
                    "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks "
                    "keepcost".split()]
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = Info
    x = torch.ones(16 * 1024 * 1024)  # 64 MiB
    del x
    print(libc.mallinfo2().fordblks // 2**20)
    """
)


def _free_heap_mib(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True
    )
    return int(done.stdout.strip())


@glibc_only
def test_freed_blocks_stay_in_the_heap_only_when_retained() -> None:
    assert _free_heap_mib("default") < 16
    assert _free_heap_mib("retain") >= 64


@pytest.mark.parametrize(
    ("value", "wanted"),
    [(None, True), ("1", True), ("0", False), ("off", False), ("False", False), ("yes", True)],
)
def test_retention_can_be_turned_off(
    monkeypatch: pytest.MonkeyPatch, value: str | None, wanted: bool
) -> None:
    if value is None:
        monkeypatch.delenv("RNNLAB_RETAIN_MEMORY", raising=False)
    else:
        monkeypatch.setenv("RNNLAB_RETAIN_MEMORY", value)
    assert allocator.retention_wanted() is wanted


@pytest.mark.parametrize(("verb", "called"), [("train", True), ("presets", False)])
def test_cli_retains_memory_for_verbs_that_run_models(
    monkeypatch: pytest.MonkeyPatch, verb: str, called: bool
) -> None:
    calls = []
    monkeypatch.delenv("RNNLAB_RETAIN_MEMORY", raising=False)
    monkeypatch.setattr(cli_main, "retain_freed_memory", lambda: calls.append(1))
    monkeypatch.setattr(cli_main, "build_parser", lambda: _Stop())
    with pytest.raises(_StoppedError):
        cli_main.main([verb])
    assert bool(calls) is called


class _StoppedError(Exception):
    pass


class _Stop:
    """A parser that stops main() right after the allocator decision."""

    def parse_args(self, argv: list[str]) -> None:
        raise _StoppedError
