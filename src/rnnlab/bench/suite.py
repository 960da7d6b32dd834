"""The benchmark suite of issue 6: training and inference throughput of every implementation
on workloads A-E, the GEMM peak measured in the same run, and peak training memory.

Method (STYLE.md item 12): every implementation is warmed up, then the implementations are
interleaved (A B C A B C ...) so that machine noise hits them alike; each figure is the median
over repeats, with the spread (min and max) beside it, and every speed claim is a ratio to
torch.nn.LSTM (torch.nn.GRU for GRU rows) measured in the same run.
"""

from __future__ import annotations

import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch

import rnnlab
from rnnlab.bench.int8 import INT8_IMPLS, int8_engine, int8_runner
from rnnlab.bench.keras_models import KerasRunner, keras_unavailable
from rnnlab.bench.lm_models import LM_IMPLS, LMRunner
from rnnlab.bench.onnx_runner import OnnxRunner, onnxruntime_unavailable
from rnnlab.bench.roofline import gemm_shapes, rate_key, roofline_seconds
from rnnlab.bench.workloads import WORKLOADS, Workload, build_model, loss_fn, lstm_flops, make_batch
from rnnlab.nn.backends import _ext, _gemm

__all__ = ["environment", "gemm_peaks", "run_benchmarks", "measure_memory", "DEFAULT_IMPLS"]

DEFAULT_IMPLS = (
    "rnnlab",
    "rnnlab-bf16",
    "rnnlab-fused",
    "rnnlab-reference",
    "torch",
    "keras-torch",
    "onnxruntime",
)
INFER_ONLY = ("onnxruntime", *INT8_IMPLS)  # exported graphs, int8 models: inference only
GRU_IMPLS = ("rnnlab-gru", "torch-gru")
GRU_WORKLOADS = ("A", "C")  # GRU rows where the models have a GRU counterpart
BASELINE = {"rnnlab-gru": "torch-gru", "torch-gru": "torch"}
# int8 rows (rnnlab.bench.int8) against the float32 model they were made from; opt-in, as
# rnnlab-gru: --impls rnnlab,rnnlab-int8,torch,torch-int8
INT8_BASELINE = dict(INT8_IMPLS)
# the 2024 cells' rows (language models only): (cell, gate blocks, baseline). The fast paths
# are measured against rnnlab's LSTM, the reference loops against their fast path. FLOPs
# count the input GEMM only (sLSTM's head-wise recurrent products and mLSTM's (T x T)
# products are left out, so their GFLOP/s is a lower bound).
MIN_ROWS = {
    "rnnlab-mingru": ("mingru", 2, "rnnlab"),
    "rnnlab-minlstm": ("minlstm", 3, "rnnlab"),
    "rnnlab-mingru-ref": ("mingru", 2, "rnnlab-mingru"),
    "rnnlab-minlstm-ref": ("minlstm", 3, "rnnlab-minlstm"),
    "rnnlab-slstm": ("slstm", 4, "rnnlab"),
    "rnnlab-mlstm": ("mlstm", 4, "rnnlab"),
    "rnnlab-mingru-bf16": ("mingru", 2, "rnnlab-mingru"),
    "rnnlab-minlstm-bf16": ("minlstm", 3, "rnnlab-minlstm"),
}


def environment() -> dict:
    """Device, dtype, threads and versions, printed beside every number."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    keras_version = None
    if keras_unavailable() is None:
        import keras

        keras_version = f"{keras.__version__} ({keras.backend.backend()} backend)"
    _ext.load()
    return {
        "device": f"cpu: {cpu}",
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "dtype": "float32 (rnnlab-bf16: bf16 GEMM operands, float32 weights, gates and state)",
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "keras": keras_version,
        "rnnlab": rnnlab.__version__,
        "compiled_kernels": _ext.unavailable_reason() or "available",
        "onnxruntime": _version("onnxruntime"),
    }


def _version(package: str) -> str | None:
    try:
        return __import__(package).__version__
    except ModuleNotFoundError:
        return None


def _time(fn: Callable[[], None], inner: int) -> float:
    """Seconds per call of ``fn``, over ``inner`` back-to-back calls."""
    start = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - start) / inner


# Calls per GEMM-peak sample: about 2 GFLOP, at most MAX_CALLS. The bench's own shapes take 11
# (B's input) to 476 (E's step); a product of a few thousand FLOPs (a tiny workload, such as
# the tests') would take half a million calls a sample and, at its rate, 90 s in all.
MAX_CALLS = 1000


def calls_per_sample(flops: float) -> int:
    """How many back-to-back calls of a product of ``flops`` one GEMM-peak sample times."""
    return max(1, min(int(2e9 / flops), MAX_CALLS))


def gemm_peaks(
    shapes: dict[str, tuple[int, int, int]], repeats: int, int8: bool = False
) -> dict[str, dict]:
    """GEMM throughput (GFLOP/s, median of ``repeats``) at each named (M, K, N), interleaved:
    fp32 through MKL (torch.mm, torch's default) and oneDNN (what torch.nn.LSTM and rnnlab
    use), and bf16 through oneDNN (what rnnlab-bf16 uses); with ``int8``, also the dynamic
    int8 product the int8 rows run (``int8_dynamic``: activations quantized per call, GOP/s)."""
    results = {}
    for name, (M, K, N) in shapes.items():
        a, w = torch.randn(M, K), torch.randn(N, K)
        wt = w.t().contiguous()
        flops = 2.0 * M * K * N
        inner = calls_per_sample(flops)
        calls = {"mkl": lambda a=a, wt=wt: torch.mm(a, wt)}
        if _gemm.ONEDNN:
            calls["onednn"] = lambda a=a, w=w: _gemm.linear(a, w)
            ab, wb = a.bfloat16(), w.bfloat16()
            calls["onednn_bf16"] = lambda a=ab, w=wb: _gemm.linear(a, w)
        if int8:
            from rnnlab.nn.backends.quantized import Int8Weight

            q = Int8Weight.quantize(w, None)
            calls["int8_dynamic"] = lambda a=a, q=q: q(a)
        times: dict[str, list[float]] = {k: [] for k in calls}
        for fn in calls.values():
            _time(fn, 2)
        for _ in range(repeats):
            for k, fn in calls.items():
                times[k].append(_time(fn, inner))
        results[name] = {"shape": [M, K, N]}
        for k, ts in times.items():
            results[name][f"{k}_gflops"] = flops / statistics.median(ts) / 1e9
    return results


class _TorchRunner:
    """One model of a workload: ``train()`` = forward, loss, backward, Adam step;
    ``infer()`` = a forward under no_grad."""

    def __init__(self, w: Workload, impl: str, x, y) -> None:
        torch.manual_seed(0)
        self.model = build_model(w, impl)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.loss = loss_fn(w)
        self.x, self.y = x, y

    def train(self) -> None:
        self.opt.zero_grad(set_to_none=True)
        self.loss(self.model(self.x), self.y).backward()
        self.opt.step()

    def infer(self) -> None:
        with torch.no_grad():
            self.model(self.x)


def _impls_for(w: Workload, impls: tuple[str, ...]) -> list[str]:
    if w.language_model:  # whole language-model steps: no Keras or ONNX counterpart here
        return [i for i in impls if i in LM_IMPLS or i in INT8_IMPLS]
    chosen = [i for i in impls if i not in MIN_ROWS]  # language-model rows only
    if w.name in GRU_WORKLOADS and not w.bidirectional:
        chosen += [i for i in GRU_IMPLS if i not in chosen]
    return chosen


def _row_spec(impl: str) -> tuple[str, int, bool, str]:
    """(cell, gates, whether the gates read h_{t-1} through a product, baseline row) of a row:
    what its FLOPs and its roofline count."""
    if impl in MIN_ROWS:
        cell, gates, base = MIN_ROWS[impl]
        return cell, gates, False, base
    if impl.endswith("gru"):
        return "gru", 3, True, BASELINE.get(impl, "torch")
    return "lstm", 4, True, INT8_BASELINE.get(impl, "torch")


def _runner(w: Workload, impl: str):
    if impl in INT8_IMPLS:
        return int8_runner(w, impl, make_batch(w)[0])
    if w.language_model:
        return LMRunner(w, impl)
    x, y = make_batch(w)
    if impl == "keras-torch":
        return KerasRunner(w, x, y)
    if impl == "onnxruntime":
        return OnnxRunner(w, x)
    return _TorchRunner(w, impl, x, y)


def run_benchmarks(
    workloads: list[str],
    impls: tuple[str, ...] = DEFAULT_IMPLS,
    modes: tuple[str, ...] = ("train", "infer"),
    repeats: int = 7,
    budget_s: float = 20.0,
    memory: bool = True,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Run the suite; returns ``{"environment", "gemm", "results", "memory", "skipped"}``.

    ``results`` holds one record per (workload, impl, mode): samples_per_second (median),
    min/max, step_ms, ratio_vs_torch, gflops and fraction of the GEMM peaks. An
    implementation whose warm-up step is slow gets fewer repeats, so that it spends about
    ``budget_s`` per (workload, mode); its record says how many it got.
    """
    say = progress or (lambda msg: None)
    env = environment()
    skipped: dict[str, str] = {}
    if "keras-torch" in impls and (reason := keras_unavailable()) is not None:
        skipped["keras-torch"] = reason
        impls = tuple(i for i in impls if i != "keras-torch")
    if "onnxruntime" in impls and (reason := onnxruntime_unavailable()) is not None:
        skipped["onnxruntime"] = reason
        impls = tuple(i for i in impls if i != "onnxruntime")
    shapes = {"2048^3": (2048, 2048, 2048)}
    for name in workloads:  # every product of every row's roofline
        w = WORKLOADS[name]
        for impl in _impls_for(w, impls):
            _, gates, recurrent, _ = _row_spec(impl)
            shapes.update((k, mkn) for k, (mkn, _) in gemm_shapes(w, gates, recurrent).items())
    say("GEMM peaks")
    int8 = any(i in INT8_IMPLS for i in impls)
    gemm = gemm_peaks(shapes, max(3, repeats // 2), int8=int8)
    if int8:
        env["int8"] = (
            f"torch.ops.quantized.linear_dynamic, weights packed by {int8_engine()} (both int8 "
            "rows); int8 weights per output row, activations uint8 per call"
        )
    peak_mkl, peak_onednn = gemm["2048^3"]["mkl_gflops"], gemm["2048^3"].get("onednn_gflops")

    results = []
    for name in workloads:
        w = WORKLOADS[name]
        chosen = _impls_for(w, impls)
        runners = {}
        for impl in chosen:
            say(f"{name}: building {impl}")
            runners[impl] = _runner(w, impl)
        for mode in modes:
            per_call = {}
            active = {
                i: r
                for i, r in runners.items()
                if hasattr(r, mode) and (mode == "infer" or i not in INFER_ONLY)
            }
            if not active:  # "token": language models only
                continue
            for impl, r in active.items():  # warm up: lazy builds, allocator, optimizer state
                fn = getattr(r, mode)
                fn()
                per_call[impl] = _time(fn, 1)
            reps = {
                i: min(repeats, max(3, int(budget_s / max(t, 1e-9)))) for i, t in per_call.items()
            }
            inner = {i: max(1, int(0.05 / max(t, 1e-9))) for i, t in per_call.items()}
            times: dict[str, list[float]] = {i: [] for i in active}
            for k in range(repeats):
                say(f"{name} {mode}: repeat {k + 1}/{repeats}")
                for impl, r in active.items():
                    if k < reps[impl]:
                        times[impl].append(_time(getattr(r, mode), inner[impl]))
            for impl, ts in times.items():
                med = statistics.median(ts)
                cell, gates, recurrent, base = _row_spec(impl)
                train = mode == "train"
                flops = lstm_flops(w, gates, train=train, recurrent=recurrent)
                items = 1 if mode == "token" else w.batch  # token: one id, T = 1
                roof = roofline_seconds(
                    gemm_shapes(w, gates, recurrent), gemm, rate_key(impl), train
                )
                if mode == "token":
                    flops /= w.batch * w.steps
                    roof = None  # one step of batch 1 reads the weights: no GEMM roofline
                rec = {
                    "workload": name,
                    "impl": impl,
                    "cell": cell,
                    "mode": mode,
                    "samples_per_second": items / med,
                    "samples_per_second_min": items / max(ts),
                    "samples_per_second_max": items / min(ts),
                    "step_ms": 1e3 * med,
                    "repeats": len(ts),
                    "calls_per_repeat": inner[impl],
                    "baseline": base,
                    "recurrent_gflops": flops / med / 1e9,
                    "fraction_of_mkl_peak": flops / med / 1e9 / peak_mkl,
                    "roofline_ms": None if roof is None else 1e3 * roof,
                    "roofline_share": None if roof is None else roof / med,
                }
                if peak_onednn:
                    rec["fraction_of_onednn_peak"] = flops / med / 1e9 / peak_onednn
                results.append(rec)
        del runners
    by_key = {(r["workload"], r["impl"], r["mode"]): r for r in results}
    for r in results:
        base = by_key.get((r["workload"], r["baseline"], r["mode"]))
        r["ratio_vs_baseline"] = (
            r["samples_per_second"] / base["samples_per_second"] if base else None
        )
        torch_rec = by_key.get((r["workload"], "torch", r["mode"]))
        r["ratio_vs_torch_lstm"] = (
            r["samples_per_second"] / torch_rec["samples_per_second"] if torch_rec else None
        )
    mem = {}
    if memory:
        for name in [n for n in workloads if n in ("C", "E")]:
            for impl in _impls_for(WORKLOADS[name], impls):
                if impl in INFER_ONLY:
                    continue  # a training step's memory; exported graphs only infer
                if impl in ("rnnlab-reference", "keras-torch") and name == "E":
                    continue  # minutes per step at 784 steps; not the comparison asked for
                say(f"{name}: peak memory of {impl}")
                mem[f"{name}:{impl}"] = measure_memory(name, impl)
    return {"environment": env, "gemm": gemm, "results": results, "memory": mem, "skipped": skipped}


def measure_memory(workload: str, impl: str) -> dict:
    """Peak memory of a training step, in a fresh process (torch's CPU allocator does not report
    its use, and tracemalloc does not see it): the resident-set high-water mark (VmHWM) after
    two training steps, and its growth over the resident set just before them."""
    cmd = [sys.executable, "-m", "rnnlab.bench", "--memory-probe", f"{workload}:{impl}"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1:] or [f"exit {done.returncode}"]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def memory_probe(spec: str) -> dict:
    """The child side of :func:`measure_memory`."""
    workload, impl = spec.split(":", 1)
    w = WORKLOADS[workload]
    _ext.load()
    runner = _runner(w, impl)
    before = _current_rss_mb()
    for _ in range(2):
        runner.train()
    peak = _peak_rss_mb()
    return {"rss_before_mb": before, "peak_rss_mb": peak, "step_peak_mb": peak - before}


def _peak_rss_mb() -> float:
    """VmHWM of this process. Not getrusage's ru_maxrss: Linux keeps that across fork and exec,
    so a child would report its parent's high-water mark."""
    with open("/proc/self/status") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    return kib / 1024


def _current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() / 2**20
