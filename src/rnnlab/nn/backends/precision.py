"""Which precision a recurrent layer's kernels compute in: the bf16 rows of the routing table in
:func:`rnnlab.nn.backends.scan_layer` (:func:`use_bf16`), CPU autocast, and whether a scan needs
its backward saved. The dispatcher imports these; they never pick a kernel themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from rnnlab.nn.backends import compiled, variant_compiled
from rnnlab.nn.cells import LSTMCell
from rnnlab.nn.mincells import MinCell
from rnnlab.nn.variants import VariantLSTMCell

__all__ = [
    "PRECISIONS",
    "Precision",
    "autocast_bf16",
    "autocast_input",
    "native_bf16",
    "needs_backward",
    "use_bf16",
]

Precision = Literal["fp32", "bf16"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "bf16")


def native_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX tiles), where bf16 GEMMs
    run faster than float32; elsewhere oneDNN emulates them and they run slower. Read from
    torch's own CPU checks, which are private: a torch without them reads as no."""
    cpu = torch.cpu
    try:
        return bool(cpu._is_avx512_bf16_supported() or cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):
        return False


def use_bf16(
    cell: nn.Module,
    x: Tensor,
    *,
    backend: Literal["reference", "fused", "compiled", "torch"],
    precision: Precision,
) -> bool:
    """Whether the LSTM kernels run their GEMMs in bf16: with ``precision="bf16"``, or under
    ``torch.autocast("cpu", dtype=torch.bfloat16)`` where the compiled kernels run.

    bf16 mode keeps float32 master weights, gates, cell state c and outputs: only the GEMM
    operands (x, h, the weights, the backward's gate gradients) are rounded to bf16, and oneDNN
    accumulates in fp32 on avx512_bf16. Asking for it (``precision="bf16"``) where the compiled
    kernels do not run raises, naming the cause; autocast there falls back to float32."""
    if isinstance(cell, MinCell):
        return _min_bf16(cell, x, backend=backend, precision=precision)
    if isinstance(cell, VariantLSTMCell):
        return _variant_bf16(cell, x, backend=backend, precision=precision)
    if precision == "fp32":
        return backend == "compiled" and isinstance(cell, LSTMCell) and autocast_bf16()
    if backend == "compiled" and isinstance(cell, LSTMCell) and x.dtype == torch.float32:
        return True
    why = compiled.compiled_unavailable(cell, x) if backend != "reference" else None
    if why is None and backend == "compiled":
        why = f"bf16 mode takes float32 input and weights, got {x.dtype}"
    why = why or f"this call uses backend {backend!r}"
    raise RuntimeError(
        f"precision='bf16' runs the LSTM's GEMMs in bf16 on the compiled kernels only "
        f"(float32 parameters, CPU), but {why}. Use backend='auto' or 'compiled' where the "
        "extension builds, or precision='fp32'."
    )


def _variant_bf16(cell: VariantLSTMCell, x: Tensor, *, backend: str, precision: Precision) -> bool:
    """:func:`use_bf16`'s rows for the LSTM variants: the compiled variant kernel's GEMMs, where
    its bf16 mode runs (float32, even H and R, a working bf16 ukernel); autocast elsewhere
    stays float32."""
    why = None
    if backend == "compiled":
        why = variant_compiled.variant_unavailable(cell, x, bf16=True)
    if precision == "fp32":
        return backend == "compiled" and why is None and autocast_bf16()
    if backend == "compiled" and why is None:
        return True
    raise RuntimeError(
        f"precision='bf16' runs the LSTM variant's GEMMs in bf16 on its compiled kernel only, "
        f"but {why or f'this call uses backend {backend!r}'}. Use backend='auto' or "
        "'compiled' where the extension builds, or precision='fp32'."
    )


def _min_bf16(cell: MinCell, x: Tensor, *, backend: str, precision: Precision) -> bool:
    """:func:`use_bf16`'s rows for minGRU / minLSTM: the input GEMM of their fused and compiled
    paths."""
    if precision == "fp32":
        return backend in ("fused", "compiled") and autocast_bf16()
    if backend in ("fused", "compiled") and x.dtype == torch.float32:
        return True
    why = (
        f"this call uses backend {backend!r}"
        if backend not in ("fused", "compiled")
        else f"bf16 mode takes float32 input and weights, got {x.dtype}"
    )
    raise RuntimeError(
        f"precision='bf16' runs {type(cell).__name__}'s input GEMM in bf16 on its fast paths "
        f"(backend 'auto', 'compiled' or 'fused'), but {why}. Use backend='auto', or "
        "precision='fp32'."
    )


def needs_backward(x: Tensor, cells: Sequence[nn.Module], states: Sequence[Any]) -> bool:
    """Whether autograd will want gradients of this scan: of x, the cells' weights or the
    initial states. Otherwise the compiled kernels skip saving what a backward pass needs."""
    if not torch.is_grad_enabled():
        return False
    tensors = [x, *(p for cell in cells for p in cell.parameters())]
    for state in states:
        tensors += list(state) if isinstance(state, tuple) else [state]
    return any(t.requires_grad for t in tensors)


def autocast_bf16() -> bool:
    """Whether ``torch.autocast("cpu", dtype=torch.bfloat16)`` is active."""
    return torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16


def autocast_input(x: Tensor, cell: nn.Module) -> Tensor:
    """Under CPU autocast a layer's input may arrive in bf16 (from an autocast Linear); the
    recurrent layers keep float32 weights and state, so such input is cast up to them."""
    if x.dtype == torch.bfloat16 and cell.weight_ih.dtype == torch.float32 and autocast_bf16():
        return x.float()
    return x
