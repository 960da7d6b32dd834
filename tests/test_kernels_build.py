"""Building the compiled kernels: once, visibly, never hanging on a lock a dead build left, and
``rnnlab info`` telling what runs here. Every command runs in a subprocess with a timeout, so a
hang fails the test instead of the suite."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rnnlab.nn.backends import _ext
from tiny import SMALL_MNIST_CLI, with_sets

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=SRC, OMP_NUM_THREADS="1")
    env.pop("RNNLAB_NO_EXTENSION", None)
    env.update(extra)
    return env


def _rnnlab(*args: str, timeout: float, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rnnlab", *args],
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_info_json_has_every_field() -> None:
    done = _rnnlab("info", "--json", timeout=600)
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert set(info["versions"]) == {"rnnlab", "torch", "python", "numpy"}
    assert info["threads"] >= 1
    assert {"capability", "avx512", "avx512_bf16"} <= set(info["cpu"])
    assert isinstance(info["onednn"], bool)
    assert isinstance(info["compiled_kernels"]["available"], bool)
    for cell in ("lstm", "gru"):
        pick = info["auto_backend"][cell]
        assert pick["backend"] in ("compiled", "fused")
        # compiled exactly when the kernels are available, and a fallback always says why
        assert (pick["backend"] == "compiled") == info["compiled_kernels"]["available"]
        assert (pick["reason"] is None) == (pick["backend"] == "compiled")


def test_info_without_the_extension_names_the_fused_path_and_why(tmp_path) -> None:
    done = _rnnlab("info", timeout=300, RNNLAB_NO_EXTENSION="1")
    assert done.returncode == 0, done.stderr
    assert "auto for LSTM    fused: disabled by RNNLAB_NO_EXTENSION" in done.stdout
    assert "fix: unset RNNLAB_NO_EXTENSION" in done.stdout
    info = json.loads(_rnnlab("info", "--json", timeout=300, RNNLAB_NO_EXTENSION="1").stdout)
    assert info["compiled_kernels"]["available"] is False
    assert info["auto_backend"]["gru"]["backend"] == "fused"


def test_a_missing_or_failing_compiler_falls_back_with_reason_and_fix(tmp_path) -> None:
    missing = _rnnlab("info", timeout=300, CXX=str(tmp_path / "no-g++"))
    assert missing.returncode == 0, missing.stderr
    assert f"auto for GRU     fused: no C++ compiler: '{tmp_path / 'no-g++'}'" in missing.stdout
    assert "(fix: install g++" in missing.stdout
    # a compiler that fails: the build is tried, announced, and its failure named
    env = {"CXX": "false", "TORCH_EXTENSIONS_DIR": str(tmp_path / "cache")}
    failing = _rnnlab("build-kernels", timeout=300, **env)
    assert failing.returncode == 1
    assert failing.stdout.splitlines() == [_ext.BUILD_MESSAGE]
    assert "the compiled kernels are unavailable: building the extension failed" in failing.stderr
    assert "fused path" in failing.stderr


def test_training_works_on_the_fused_path_without_the_extension(tmp_path) -> None:
    out = tmp_path / "run"
    argv = ["train", "mnist-sample", *with_sets(SMALL_MNIST_CLI, "train.epochs=1")]
    done = _rnnlab(*argv, "--out", str(out), timeout=600, RNNLAB_NO_EXTENSION="1")
    assert done.returncode == 0, done.stderr
    assert "building rnnlab CPU kernels" not in done.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["epochs"] == 1 and 0.0 <= report["test_accuracy"] <= 1.0


def test_a_build_in_progress_is_waited_for_then_named(tmp_path) -> None:
    """A process holding rnnlab's build lock: a waiter gives up after RNNLAB_BUILD_WAIT_S,
    naming the lock file and the holder's PID, and the kernels fall back (no hang)."""
    lock = _ext.lock_path()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time\n"
            "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "os.ftruncate(fd, 0); os.write(fd, str(os.getpid()).encode())\n"
            "print('held', flush=True); time.sleep(120)\n",
            str(lock),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        done = _rnnlab("build-kernels", timeout=120, RNNLAB_BUILD_WAIT_S="1")
    finally:
        holder.kill()
        holder.wait()
    assert done.returncode == 1
    assert f"waiting for PID {holder.pid}" in done.stdout
    assert f"(PID {holder.pid}) has held the build lock {lock}" in done.stderr
    # the holder is dead: the OS released its lock, the next command goes through at once
    assert _rnnlab("build-kernels", timeout=600).returncode == 0


@pytest.mark.slow
def test_a_build_killed_mid_compile_does_not_hang_the_next(tmp_path) -> None:
    """SIGKILL a build while torch compiles (its own ``lock`` file exists, and torch's builder
    would wait on it forever); the next build must finish, announced, and the one after it
    must say nothing (already built). Compiles the kernels once in a scratch cache."""
    env = {"TORCH_EXTENSIONS_DIR": str(tmp_path / "cache")}
    first = subprocess.Popen(
        [sys.executable, "-m", "rnnlab", "build-kernels"],
        env=_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group: the kill takes ninja and g++ too
    )
    folder = Path(env["TORCH_EXTENSIONS_DIR"]) / _ext.build_directory().name
    deadline = time.monotonic() + 300
    while not (folder / "lock").exists():
        assert first.poll() is None, "the build ended before it could be killed"
        assert time.monotonic() < deadline, "torch's build never started"
        time.sleep(0.1)
    time.sleep(2.0)  # g++ running
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert (folder / "lock").exists()  # the stale lock a killed torch build leaves

    done = _rnnlab("build-kernels", timeout=900, **env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == _ext.BUILD_MESSAGE
    assert lines[1].startswith("built rnnlab CPU kernels in ")
    again = _rnnlab("build-kernels", timeout=120, **env)
    assert again.returncode == 0 and again.stdout == ""
