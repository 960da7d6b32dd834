"""``rnnlab build-kernels``, and :func:`ensure_kernels`, which the model verbs call first.

Both build the compiled C++ kernels (:mod:`rnnlab.nn.backends._ext`) ahead of use, so a
training epoch's time never includes the compiler: one line before a compile ("building rnnlab
CPU kernels, once, about 40 s"), one when it is done with the time it took, nothing when the
kernels are already built.
"""

from __future__ import annotations

import argparse
from typing import TextIO

from rnnlab.nn.backends import _ext

__all__ = ["ensure_kernels", "main"]


def _reporter(stream: TextIO):
    def report(line: str) -> None:
        print(line, file=stream, flush=True)

    return report


def ensure_kernels(stream: TextIO) -> bool:
    """Build the kernels now if they can run here and are not built yet, writing the progress
    lines to ``stream``; a failed build (not a documented precondition such as a CPU without
    AVX-512 or ``RNNLAB_NO_EXTENSION``) is reported there too, with the fix. Returns whether the
    kernels are available."""
    module = _ext.build(report=_reporter(stream))
    if module is None and _ext.build_failed():
        print(
            f"rnnlab: using the pure-torch fused path: {_ext.unavailable_reason()} "
            f"(fix: {_ext.unavailable_fix()})",
            file=stream,
            flush=True,
        )
    return module is not None


def main(argv: list[str]) -> int:
    """``rnnlab build-kernels``: exit 0 when the kernels are built (or already were), 1 when
    they cannot be used here, printing why and how to fix it."""
    import sys

    parser = argparse.ArgumentParser(
        prog="rnnlab build-kernels",
        description="Compile rnnlab's C++ LSTM/GRU kernels now (once per machine and source "
        "version), instead of in the first model command.",
    )
    parser.parse_args(argv)
    if _ext.build(report=_reporter(sys.stdout)) is not None:
        return 0
    print(
        f"rnnlab build-kernels: the compiled kernels are unavailable: "
        f"{_ext.unavailable_reason()}; fix: {_ext.unavailable_fix()}. Training and inference "
        "use the pure-torch fused path.",
        file=sys.stderr,
    )
    return 1
