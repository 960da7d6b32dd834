"""``rnnlab info``: what rnnlab will run on this machine, and why.

Versions, threads, the CPU's capabilities (AVX-512, avx512_bf16), whether oneDNN and the
compiled kernels are available, and which backend ``backend="auto"`` picks for LSTM and GRU;
when it falls back to the pure-torch fused path, why and how to fix it. ``--json`` prints the
same as one JSON object (the keys of :func:`machine_info`).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path
from typing import Any

__all__ = ["cpu_flags", "machine_info", "main"]


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (empty where there is none: not Linux)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def _auto_backend(cell_type: type) -> dict[str, Any]:
    """The path ``backend="auto"`` takes for a float32 CPU layer of ``cell_type``."""
    import torch

    from rnnlab.nn.backends import _ext, compiled

    cell = cell_type(4, 8)
    reason = compiled.compiled_unavailable(cell, torch.zeros(1, 4))
    if reason is None:
        return {"backend": "compiled", "reason": None, "fix": None}
    return {"backend": "fused", "reason": reason, "fix": _ext.unavailable_fix()}


def machine_info() -> dict[str, Any]:
    """Versions, threads, CPU capabilities, oneDNN, the compiled kernels and the ``auto``
    backend of LSTM and GRU, as a JSON-ready dict. Builds the kernels if they are not yet."""
    import numpy as np
    import torch

    import rnnlab
    from rnnlab.nn.backends import _ext
    from rnnlab.nn.cells import GRUCell, LSTMCell

    module = _ext.load()
    flags = cpu_flags()
    capability = torch.backends.cpu.get_cpu_capability()
    return {
        "versions": {
            "rnnlab": rnnlab.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "numpy": np.__version__,
        },
        "threads": torch.get_num_threads(),
        "cpu": {
            "capability": capability,
            "avx512": capability.startswith("AVX512") or "avx512f" in flags,
            "avx512_bf16": "avx512_bf16" in flags,
            "amx_bf16": "amx_bf16" in flags,
        },
        "onednn": torch.backends.mkldnn.is_available(),
        "compiled_kernels": {
            "available": module is not None,
            "reason": _ext.unavailable_reason(),
            "fix": _ext.unavailable_fix(),
            "build_directory": str(_ext.build_directory()),
        },
        "auto_backend": {"lstm": _auto_backend(LSTMCell), "gru": _auto_backend(GRUCell)},
    }


def _yes(value: bool) -> str:
    return "yes" if value else "no"


def format_info(info: dict[str, Any]) -> str:
    """The text ``rnnlab info`` prints for :func:`machine_info`'s dict."""
    v, cpu, kernels = info["versions"], info["cpu"], info["compiled_kernels"]
    lines = [
        f"rnnlab {v['rnnlab']}, torch {v['torch']}, python {v['python']}, numpy {v['numpy']}",
        f"threads          {info['threads']}",
        f"CPU              capability {cpu['capability']}, AVX-512 {_yes(cpu['avx512'])}, "
        f"avx512_bf16 {_yes(cpu['avx512_bf16'])}, amx_bf16 {_yes(cpu['amx_bf16'])}",
        f"oneDNN           {_yes(info['onednn'])}",
        f"compiled kernels {'available' if kernels['available'] else 'unavailable'} "
        f"({kernels['build_directory']})",
    ]
    for name, pick in info["auto_backend"].items():
        line = f"auto for {name.upper():5s}   {pick['backend']}"
        if pick["reason"]:
            line += f": {pick['reason']}"
            if pick["fix"]:
                line += f" (fix: {pick['fix']})"
        lines.append(line)
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="rnnlab info",
        description="Versions, CPU capabilities and the backend rnnlab picks on this machine.",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    from rnnlab.cli.kernels import ensure_kernels

    ensure_kernels(sys.stderr)  # a compile, if one is due, is announced, not silent
    info = machine_info()
    print(json.dumps(info) if args.json else format_info(info))
    return 0
