"""Data parallelism on CPU with gloo and two local processes (127.0.0.1, ports picked at run
time, one thread per rank): a step equals a single-process step on the union batch, a
two-process run writes one run directory whose report matches an independent evaluation, and
a killed rank fails the launch quickly and leaves a checkpoint that resumes, in any world size,
to the same result."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from rnnlab import distributed
from rnnlab.checkpoint import load_checkpoint
from rnnlab.config import ConfigError, load_preset
from rnnlab.predict import evaluate_run
from rnnlab.tasks import get_task
from rnnlab.train import Batches, Split, Trainer
from tiny import SMALL_MNIST_CLI, cli_sets

SRC = Path(__file__).resolve().parents[1] / "src"
SMALL = [*SMALL_MNIST_CLI, *cli_sets("run.checkpoint_every=20")]
CASES = {"even": 16, "ragged": 19, "stand-in": 17}  # examples; the global batch is 16


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _one_step_params(context: distributed.Context, n: int) -> dict[str, torch.Tensor]:
    """Train a small LSTM on n random sequences with global batch 16 (one step when n == 16;
    with n == 17 the second step's single example leaves rank 1 a stand-in)."""
    config = load_preset(
        "mnist-sample",
        [
            "model.projection=8",
            "model.hidden_sizes=[8]",
            "train.batch_size=16",
            "train.epochs=1",
            "train.lr=0.01",
            "train.clip_grad_norm=1.0",
        ],
    )
    g = torch.Generator().manual_seed(n)
    split = Split((torch.rand(n, 28, 28, generator=g),), torch.randint(0, 10, (n,), generator=g))
    torch.manual_seed(0)
    task = get_task(config)
    trainer = Trainer(
        context.wrap(task.build_model()), task, config.train, reduce=context.reduce_hook
    )
    trainer.fit(
        Batches(split, 16, shuffle=True, seed=3, rank=context.rank, world_size=context.world_size)
    )
    params = {k: v.detach().clone() for k, v in trainer.module.state_dict().items()}
    params["epoch_loss_and_samples"] = torch.tensor(  # global: the same on every rank
        [trainer.state.history[-1]["loss"], trainer.state.samples], dtype=torch.float64
    )
    return params


def _rank(rank: int, world: int, port: int, folder: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    context = distributed.from_environment(timeout_s=60)
    try:
        for name, n in CASES.items():
            save_file(_one_step_params(context, n), f"{folder}/{name}-{rank}.safetensors")
    finally:
        distributed.shutdown()


@pytest.fixture(scope="module")
def two_rank_params(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ddp")
    mp.spawn(_rank, args=(2, _free_port(), str(folder)), nprocs=2, join=True)
    return folder


@pytest.mark.parametrize("case", list(CASES))
def test_two_ranks_step_like_one_process_on_the_union_batch(two_rank_params, case):
    single = _one_step_params(distributed.Context(), CASES[case])
    for rank in (0, 1):
        ddp = load_file(str(two_rank_params / f"{case}-{rank}.safetensors"))
        assert set(ddp) == set(single)
        for name, value in single.items():
            torch.testing.assert_close(ddp[name], value, atol=1e-5, rtol=1e-5, msg=name)


def test_batch_size_must_split_over_the_processes():
    with pytest.raises(ConfigError, match="expected a multiple of the 3 processes"):
        distributed.Context(rank=0, world_size=3).check_batch_size(128)


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", **extra}


@pytest.fixture(scope="module")
def torchrun_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """`torchrun --nproc-per-node 2 -m rnnlab train mnist-sample` without --out."""
    cwd = tmp_path_factory.mktemp("torchrun")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=1",
        "--nproc-per-node=2",
        "--rdzv-backend=c10d",
        "--rdzv-endpoint=127.0.0.1:0",
        f"--rdzv-id={uuid.uuid4()}",
        "-m",
        "rnnlab",
        "train",
        "mnist-sample",
        *SMALL,
    ]
    done = subprocess.run(command, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    return cwd, done


def test_torchrun_run_writes_one_directory_with_the_ranks_measurements(torchrun_run):
    cwd, done = torchrun_run
    runs = list((cwd / "runs").iterdir())
    assert len(runs) == 1 and list(cwd.iterdir()) == [cwd / "runs"]
    run = runs[0]
    report = json.loads((run / "report.json").read_text())
    assert report["processes"] == 2 and report["steps"] == 200
    assert report["samples"] == 2 * report["train_examples"] == 20_000  # both ranks' examples
    assert done.stdout.count("Testing Accuracy") == 1  # rank 0 alone prints
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "step"] == list(range(5, 201, 5))
    assert records[-1]["val_accuracy"] == report["val_accuracy"] == report["test_accuracy"]
    again = evaluate_run(run, checkpoint="last", split="test")  # one process, whole test split
    assert again["accuracy"] == report["test_accuracy"]
    assert again["loss"] == pytest.approx(report["test_loss"], abs=1e-5)


def _rank_pid(tag: str, rank: int) -> int | None:
    for proc in Path("/proc").iterdir():
        try:
            env = (proc / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if f"RNNLAB_TEST_TAG={tag}".encode() in env and f"RANK={rank}".encode() in env:
            return int(proc.name)
    return None


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc")
def test_killed_rank_fails_the_launch_and_the_run_resumes(tmp_path, torchrun_run):
    run, tag = tmp_path / "run", uuid.uuid4().hex
    launcher = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "rnnlab",
            "train",
            "mnist-sample",
            "--nproc",
            "2",
            "--out",
            str(run),
            "--dist-timeout",
            "30",
            *SMALL,
        ],
        env=_env(RNNLAB_TEST_TAG=tag),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and launcher.poll() is None:
        metrics = run / "metrics.jsonl"
        if metrics.is_file() and '"step": 125,' in metrics.read_text():
            break
        time.sleep(0.005)
    pid = _rank_pid(tag, 1)
    assert pid is not None, f"rank 1 not found (launcher status {launcher.poll()})"
    os.kill(pid, signal.SIGKILL)
    started = time.monotonic()
    _, stderr = launcher.communicate(timeout=90)
    assert launcher.returncode == 1 and time.monotonic() - started < 60
    assert "rank 1" in stderr and "SIGKILL" in stderr and f"--resume {run}" in stderr, stderr
    tensors, meta = load_checkpoint(run / "checkpoints", "last")  # sha256 verified
    assert meta["state"]["epoch"] == 1 and meta["state"]["batch"] > 0
    assert not (run / "report.json").exists()

    resumed = subprocess.run(
        [
            sys.executable,
            "-m",
            "rnnlab",
            "train",
            "--resume",
            str(run),
            "--threads",
            "1",
            "--no-progress",
        ],  # now in one process
        env=_env(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    whole = json.loads(
        next((torchrun_run[0] / "runs").iterdir()).joinpath("report.json").read_text()
    )
    report = json.loads((run / "report.json").read_text())
    assert report["steps"] == 200 and report["samples"] == 20_000
    assert report["test_loss"] == pytest.approx(whole["test_loss"], abs=1e-4)
    assert abs(report["test_accuracy"] - whole["test_accuracy"]) <= 0.002


def test_nproc_checks_the_batch_before_starting_processes(capsys):
    from rnnlab.cli import main

    assert main(["train", "mnist-sample", "--nproc", "3"]) == 2
    assert "train.batch_size: expected a multiple of the 3 processes" in capsys.readouterr().err


def test_each_rank_of_nproc_runs_the_same_command_with_the_run_directory_named():
    from rnnlab.cli import build_parser
    from rnnlab.cli.commands import child_argv

    args = build_parser().parse_args(
        [
            "train",
            "mnist-sample",
            "--nproc",
            "2",
            "--set",
            "train.epochs=1",
            "--data-dir",
            "d",
            "--threads",
            "1",
        ]
    )
    argv = child_argv(args, Path("runs/x"))
    assert argv == [
        "train",
        "mnist-sample",
        "--out",
        "runs/x",
        "--set",
        "train.epochs=1",
        "--data-dir",
        "d",
        "--threads",
        "1",
        "--dist-timeout",
        "300.0",
    ]
    again = build_parser().parse_args(argv)
    assert again.nproc is None and again.overrides == args.overrides
