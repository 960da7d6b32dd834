"""Build and load the compiled LSTM/GRU/minGRU/minLSTM kernels (``*.cpp`` beside this file) once
per machine.

The extension is compiled with ``torch.utils.cpp_extension.load`` (about 40 s on two cores) and
cached under torch's extension directory (``TORCH_EXTENSIONS_DIR``, default
``~/.cache/torch_extensions/py<version>_cpu``), in a folder named by a digest of the sources,
so later processes load it in well under a second. :func:`build` does it ahead of use and
reports the two lines a user should see ("building ..." and "built ... in N s"); the first
model call otherwise does it through :func:`load`.

It runs only where it can help and is known to be right: a CPU build of torch with oneDNN, a CPU
with AVX-512 (the kernels are compiled for it), a C++ compiler and ninja. :func:`load` returns
the module or None; when None, :func:`unavailable_reason` says why and :func:`unavailable_fix`
what would make it work, and ``backend="compiled"`` raises an error that quotes the reason.
``RNNLAB_NO_EXTENSION=1`` disables the extension on purpose.

One build at a time: rnnlab holds an ``fcntl.flock`` on ``<build folder>.lock`` (beside the
build folder) around the compile. The OS releases it when its holder dies, so a build killed
half way never blocks the next one; a waiter gives up after ``RNNLAB_BUILD_WAIT_S`` seconds
(default 900) and the caller falls back to the pure-torch fused path, naming the lock file and
the holder's PID. Under that lock no rnnlab build is running, so a ``lock`` file that torch's
own builder (``FileBaton``, which waits on it forever) left in the build folder when its process
was killed is stale, and is removed.

The compile runs in a child process leading its own process group
(:mod:`rnnlab.nn.backends._ext.isolated`): ninja, g++ and cc1plus die with the command that
started them, even under ``kill -9``, and torch's builder never sees the module-level flags
(it appends to the lists it is given; it gets copies).
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import torch

from rnnlab.faults import fault_point

__all__ = [
    "BUILD_MESSAGE",
    "build",
    "build_directory",
    "build_failed",
    "is_built",
    "load",
    "lock_path",
    "unavailable_fix",
    "unavailable_reason",
]

# The line a user sees before a compile (rnnlab build-kernels, the first model verb).
BUILD_MESSAGE = "building rnnlab CPU kernels, once, about 40 s"

_DIR = Path(__file__).parent
# recurrent.h (shared helpers and the layout notes), then one file per kernel family (decoder.cpp:
# a language model's softmax cross-entropy; minscan.cpp: the minGRU / minLSTM time loop;
# lstm_variant.cpp and lstm_variant_backward.cpp, sharing lstm_variant.h: the LSTM variants'
# time loop forward and backward; gru_variant.cpp and gru_variant_backward.cpp, sharing
# gru_variant.h: the GRU variants').
_SOURCES = [
    _DIR / name
    for name in (
        "lstm.cpp",
        "lstm_infer.cpp",
        "gru.cpp",
        "decoder.cpp",
        "minscan.cpp",
        "lstm_variant.cpp",
        "lstm_variant_backward.cpp",
        "gru_variant.cpp",
        "gru_variant_backward.cpp",
        "module.cpp",
    )
]
_HEADERS = [_DIR / "recurrent.h", _DIR / "lstm_variant.h", _DIR / "gru_variant.h"]
# AVX-512 code with libmvec's vector exp/tanh. No -ffast-math: it would link crtfastmath.o, which
# turns on flush-to-zero for the whole process.
# Tuples: torch's load() appends to the lists it is given (_prepare_ldflags), which changed
# _build_name() after a build in the same process; it gets copies, in a child process.
_CFLAGS = (
    "-O3",
    "-fopenmp",
    "-fno-math-errno",
    "-mavx512f",
    "-mavx512vl",
    "-mavx512bw",
    "-mavx512dq",
    "-mfma",
    "-mprefer-vector-width=512",
)
_LDFLAGS = ("-fopenmp", "-lmvec")
_DEFAULT_WAIT_S = 900.0

_module: ModuleType | None = None
_reason: str | None = None
_fix: str | None = None
_tried = False
_build_failed = False
_thread_lock = threading.Lock()

Report = Callable[[str], None]


class _LockTimeoutError(Exception):
    """Another process held the build lock for longer than the wait allows."""


def _precondition() -> tuple[str, str] | None:
    """``(why the extension cannot be used here, how to fix it)``, or None if it can be built."""
    if os.environ.get("RNNLAB_NO_EXTENSION", "") not in ("", "0"):
        return "disabled by RNNLAB_NO_EXTENSION", "unset RNNLAB_NO_EXTENSION"
    if not torch.backends.mkldnn.is_available():
        return (
            "this torch build has no oneDNN (torch.backends.mkldnn.is_available() is False)",
            "install the standard CPU build of torch",
        )
    capability = torch.backends.cpu.get_cpu_capability()
    if not capability.startswith("AVX512"):
        return (
            f"the kernels need an AVX-512 CPU; torch reports CPU capability {capability!r}",
            "none on this CPU: the fused path is the fastest rnnlab has here",
        )
    if not sys.platform.startswith("linux"):
        return (
            f"the kernels are built with gcc and glibc's libmvec on Linux, not {sys.platform}",
            "none on this system: the fused path is the fastest rnnlab has here",
        )
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        return (
            f"no C++ compiler: {compiler!r} is not on PATH",
            "install g++ (e.g. apt-get install g++) or set CXX, then run `rnnlab build-kernels`",
        )
    _ensure_ninja_on_path()
    if shutil.which("ninja") is None:
        return (
            "ninja is not on PATH",
            "pip install ninja (or apt-get install ninja-build), then run `rnnlab build-kernels`",
        )
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
    stale build behind (nor a build made with other flags or another torch)."""
    digest = hashlib.sha256()
    for path in _SOURCES + _HEADERS:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    # The flags and torch's version too: the module is imported as built when the name matches.
    digest.update(" ".join([*_CFLAGS, *_LDFLAGS, torch.__version__]).encode())
    return f"rnnlab_recurrent_{digest.hexdigest()[:12]}"


def build_directory() -> Path:
    """The folder the kernels build into: the one torch's ``load`` would pick by default
    (``TORCH_EXTENSIONS_DIR``, else ``<torch cache>/py<version>_<cpu|cuXYZ>``), so builds made
    before this lock existed are reused."""
    root = os.environ.get("TORCH_EXTENSIONS_DIR")
    if root is None:
        from torch.utils.cpp_extension import get_default_build_root

        accelerator = "cpu"
        if torch.version.hip is not None:
            accelerator = "rocm" + torch.version.hip.replace(".", "")
        elif torch.version.cuda is not None:
            accelerator = "cu" + torch.version.cuda.replace(".", "")
        version = f"py{sys.version_info.major}{sys.version_info.minor}"
        root = Path(get_default_build_root()) / f"{version}{sys.abiflags}_{accelerator}"
    return Path(root) / _build_name()


def lock_path() -> Path:
    """rnnlab's build lock: ``<build folder>.lock`` beside the build folder."""
    folder = build_directory()
    return folder.with_name(folder.name + ".lock")


def is_built() -> bool:
    """Whether the compiled module of these sources is already in the cache (no compile needed)."""
    folder = build_directory()
    return (folder / f"{folder.name}.so").is_file()


def _holder(path: Path) -> str:
    """The PID the lock's holder wrote into it ("unknown" before it has written it)."""
    try:
        text = path.read_text().strip()
    except OSError:
        return "unknown"
    return text or "unknown"


@contextmanager
def _build_lock(path: Path, wait_s: float, report: Report | None) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path``, waiting at most ``wait_s`` seconds for it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        deadline, told = time.monotonic() + wait_s, False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise _LockTimeoutError(
                        f"another process (PID {_holder(path)}) has held the build lock "
                        f"{path} for more than {wait_s:.0f} s"
                    ) from None
                if report is not None and not told:
                    told = True
                    report(
                        f"waiting for PID {_holder(path)}, which is building rnnlab CPU kernels "
                        f"(lock file {path})"
                    )
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the flock


def _wait_s() -> float:
    text = os.environ.get("RNNLAB_BUILD_WAIT_S", "")
    try:
        value = float(text) if text else _DEFAULT_WAIT_S
    except ValueError:
        raise ValueError(
            f"RNNLAB_BUILD_WAIT_S expected a number of seconds, got {text!r}"
        ) from None
    return value


def _import_built(folder: Path) -> ModuleType:
    """Import the module already built in ``folder`` (its name is the folder's)."""
    spec = importlib.util.spec_from_file_location(folder.name, folder / f"{folder.name}.so")
    if spec is None or spec.loader is None:
        raise ImportError(f"expected a Python extension at {folder}, got none")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compile_into(folder: str) -> None:
    """Compile the extension into ``folder`` with torch's builder (ninja, g++), given copies
    of the flags. Run by :func:`_compile` in a child process of its own process group
    (:mod:`rnnlab.nn.backends._ext.isolated`), so a killed build takes its compilers with it."""
    from torch.utils.cpp_extension import load as torch_load

    torch_load(
        name=Path(folder).name,
        sources=[str(p) for p in _SOURCES],
        extra_cflags=list(_CFLAGS),
        extra_ldflags=list(_LDFLAGS),
        build_directory=folder,
        verbose=False,
    )


def _compile(report: Report | None) -> ModuleType:
    """Build (if needed) and import the module, holding rnnlab's build lock."""
    from rnnlab.nn.backends._ext.isolated import run_isolated

    folder = build_directory()
    with _build_lock(lock_path(), _wait_s(), report):
        fault_point("kernel-build")  # a test hook (rnnlab.faults); nothing when unset
        # FileBaton's lock from a torch build that was killed: under our lock nobody builds.
        (folder / "lock").unlink(missing_ok=True)
        if is_built():
            # Imported directly, not through torch's load(): that one rebuilds whenever the
            # sources' path differs from the build's (another checkout, a reinstall).
            try:
                return _import_built(folder)
            except ImportError:
                pass  # a library cut short by a killed link: rebuilt below, which replaces it
        if report is not None:
            report(BUILD_MESSAGE)
        start = time.monotonic()
        folder.mkdir(parents=True, exist_ok=True)
        run_isolated(f"{__name__}:compile_into", [str(folder)])
        module = _import_built(folder)
        if report is not None:
            report(f"built rnnlab CPU kernels in {time.monotonic() - start:.0f} s")
    return module


def build(report: Report | None = None) -> ModuleType | None:
    """The compiled module, building it first if needed; None if it cannot be used here (then
    :func:`unavailable_reason` says why). ``report`` receives the lines a user should see: a
    wait on another process's build, :data:`BUILD_MESSAGE` before a compile and the time it
    took after it; nothing when the module is already built. The outcome is remembered for
    the process: later calls return at once."""
    global _module, _reason, _fix, _tried, _build_failed
    with _thread_lock:
        if _tried:
            return _module
        _reason = _fix = None
        why = _precondition()
        if why is not None:
            _module, (_reason, _fix) = None, why
        else:
            try:
                _module = _compile(report)
            except _LockTimeoutError as err:
                _reason = f"{err}; the fused path runs meanwhile"
                _fix = "wait for that build to finish, or end that process if it hangs"
                _build_failed = True
            except (RuntimeError, OSError, ImportError, subprocess.CalledProcessError) as err:
                # Recorded, not swallowed: unavailable_reason() returns it, backend="compiled"
                # raises with it and backend="auto" warns once with it before using the fused
                # path.
                detail = str(err).strip().rstrip(".")
                _reason = f"building the extension failed: {type(err).__name__}: {detail}"
                _fix = (
                    "make g++ and ninja work (the error says what failed), then run "
                    "`rnnlab build-kernels`; RNNLAB_NO_EXTENSION=1 skips the build"
                )
                _build_failed = True
        _tried = True
        return _module


def load() -> ModuleType | None:
    """The compiled module, building it silently on the first call; None if it cannot be used
    here. The same as ``build()`` without a report."""
    if _tried:
        return _module
    return build()


def unavailable_reason() -> str | None:
    """Why :func:`load` returned None (None if it has not been called or succeeded)."""
    return _reason


def unavailable_fix() -> str | None:
    """What would make the kernels available, when :func:`unavailable_reason` is set."""
    return _fix if _reason is not None else None


def build_failed() -> bool:
    """Whether the preconditions held but compiling or loading failed (a surprise worth a
    warning, unlike a documented precondition such as a CPU without AVX-512)."""
    return _build_failed
