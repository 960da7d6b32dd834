"""Build and load the compiled LSTM/GRU kernels (``*.cpp`` beside this file) once per machine.

The extension is compiled on first use with ``torch.utils.cpp_extension.load`` (about 40 s on
two cores) and cached under torch's extension directory (``TORCH_EXTENSIONS_DIR``, default
``~/.cache/torch_extensions``), so later processes load it in well under a second.

It runs only where it can help and is known to be right: a CPU build of torch with oneDNN, a CPU
with AVX-512 (the kernels are compiled for it), a C++ compiler and ninja. :func:`load` returns
the module or None; when None, :func:`unavailable_reason` says why, and ``backend="compiled"``
raises an error that quotes it. ``RNNLAB_NO_EXTENSION=1`` disables the extension on purpose.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import torch

__all__ = ["load", "unavailable_reason", "build_failed"]

_DIR = Path(__file__).parent
# recurrent.h (shared helpers and the layout notes), then one file per kernel family.
_SOURCES = [_DIR / name for name in ("lstm.cpp", "lstm_infer.cpp", "gru.cpp", "module.cpp")]
_HEADERS = [_DIR / "recurrent.h"]
# AVX-512 code with libmvec's vector exp/tanh. No -ffast-math: it would link crtfastmath.o, which
# turns on flush-to-zero for the whole process.
_CFLAGS = [
    "-O3",
    "-fopenmp",
    "-fno-math-errno",
    "-mavx512f",
    "-mavx512vl",
    "-mavx512bw",
    "-mavx512dq",
    "-mfma",
    "-mprefer-vector-width=512",
]
_LDFLAGS = ["-fopenmp", "-lmvec"]

_module: ModuleType | None = None
_reason: str | None = None
_tried = False
_build_failed = False


def _precondition() -> str | None:
    """Why the extension cannot be used here, or None if it can be built."""
    if os.environ.get("RNNLAB_NO_EXTENSION", "") not in ("", "0"):
        return "disabled by RNNLAB_NO_EXTENSION"
    if not torch.backends.mkldnn.is_available():
        return "this torch build has no oneDNN (torch.backends.mkldnn.is_available() is False)"
    capability = torch.backends.cpu.get_cpu_capability()
    if not capability.startswith("AVX512"):
        return f"the kernels need an AVX-512 CPU; torch reports CPU capability {capability!r}"
    if not sys.platform.startswith("linux"):
        return f"the kernels are built with gcc and glibc's libmvec on Linux, not {sys.platform}"
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        return f"no C++ compiler: {compiler!r} is not on PATH (install g++ or set CXX)"
    return None


def _ensure_ninja_on_path() -> None:
    """torch's builder runs ``ninja`` from PATH; the ``ninja`` wheel installs it next to the
    interpreter, which is not on PATH when the virtual environment is not activated."""
    bindir = str(Path(sys.executable).parent)
    if shutil.which("ninja") is None and (Path(bindir) / "ninja").exists():
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")


def _build_name() -> str:
    """The module's name, with a digest of every source and header in it: two checkouts with
    different kernels (another version, a branch) then build into different folders of the
    shared cache instead of rebuilding over each other, and a changed header cannot leave a
    stale build behind."""
    digest = hashlib.sha256()
    for path in _SOURCES + _HEADERS:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return f"rnnlab_recurrent_{digest.hexdigest()[:12]}"


def load() -> ModuleType | None:
    """The compiled module, building it on the first call; None if it cannot be used here."""
    global _module, _reason, _tried, _build_failed
    if _tried:
        return _module
    _tried = True
    _reason = _precondition()
    if _reason is not None:
        return None
    _ensure_ninja_on_path()
    from torch.utils.cpp_extension import load as build

    try:
        _module = build(
            name=_build_name(),
            sources=[str(p) for p in _SOURCES],
            extra_cflags=_CFLAGS,
            extra_ldflags=_LDFLAGS,
            verbose=False,
        )
    except (RuntimeError, OSError, ImportError, subprocess.CalledProcessError) as err:
        # Recorded, not swallowed: unavailable_reason() returns it, backend="compiled" raises
        # with it and backend="auto" warns once with it before using the pure-torch fused path.
        _reason = f"building the extension failed: {type(err).__name__}: {err}"
        _build_failed = True
    return _module


def unavailable_reason() -> str | None:
    """Why :func:`load` returned None (None if it has not been called or succeeded)."""
    return _reason


def build_failed() -> bool:
    """Whether the preconditions held but compiling or loading failed (a surprise worth a
    warning, unlike a documented precondition such as a CPU without AVX-512)."""
    return _build_failed
