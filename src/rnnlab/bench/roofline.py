"""The roofline of a bench step: its recurrent layers' matrix products, each at the rate that
GEMM shape reaches alone on this host, measured in the same run.

Shape legend: B batch, T steps, I a layer's input features, H its hidden units, G gates (LSTM
4, GRU 3), D directions.

Per layer and direction a forward is one input product (B*T, I) x (I, G*H) and T recurrent
products (B, H) x (H, G*H) (none for minGRU / minLSTM, whose gates read x alone). A training
step adds the backward's products: dx and dW_ih of the input side, dh and dW_hh of the
recurrent side, each with the FLOPs of its forward product, so three times the forward, counted
at the forward shapes' rates (the backward's shapes are those transposed; a rate measured on
them would differ by the layout, not by the work). What the roofline leaves out (the gates'
elementwise work, the head, the loss, the optimizer, Python) is what separates a path from it:
``share`` = roofline time / measured time, 1.0 for a step that ran nothing but its GEMMs at
their isolated rates. A path can pass 1.0: the isolated rate is torch's call at that shape
(MKL or oneDNN, whichever was faster), and a kernel that keeps its weights packed across the
T steps of a sequence (rnnlab's compiled kernels, brgemm) pays less per product than a call.
"""

from __future__ import annotations

from rnnlab.bench.workloads import Workload

__all__ = ["gemm_shapes", "roofline_seconds", "rate_key"]

Shapes = dict[str, tuple[tuple[int, int, int], int]]  # name -> ((M, K, N), calls per forward)


def gemm_shapes(w: Workload, gates: int = 4, recurrent: bool = True) -> Shapes:
    """The forward's products of ``w``'s recurrent layers: name -> ((M, K, N), how many such
    calls one forward makes)."""
    D = 2 if w.bidirectional else 1
    shapes: Shapes = {}
    for k, (I, H) in enumerate(w.recurrent_shapes()):
        shapes[f"{w.name} L{k} input G{gates}"] = ((w.batch * w.steps, I, gates * H), D)
        if recurrent:
            shapes[f"{w.name} L{k} step G{gates}"] = ((w.batch, H, gates * H), D * w.steps)
    return shapes


def rate_key(impl: str) -> str:
    """Which measured rate bounds ``impl``'s products: bf16 (oneDNN) for the bf16 rows, the int8
    dynamic product for the int8 rows, else the float32 one (the faster of MKL and oneDNN,
    ``"fp32"``)."""
    if "bf16" in impl:
        return "onednn_bf16_gflops"
    if "int8" in impl:
        return "int8_dynamic_gflops"
    return "fp32"


def _rate(measured: dict, key: str) -> float | None:
    if key == "fp32":
        return max(measured["mkl_gflops"], measured.get("onednn_gflops", 0.0))
    return measured.get(key)


def roofline_seconds(shapes: Shapes, gemm: dict[str, dict], key: str, train: bool) -> float | None:
    """Seconds of one step whose products each ran at their shape's measured rate (``gemm``:
    :func:`rnnlab.bench.suite.gemm_peaks`'s result holding every name of ``shapes``); None where
    the rate ``key`` was not measured."""
    seconds = 0.0
    for name, ((M, K, N), calls) in shapes.items():
        rate = _rate(gemm[name], key)
        if not rate:
            return None
        seconds += calls * 2.0 * M * K * N / (rate * 1e9)
    return 3.0 * seconds if train else seconds
