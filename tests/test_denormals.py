"""Subnormal floats flushed to zero (rnnlab.denormals): the modes take effect on the calling
thread and on the OpenMP pool, the gradients they change are only those below float32's normal
range, and a training run's metrics do not move."""

from __future__ import annotations

import json

import pytest
import torch

import rnnlab
from rnnlab.cli import main
from rnnlab.denormals import flush_denormals, flush_wanted
from tiny import SMALL_MNIST_CLI, with_sets

TINY = torch.finfo(torch.float32).tiny  # 1.18e-38, the smallest normal float32


@pytest.fixture
def restore():
    """The test process's modes as they were (off) after each test."""
    yield
    flush_denormals(False)


def subnormal_share(t: torch.Tensor) -> float:
    return ((t != 0) & (t.abs() < TINY)).float().mean().item()


@pytest.mark.parametrize(
    ("value", "wanted"), [(None, True), ("1", True), ("0", False), ("off", False)]
)
def test_flush_wanted_reads_the_environment(monkeypatch, value, wanted) -> None:
    if value is None:
        monkeypatch.delenv("RNNLAB_FLUSH_DENORMALS", raising=False)
    else:
        monkeypatch.setenv("RNNLAB_FLUSH_DENORMALS", value)
    assert flush_wanted() is wanted


def test_flush_takes_effect_on_every_thread_and_is_undone(restore) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # an elementwise op over 4M elements is split between threads
    try:
        x = torch.full((1 << 22,), 1e-39)  # subnormal
        assert subnormal_share(x * 1.0) == 1.0
        assert flush_denormals(True) >= 1
        assert ((x * 1.0) == 0).all()  # denormals-are-zero, on every thread's share
        assert ((torch.full((1 << 22,), 1e-30) * 1e-10) == 0).all()  # flush-to-zero
        flush_denormals(False)
        assert subnormal_share(x * 1.0) == 1.0
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("backend", ["auto", "fused"])
def test_long_sequence_gradients_change_only_below_the_normal_range(restore, backend) -> None:
    """An LSTM over 784 steps (workload E's length): the gradient reaching early inputs vanishes
    through the subnormal range (this is the regime, not a made-up one); flushing zeroes those
    values and moves no gradient by more than 1e-36 (values near the range are sums of products
    of subnormals)."""
    torch.manual_seed(0)
    lstm = rnnlab.LSTM(1, 16, backend=backend)
    x = torch.randn(4, 784, 1)

    def grads():
        xx = x.clone().requires_grad_()
        lstm.zero_grad()
        out, _ = lstm(xx)
        out[:, -1].sum().backward()
        return [xx.grad, *(p.grad.clone() for p in lstm.parameters())]

    kept = grads()
    assert subnormal_share(kept[0]) > 0  # the gradient of x did pass through the range
    flush_denormals(True)
    flushed = grads()
    assert subnormal_share(flushed[0]) == 0
    for a, b in zip(kept, flushed, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-36)


def test_training_metrics_do_not_move(tmp_path, monkeypatch, restore) -> None:
    """The same tiny run with and without flushing: every logged metric equal to 1e-6."""
    metrics = {}
    for flag in ("0", "1"):
        monkeypatch.setenv("RNNLAB_FLUSH_DENORMALS", flag)
        out = tmp_path / f"run{flag}"
        argv = with_sets(SMALL_MNIST_CLI, "train.epochs=1")
        assert main(["train", "mnist-sample", "--out", str(out), *argv]) == 0
        lines = (out / "metrics.jsonl").read_text().splitlines()
        metrics[flag] = [json.loads(line) for line in lines]
    assert len(metrics["0"]) == len(metrics["1"]) > 0
    for a, b in zip(metrics["0"], metrics["1"], strict=True):
        for key, value in a.items():
            timing = any(word in key for word in ("second", "time", "tok/s", "per_s", "ms"))
            if isinstance(value, float) and not timing:
                assert b[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
