"""torch.compile against eager on the bench's A and F models (issue 23, part 4): rnnlab's model
and the same model on torch.nn.LSTM, a training step and an inference step each; and what the
eager route to the compiled kernels costs through torch's dispatcher.

    OMP_NUM_THREADS=1 PYTHONPATH=src taskset -c 1 python benchmarks/compile_bench.py \
        [--workloads A,F] [--repeats 7] [--out benchmarks/results_compile.txt]

Shape legend: B batch, T time, H hidden units.

    A  batch 128, 28 steps: Linear 128 -> LSTM 128 -> Linear 10 on the last h (the MNIST model;
       rnnlab's "auto" runs its compiled kernels, torch.ops.rnnlab.lstm_train / lstm_infer)
    F  char LM: batch 64, bptt 128: Embedding(100, 64) -> 2 x LSTM 512 -> Linear 100, the loss
       at every position (rnnlab's "auto" runs torch's own op, torch.lstm, at H >= 256)

Implementations: ``rnnlab`` and ``torch`` are the bench's own models
(:func:`rnnlab.bench.workloads.build_model`, :func:`rnnlab.bench.lm_models.build_language_model`);
for F, rnnlab's is :class:`rnnlab.nn.language_model.LanguageModel` called with targets (its
decoder and loss fused in ``decoder_cross_entropy``), which breaks the graph where it checks
the ids' range and where its softmax calls the extension directly. ``rnnlab-layers`` (F only) is
the network of torch's row with ``rnnlab.LSTM`` in place of ``nn.LSTM``: Embedding ->
rnnlab.LSTM -> Linear -> cross_entropy, a model of rnnlab layers that compiles whole;
``rnnlab-kernels`` the same with ``backend="compiled"`` (the opaque operators instead of
torch.lstm, which AOTAutograd decomposes into its per-step operations for training). Dynamo
does not trace torch.nn.LSTM: it breaks the graph there, or gives up on the whole function and
runs it eagerly.

A training step is zero_grad, the loss, backward and an Adam step, with the model (not the
optimizer) under ``torch.compile`` (inductor, its default mode); an inference step is the
forward (A: the logits; F: the loss) under no_grad. Each compiled model is compiled on its
warm-up calls (the wall time is printed, from an empty inductor cache, with the graphs Dynamo
made and the graph breaks it took), then eager and compiled runs of a workload and mode are
interleaved, median of ``--repeats`` with the spread. Times are the CPU time of the (one)
computing thread, which leaves out the waits for a core shared with other processes; the wall
time's median is beside it. "x eager" is the compiled time over the eager time of the same
model in the same run (< 1: compile helps).

The last section times the eager calls of the compiled kernels two ways, interleaved: as
rnnlab makes them (the operators' kernel functions called directly,
:func:`rnnlab.nn.backends.compiled._kernel`), and through the dispatcher
(``torch.ops.rnnlab.*``), on A and on a one-token generation step of minGRU and minLSTM at F's
size, where a step is shortest.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

import rnnlab
from rnnlab.bench.lm_models import LMRunner, build_language_model, make_lm_batch
from rnnlab.bench.suite import gemm_peaks
from rnnlab.bench.workloads import WORKLOADS, build_model, loss_fn, make_batch
from rnnlab.nn.backends import _ext
from rnnlab.nn.backends import compiled as compiled_kernels

IMPLS = ("rnnlab", "rnnlab-layers", "rnnlab-kernels", "torch")
LM_ONLY = ("rnnlab-layers", "rnnlab-kernels")


class LayersLM(nn.Module):
    """Embedding -> rnnlab.LSTM -> Linear -> cross-entropy at every position: ids (B, T) and
    targets (B, T) -> the mean loss. torch's F model with rnnlab's layer."""

    def __init__(self, vocab: int, embed: int, hidden: int, layers: int, backend: str) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, embed)
        self.rnn = rnnlab.LSTM(embed, hidden, layers, backend=backend)
        self.decoder = nn.Linear(hidden, vocab)

    def loss(self, x: Tensor, y: Tensor) -> Tensor:
        out, _ = self.rnn(self.embedding(x))  # (B, T, H)
        logits = self.decoder(out)  # (B, T, V)
        return nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())


class Runner:
    """One model of a workload, eager or compiled: ``train()`` and ``infer()``."""

    def __init__(self, workload: str, impl: str, compiled: bool) -> None:
        w = WORKLOADS[workload]
        torch.manual_seed(0)
        if impl in LM_ONLY:
            backend = "compiled" if impl == "rnnlab-kernels" else "auto"
            self.model = LayersLM(w.vocab, w.inputs, w.hidden[0], len(w.hidden), backend)
            self.x, self.y = make_lm_batch(w)
            loss = self.model.loss
        elif w.language_model:
            self.model = build_language_model(w, impl)  # .loss(x, y): the loss at every step
            self.x, self.y = make_lm_batch(w)
            loss = self.model.loss
        else:
            self.model = build_model(w, impl)
            self.x, self.y = make_batch(w)
            criterion = loss_fn(w)
            loss = lambda x, y: criterion(self.model(x), y)  # noqa: E731
        self.loss = torch.compile(loss) if compiled else loss
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3)

    def train(self) -> None:
        self.opt.zero_grad(set_to_none=True)
        self.loss(self.x, self.y).backward()
        self.opt.step()

    def infer(self) -> None:
        with torch.no_grad():
            self.loss(self.x, self.y)


def _time(fn: Callable[[], None], inner: int) -> tuple[float, float]:
    """(CPU seconds of this thread, wall seconds) per call of ``fn``, over ``inner`` calls."""
    cpu, wall = time.thread_time(), time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.thread_time() - cpu) / inner, (time.perf_counter() - wall) / inner


def _timed(fns: dict, repeats: int, say: Callable[[str], None], what: str) -> dict:
    """Interleaved repeats of ``fns`` (key -> callable, each warmed up): key -> (CPU times,
    wall times), one per repeat."""
    inner = {k: max(1, int(0.3 / _time(fn, 1)[1])) for k, fn in fns.items()}
    times: dict = {k: ([], []) for k in fns}
    for rep in range(repeats):
        say(f"{what}: repeat {rep + 1}/{repeats}")
        keys = list(fns) if rep % 2 == 0 else list(fns)[::-1]
        for key in keys:
            cpu, wall = _time(fns[key], inner[key])
            times[key][0].append(cpu)
            times[key][1].append(wall)
    return times


def _row(label: str, times: tuple[list[float], list[float]]) -> tuple[float, str]:
    """The median CPU time, and the text of a row: CPU ms [min-max], wall ms."""
    cpu, wall = times
    med = statistics.median(cpu)
    text = (
        f"{label} {1e3 * med:9.2f} ms [{1e3 * min(cpu):.2f}-{1e3 * max(cpu):.2f}]  "
        f"wall {1e3 * statistics.median(wall):9.2f} ms"
    )
    return med, text


def _dynamo_counts() -> tuple[int, int]:
    """(graphs compiled, graph breaks) so far in this process, from Dynamo's counters."""
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"], sum(counters["graph_break"].values())


def run(workloads: list[str], repeats: int, say: Callable[[str], None]) -> list[str]:
    """The report's lines: environment, GEMM peak, then one line per (workload, mode, impl)."""
    torch.set_num_threads(1)
    torch._inductor.config.compile_threads = 1  # no compile workers on a pinned core
    # A cache of its own, empty: the compile times are those of a first run (inductor keeps
    # compiled graphs on disk, and a later run of the same graphs would take seconds).
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="compile_bench_")
    _ext.load()
    cpu = platform.processor() or platform.machine()
    with open("/proc/cpuinfo") as f:
        cpu = next((line.split(":", 1)[1].strip() for line in f if "model name" in line), cpu)
    peak = gemm_peaks({"2048^3": (2048, 2048, 2048)}, 5)["2048^3"]
    lines = [
        f"device cpu: {cpu} ({torch.backends.cpu.get_cpu_capability()}), float32, threads "
        f"{torch.get_num_threads()}, CPU affinity {sorted(os.sched_getaffinity(0))}",
        f"python {platform.python_version()}, torch {torch.__version__}, rnnlab "
        f"{rnnlab.__version__}, compiled kernels {_ext.unavailable_reason() or 'available'}",
        f"load average at start {os.getloadavg()}",
        "fp32 GEMM peak 2048^3: "
        + ", ".join(
            f"{k.removesuffix('_gflops')} {v:.0f} GFLOP/s"
            for k, v in peak.items()
            if k.endswith("_gflops")
        ),  # fmt: skip
        f"median of {repeats} interleaved repeats [min-max] of the computing thread's CPU time; "
        "wall: the median wall time; x eager = compiled / eager CPU time",
        "",
    ]
    for name in workloads:
        for mode in ("train", "infer"):
            runners: dict[tuple[str, bool], Runner] = {}
            notes: dict[tuple[str, bool], str] = {}
            impls = [i for i in IMPLS if i not in LM_ONLY or WORKLOADS[name].language_model]
            for impl in impls:
                for compiled in (False, True):
                    key = (impl, compiled)
                    say(f"{name} {mode}: {impl} {'compiled' if compiled else 'eager'} warm-up")
                    runner = Runner(name, impl, compiled)
                    fn = getattr(runner, mode)
                    graphs, breaks = _dynamo_counts()
                    start = time.perf_counter()
                    fn()  # compiles
                    first = time.perf_counter() - start
                    fn()
                    if compiled:
                        graphs2, breaks2 = _dynamo_counts()
                        notes[key] = (
                            f"compile {first:5.1f} s, {graphs2 - graphs} graphs, "
                            f"{breaks2 - breaks} graph breaks"
                        )
                    runners[key] = runner
            fns = {k: getattr(r, mode) for k, r in runners.items()}
            times = _timed(fns, repeats, say, f"{name} {mode}")
            for impl in impls:
                eager = statistics.median(times[(impl, False)][0])
                for compiled in (False, True):
                    label = f"{name} {mode:5s} {impl} {'compiled' if compiled else 'eager'}"
                    med, text = _row(f"{label:31s}", times[(impl, compiled)])
                    ratio = f"x eager {med / eager:5.2f}" if compiled else " " * 13
                    lines.append(f"{text}  {ratio}  {notes.get((impl, compiled), '')}".rstrip())
            lines.append("")
    lines += _dispatch_section(repeats, say)
    lines.append(f"load average at end {os.getloadavg()}")
    return lines


def _dispatch_section(repeats: int, say: Callable[[str], None]) -> list[str]:
    """Eager calls of the compiled kernels: directly (rnnlab's route) against through the
    dispatcher (the operators), interleaved."""
    direct = compiled_kernels._kernel

    def through_dispatcher(name: str, x: Tensor):
        return getattr(torch.ops.rnnlab, name)

    a = Runner("A", "rnnlab", compiled=False)
    calls = {"A train": a.train, "A infer": a.infer}
    for impl in ("rnnlab-mingru", "rnnlab-minlstm"):
        calls[f"F {impl} token"] = LMRunner(WORKLOADS["F"], impl).token
    lines = ["eager calls of the compiled kernels: direct (rnnlab's route) / through torch's "
             "dispatcher (torch.ops.rnnlab.*)"]  # fmt: skip
    for what, fn in calls.items():
        routes = {}
        for route, pick in (("direct", direct), ("dispatcher", through_dispatcher)):
            routes[route] = lambda fn=fn, pick=pick: _with_kernel(pick, fn)
            routes[route]()
        times = _timed(routes, repeats, say, what)
        meds = {}
        for route in routes:
            meds[route], text = _row(f"{what:26s} {route:10s}", times[route])
            lines.append(text)
        lines.append(f"{what:26s} direct / dispatcher {meds['direct'] / meds['dispatcher']:.3f}")
    return lines + [""]


def _with_kernel(pick, fn: Callable[[], None]) -> None:
    """Run ``fn`` with :func:`compiled._kernel` replaced by ``pick`` (this script's probe)."""
    saved = compiled_kernels._kernel
    compiled_kernels._kernel = pick
    try:
        fn()
    finally:
        compiled_kernels._kernel = saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", default="A,F")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default=None, help="write the report to this file too")
    args = parser.parse_args()
    lines = run(args.workloads.split(","), args.repeats, lambda m: print(m, flush=True))
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        with open(args.out, "w") as f:
            f.write(report)


if __name__ == "__main__":
    main()
