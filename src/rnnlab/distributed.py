"""Data-parallel training on torch.distributed: W processes, launched by ``torchrun`` (one node
or several) or by :func:`launch` (``rnnlab train --nproc W``, one node).

How a run is shared between the W processes (ranks):

* every rank builds the same model from the same seed; DistributedDataParallel (Li et al. 2020)
  broadcasts rank 0's weights at the start and averages gradients during ``backward``;
* every rank draws the same global permutation per epoch
  (:class:`rnnlab.train.loader.Batches`, seeded by ``(seed, epoch)``) and takes examples
  ``rank, rank + W, ...`` of each global batch, so the preset's batch size stays the global
  one and each rank sees ``batch_size / W`` examples per step;
* the trainer sums ``[loss, correct, n]`` over ranks every step (:meth:`Context.reduce`), so the
  logged metrics, the divergence check and the running sums in a checkpoint are global: a
  checkpoint holds the global position (epoch, batch, step) and resumes under any W;
* only rank 0 touches the run directory (logs, checkpoints, plot, report.json); it also reads
  for the others (configuration and checkpoint on resume) and broadcasts what it read
  (:meth:`Context.on_main`), so the nodes of a multi-node run need no shared filesystem.

rnnlab trains on the CPU, so the backend is gloo; :func:`default_backend` names nccl for CUDA
devices, for when the trainer places models on GPUs.
"""

from __future__ import annotations

import gc
import os
import pickle
import socket
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from rnnlab.config import ConfigError

__all__ = [
    "Context",
    "LaunchError",
    "default_backend",
    "from_environment",
    "launch",
    "shutdown",
    "under_launcher",
]

T = TypeVar("T")
DEFAULT_TIMEOUT_S = 300.0


class LaunchError(RuntimeError):
    """A process of a multi-process run failed; the message names the rank and how."""


@dataclass(frozen=True)
class Context:
    """This process's place in a data-parallel run; the default is a single process, for which
    every method is a no-op (``reduce`` returns its input, ``wrap`` the model itself)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes the run directory and prints."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def reduce(self, values: list[float]) -> list[float]:
        """``values`` summed over ranks (all-reduce in float64); ints stay ints."""
        if not self.enabled:
            return list(values)
        total = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(total)
        pairs = zip(values, total.tolist(), strict=True)
        return [int(t) if isinstance(v, int) else t for v, t in pairs]

    @property
    def reduce_hook(self) -> Callable[[list[float]], list[float]] | None:
        """What :class:`rnnlab.train.Trainer` takes as ``reduce``: None for one process."""
        return self.reduce if self.enabled else None

    def wrap(self, model: nn.Module) -> nn.Module:
        """``model`` in DistributedDataParallel (rnnlab models have no buffers to sync)."""
        if not self.enabled:
            return model
        return DistributedDataParallel(model)

    def check_batch_size(self, batch_size: int, what: str = "train.batch_size") -> None:
        """The global batch must split evenly: a clear error instead of uneven ranks."""
        if batch_size % self.world_size:
            raise ConfigError(
                f"{what}: expected a multiple of the {self.world_size} processes "
                f"(each takes batch_size / processes examples per step), got "
                f"{batch_size}"
            )

    def on_main(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on rank 0 only and give every rank its result, or raise its error on
        every rank (as the same exception type when it can be sent), so a failure on rank 0
        does not leave the others waiting. Results travel pickled between these processes."""
        if not self.enabled:
            return fn()
        box: list[object] = [None]
        error: BaseException | None = None
        if self.is_main:
            try:
                box[0] = ("ok", fn())
            except Exception as exc:
                error = exc
                box[0] = ("error", _sendable(exc))
        dist.broadcast_object_list(box, src=0)
        kind, value = box[0]  # type: ignore[misc]
        if kind == "error":
            raise error if error is not None else value  # type: ignore[misc]
        return value  # type: ignore[return-value]


def _sendable(exc: Exception) -> Exception:
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:  # an exception that cannot travel: send its text
        return RuntimeError(f"rank 0 failed: {type(exc).__name__}: {exc}")


def default_backend(device: torch.device) -> str:
    """nccl for CUDA devices, gloo for the CPU."""
    return "nccl" if device.type == "cuda" else "gloo"


def under_launcher() -> bool:
    """Whether torchrun (or :func:`launch`) started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def from_environment(timeout_s: float = DEFAULT_TIMEOUT_S) -> Context:
    """The :class:`Context` that torchrun's environment variables describe (``RANK``,
    ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``), with the default process
    group initialised; a single-process context when ``WORLD_SIZE`` is unset or 1.

    ``timeout_s`` bounds every collective: a rank that stops answering (a hung node) fails the
    others after that long instead of blocking them forever. A rank that dies is noticed sooner:
    its sockets close, and the launcher stops the remaining ranks.
    """
    if not under_launcher():
        return Context()
    if timeout_s <= 0:
        raise ValueError(f"from_environment expected timeout_s > 0, got {timeout_s}")
    if not dist.is_initialized():
        dist.init_process_group(
            backend=default_backend(torch.device("cpu")), timeout=timedelta(seconds=timeout_s)
        )
    return Context(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def shutdown() -> None:
    """Leave the process group (if any), so the launcher sees a clean exit.

    Garbage is collected first. A DistributedDataParallel model caught in a reference cycle
    otherwise lives until the interpreter's final collection. Freeing it then releases gloo's
    last work items on gloo's own thread, which can no longer take the GIL, and the process
    aborts after its work is done ("terminate called without an active exception", SIGABRT).
    That ended 6 of 29 two-rank test runs (2 of 14 on the code of 9a71a95, 4 of 15 after it); a
    core dump showed the gloo thread destroying a ProcessGroupGloo::AsyncWork inside
    Py_FinalizeEx's collection. With the collection first: 0 of 30."""
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(argv: Sequence[str], nproc: int, monitor_interval_s: float = 0.5) -> None:
    """Run ``python -m rnnlab *argv`` in ``nproc`` processes on this machine through
    ``torch.distributed.run`` (the code behind ``torchrun``), rendezvous on 127.0.0.1 and a
    free port. Returns when all succeed; if one fails, the launcher stops the others and this
    raises :class:`LaunchError` naming the first rank that failed and how."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    if nproc < 1:
        raise ValueError(f"launch expected nproc >= 1, got {nproc}")
    args = parse_args(
        [
            "--nnodes=1",
            f"--nproc-per-node={nproc}",
            "--max-restarts=0",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint=127.0.0.1:{_free_port()}",
            f"--rdzv-id={uuid.uuid4()}",
            f"--monitor-interval={monitor_interval_s}",
            "--module",
            "rnnlab",
            *argv,
        ]
    )
    try:
        run(args)
    except ChildFailedError as exc:
        raise LaunchError(describe_failure(exc, nproc)) from None


def describe_failure(exc: Exception, nproc: int) -> str:
    """One line from torch's ChildFailedError: the first rank to fail, and its exit status or
    the signal that killed it."""
    rank, failure = exc.get_first_failure()  # type: ignore[attr-defined]
    if failure.exitcode < 0:
        how = f"was killed by {failure.signal_name()}"
    else:
        how = f"exited with status {failure.exitcode}"
    return f"{nproc}-process run failed: rank {rank} (pid {failure.pid}) {how}"
