"""Training throughput of the LSTM variants (issue 23): LayerNorm LSTM and LSTMP on rnnlab's
compiled path (:func:`rnnlab.nn.backends.variant_compiled.lstm_variant`) against the same model
written the way users write it today: an ``nn.Module`` cell doing ``torch.mm`` and
``F.layer_norm`` per step, looped in Python under autograd (the style of pytorch's
``benchmarks/fastrnns/custom_lstms.py``, without TorchScript).

    taskset -c 1 .venv/bin/python benchmarks/variants_bench.py [--repeats 7] [--out FILE]

One training step = forward over the sequence, a squared-output loss, backward, one Adam step.
Both models hold the same parameters (copied) and the script checks that they give the same
output before timing. Method (STYLE.md item 12): one thread, a warm-up, then the two models
interleaved (plain, compiled, plain, ...) so that noise hits both alike; each figure is the
median over the repeats with min-max beside it, and each speed claim is the ratio of the two
medians from the same run. The fp32 GEMM peak of the host is measured in the same run and
printed beside the numbers. Freed memory is retained (rnnlab.allocator), as ``rnnlab train``
does, for both models.

Shapes are the recurrent layers of the bench workloads (rnnlab.bench.workloads): A (B128 T28
I128 H128), C (B64 T200 I128 H128), F (B64 T128 I64 H512, one layer), G (B20 T35 I650 H650).
LSTMP projects to P = H / 2.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F

import rnnlab
from rnnlab.allocator import retain_freed_memory
from rnnlab.bench.suite import gemm_peaks
from rnnlab.nn.backends import variant_compiled
from rnnlab.nn.cells import LSTMState
from rnnlab.nn.variants import VariantLSTMCell

SHAPES = {  # name: (B, T, I, H)
    "A": (128, 28, 128, 128),
    "C": (64, 200, 128, 128),
    "F": (64, 128, 64, 512),
    "G": (20, 35, 650, 650),
}
VARIANTS = {  # name: VariantLSTMCell options for hidden size H
    "layernorm": lambda H: {"layer_norm": True},
    "lstmp": lambda H: {"proj_size": H // 2},
}


# -- the plain model: what users write today -----------------------------------------------------
class PlainLayerNormLSTMCell(nn.Module):
    """LayerNorm LSTM step (Ba et al. 2016) with torch.mm and F.layer_norm; the spec's
    equations and parameters (gains on both products, gain and bias on c)."""

    def __init__(self, cell: VariantLSTMCell) -> None:
        super().__init__()
        self.H, self.eps = cell.hidden_size, cell.ln_eps
        for name in ("weight_ih", "weight_hh", "bias", "ln_ih_weight", "ln_hh_weight"):
            setattr(self, name, nn.Parameter(getattr(cell, name).detach().clone()))
        self.ln_c_weight = nn.Parameter(cell.ln_c_weight.detach().clone())
        self.ln_c_bias = nn.Parameter(cell.ln_c_bias.detach().clone())

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        h, c = state
        G = 4 * self.H
        a_x = F.layer_norm(torch.mm(x, self.weight_ih.t()), (G,), self.ln_ih_weight, None, self.eps)
        a_h = F.layer_norm(torch.mm(h, self.weight_hh.t()), (G,), self.ln_hh_weight, None, self.eps)
        i, f, g, o = (a_x + a_h + self.bias).chunk(4, 1)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        c = f * c + i * g  # (B, H)
        c_hat = F.layer_norm(c, (self.H,), self.ln_c_weight, self.ln_c_bias, self.eps)
        return o * torch.tanh(c_hat), c


class PlainLSTMPCell(nn.Module):
    """LSTM step with a projection of h (Sak et al. 2014; torch's proj_size) with torch.mm."""

    def __init__(self, cell: VariantLSTMCell) -> None:
        super().__init__()
        for name in ("weight_ih", "weight_hh", "bias", "weight_hr"):
            setattr(self, name, nn.Parameter(getattr(cell, name).detach().clone()))

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        h, c = state
        gates = torch.mm(x, self.weight_ih.t()) + torch.mm(h, self.weight_hh.t()) + self.bias
        i, f, g, o = gates.chunk(4, 1)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        c = f * c + i * g  # (B, H)
        return torch.mm(o * torch.tanh(c), self.weight_hr.t()), c  # (B, P)


class PlainLayer(nn.Module):
    """The cell looped over time in Python; x (B, T, I) -> (B, T, R)."""

    def __init__(self, cell: nn.Module) -> None:
        super().__init__()
        self.cell = cell

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor]) -> Tensor:
        outputs = []
        for x_t in x.unbind(1):
            state = self.cell(x_t, state)
            outputs.append(state[0])
        return torch.stack(outputs, 1)


# -- rnnlab's compiled path ----------------------------------------------------------------------
class CompiledLayer(nn.Module):
    """The same layer on the compiled variant kernel."""

    def __init__(self, cell: VariantLSTMCell) -> None:
        super().__init__()
        self.cell = cell

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor]) -> Tensor:
        out, _ = variant_compiled.lstm_variant(
            self.cell, x, LSTMState(*state), None, None, reverse=False
        )
        return out


def train_step(model: nn.Module, opt: torch.optim.Optimizer, x: Tensor, state) -> None:
    opt.zero_grad(set_to_none=True)
    model(x, state).square().mean().backward()
    opt.step()


def measure(shape: str, variant: str, repeats: int) -> dict:
    B, T, I, H = SHAPES[shape]
    torch.manual_seed(0)
    cell = VariantLSTMCell(I, H, **VARIANTS[variant](H))
    plain_cell = PlainLayerNormLSTMCell(cell) if variant == "layernorm" else PlainLSTMPCell(cell)
    models = {"plain": PlainLayer(plain_cell), "compiled": CompiledLayer(cell)}
    x = torch.randn(B, T, I)
    state = (torch.zeros(B, cell.output_size), torch.zeros(B, H))
    with torch.no_grad():  # same model: same output (over a prefix: roundoff grows with T)
        prefix = x[:, :20]
        ref, got = models["plain"](prefix, state), models["compiled"](prefix, state)
        err = ((got - ref).abs().max() / ref.abs().max()).item()
    if err > 1e-4:
        raise RuntimeError(f"{shape} {variant}: the two models differ (max rel. error {err:.1e})")
    opts = {k: torch.optim.Adam(m.parameters(), lr=1e-4) for k, m in models.items()}
    for k, m in models.items():  # warm-up, and how many steps make a sample of about 0.5 s
        train_step(m, opts[k], x, state)
    start = time.perf_counter()
    train_step(models["plain"], opts["plain"], x, state)
    inner = max(1, round(0.5 / (time.perf_counter() - start)))
    wall: dict[str, list[float]] = {k: [] for k in models}
    cpu: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(repeats):
        for k, m in models.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            for _ in range(inner):
                train_step(m, opts[k], x, state)
            wall[k].append((time.perf_counter() - start) / inner)
            cpu[k].append((time.process_time() - start_cpu) / inner)
    tokens = B * T
    row = {"shape": shape, "variant": variant, "B": B, "T": T, "I": I, "H": H,
           "R": cell.output_size, "max_rel_err": err}  # fmt: skip
    for k in models:  # tokens/s: (slowest, median, fastest)
        row[k] = [tokens / max(wall[k]), tokens / statistics.median(wall[k]), tokens / min(wall[k])]
        row[f"{k}_cpu"] = tokens / statistics.median(cpu[k])
    row["ratio"] = row["compiled"][1] / row["plain"][1]
    row["ratio_cpu"] = row["compiled_cpu"] / row["plain_cpu"]
    row["gflop"] = gemm_flops(B, T, I, H, cell.proj_size) / 1e9
    return row


def gemm_flops(B: int, T: int, I: int, H: int, P: int) -> float:
    """The GEMM FLOPs of one training step, the same for both models (x needs no gradient):
    x W_ih^T and dW_ih, h W_hh^T, dh and dW_hh, m W_hr^T, dm and dW_hr."""
    R = P or H
    return 2.0 * T * B * (2 * 4 * H * I + 3 * 4 * H * R + 3 * H * P)


def cpu_gemm_peak(n: int = 2048, repeats: int = 5) -> float:
    """fp32 GFLOP/s of torch.mm (MKL) at (n, n) x (n, n) from the process's CPU time: the
    host's peak where another process shares the core (gemm_peaks times the wall clock)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    out = torch.empty(n, n)
    torch.mm(a, b, out=out)
    times = []
    for _ in range(repeats):
        start = time.process_time()
        torch.mm(a, b, out=out)
        times.append(time.process_time() - start)
    return 2.0 * n**3 / statistics.median(times) / 1e9


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--shapes", default=",".join(SHAPES))
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--out", default=str(Path(__file__).parent / "results_variants.txt"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    retain_freed_memory()
    why = variant_compiled.variant_unavailable(VariantLSTMCell(2, 2), torch.zeros(1, 1, 2))
    if why is not None:
        raise SystemExit(f"the compiled variant kernel cannot run here: {why}")
    peak = gemm_peaks({"peak": (2048, 2048, 2048)}, 7)["peak"]
    lines = [
        "LSTM variants, training (forward + backward + Adam), tokens/s: compiled kernel vs the "
        "plain torch cell loop",
        f"rnnlab {rnnlab.__version__}, torch {torch.__version__}, {cpu_name()}, "
        f"threads {torch.get_num_threads()}, affinity {sorted(os.sched_getaffinity(0))}, "
        f"float32, repeats {args.repeats} (median, min-max)",
        f"fp32 GEMM peak (2048^3, one thread, rnnlab.bench.suite.gemm_peaks, wall clock): MKL "
        f"{peak['mkl_gflops']:.0f} GFLOP/s, oneDNN {peak.get('onednn_gflops', float('nan')):.0f}"
        f" GFLOP/s; MKL from CPU time: {cpu_gemm_peak():.0f} GFLOP/s",
        f"load average at start {os.getloadavg()}",
        "",
        "tok/s from wall-clock time (median, min-max) and, in [], from the process's CPU time "
        "(median), which time-sharing with other processes inflates less; GF: GEMM GFLOP per "
        "step (both models), GF/s: of each model's median CPU time",
        f"{'shape':<6}{'variant':<11}{'B':>4}{'T':>5}{'I':>5}{'H':>5}{'R':>5}"
        f"{'plain tok/s':>33}{'compiled tok/s':>35}{'ratio':>8}{'[cpu]':>8}{'GF':>6}"
        f"{'GF/s':>12}",
    ]
    print("\n".join(lines), flush=True)
    for shape in args.shapes.split(","):
        for variant in args.variants.split(","):
            r = measure(shape, variant, args.repeats)
            p, c = r["plain"], r["compiled"]
            line = (
                f"{shape:<6}{variant:<11}{r['B']:>4}{r['T']:>5}{r['I']:>5}{r['H']:>5}{r['R']:>5}"
                f"{p[1]:>10.0f} ({p[0]:>6.0f}-{p[2]:>6.0f}) [{r['plain_cpu']:>6.0f}]"
                f"{c[1]:>10.0f} ({c[0]:>6.0f}-{c[2]:>6.0f}) [{r['compiled_cpu']:>6.0f}]"
                f"{r['ratio']:>7.2f}x{r['ratio_cpu']:>7.2f}x{r['gflop']:>6.1f}"
                f"{r['gflop'] * r['plain_cpu'] / (r['B'] * r['T']):>6.0f}"
                f"{r['gflop'] * r['compiled_cpu'] / (r['B'] * r['T']):>6.0f}"
            )
            print(line, flush=True)
            lines.append(line)
    lines.append(f"load average at end {os.getloadavg()}")
    print(lines[-1])
    Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
