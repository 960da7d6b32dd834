"""The routing table's rows for the 2024 cells (minGRU, minLSTM, sLSTM, mLSTM), one test per
row: which kernel ran. The fixtures and the recorder are test_routing.py's."""

from __future__ import annotations

import pytest
import torch

import rnnlab
from rnnlab.nn.backends import _ext
from test_routing import LENGTHS, X, call, names
from test_routing import ext as compiled_extension
from test_routing import ran as recorded_kernels

ran = recorded_kernels  # the fixture that records which kernels ran, under its usual name
ext = compiled_extension  # the fixture that builds the extension or skips

# -- minGRU and minLSTM: the parallel path and the compiled time loop ------------------------------
MIN_LAYERS = [(rnnlab.MinGRU, "mingru"), (rnnlab.MinLSTM, "minlstm")]


@pytest.mark.parametrize("cls, kernel", MIN_LAYERS)
@pytest.mark.parametrize("grad", [False, True])
def test_min_cells_fused_runs_the_parallel_scan(ran, cls, kernel: str, grad: bool) -> None:
    call(cls(2, 3, num_layers=2, bidirectional=True, backend="fused"), X, grad, **LENGTHS)
    call(cls(2, 3, backend="fused").double(), X.double(), grad)
    assert ran == [(f"parallel.{kernel}", False)] * 5


@pytest.mark.parametrize("cls, kernel", MIN_LAYERS)
@pytest.mark.parametrize("backend", ["auto", "compiled"])
@pytest.mark.parametrize("grad", [False, True])
def test_min_cells_auto_and_compiled_run_the_compiled_loop(
    ran, ext, cls, kernel: str, backend: str, grad: bool
) -> None:
    """Masked or not, float32 or float64, with or without grad: one compiled row."""
    call(cls(2, 3, num_layers=2, bidirectional=True, backend=backend), X, grad, **LENGTHS)
    call(cls(2, 3, backend=backend).double(), X.double(), grad)
    assert ran == [(f"compiled.{kernel}", False)] * 5


@pytest.mark.parametrize("cls, kernel", MIN_LAYERS)
def test_min_cells_auto_falls_back_to_the_parallel_scan(ran, monkeypatch, cls, kernel) -> None:
    """Where the extension cannot run, auto takes the pure-torch parallel path; a forced
    compiled backend names the reason."""
    monkeypatch.setattr(_ext, "load", lambda: None)
    monkeypatch.setattr(_ext, "unavailable_reason", lambda: "no compiler (test)")
    call(cls(2, 3, backend="auto"), X, grad=True)
    assert ran == [(f"parallel.{kernel}", False)]
    with pytest.raises(RuntimeError, match="backend='compiled' cannot run here: no compiler"):
        call(cls(2, 3, backend="compiled"), X)


@pytest.mark.parametrize("cls, kernel", MIN_LAYERS)
def test_min_cells_reference_and_return_gates_run_the_loop(ran, cls, kernel: str) -> None:
    call(cls(2, 3, bidirectional=True, backend="reference"), X, grad=True)
    out, _, gates = call(cls(2, 3), X, return_gates=True)
    assert names(ran) == ["reference"] * 3
    assert set(gates[0][0]) == set(cls.cell_type.gate_names)


@pytest.mark.parametrize("cls, kernel", MIN_LAYERS)
def test_min_cells_forced_torch_names_the_fix(ran, cls, kernel) -> None:
    with pytest.raises(RuntimeError, match="backend='torch' has no kernel for Min.*torch has none"):
        call(cls(2, 3, backend="torch"), X)
    assert ran == []


@pytest.mark.parametrize("cls, kernel", MIN_LAYERS)
@pytest.mark.parametrize("backend", ["fused", "compiled"])
def test_min_cells_bf16_rows(ran, ext, cls, kernel: str, backend: str) -> None:
    """precision='bf16' and autocast: bf16 GEMM operands on either fast path; bf16 asked for
    where it cannot run raises, naming the cause."""
    call(cls(2, 4, precision="bf16", backend=backend), X, grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        call(cls(2, 4, backend=backend), X)
    call(cls(2, 4, backend=backend), X)
    path = "parallel" if backend == "fused" else "compiled"
    assert ran == [
        (f"{path}.{kernel}", True),
        (f"{path}.{kernel}", True),
        (f"{path}.{kernel}", False),
    ]
    with pytest.raises(RuntimeError, match="but this call uses backend 'reference'"):
        call(cls(2, 4, backend="reference", precision="bf16"), X)
    with pytest.raises(RuntimeError, match="bf16 mode takes float32 input.*got torch.float64"):
        call(cls(2, 4, precision="bf16", backend=backend).double(), X.double())


# -- sLSTM: the fused path ----------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["auto", "fused"])
@pytest.mark.parametrize("grad", [False, True])
def test_slstm_runs_its_fused_path(ran, backend: str, grad: bool) -> None:
    call(rnnlab.SLSTM(2, 4, num_layers=2, bidirectional=True, backend=backend), X, grad, **LENGTHS)
    assert names(ran) == ["fused.slstm"] * 4


def test_slstm_reference_and_return_gates_run_the_loop(ran) -> None:
    call(rnnlab.SLSTM(2, 4, backend="reference"), X, grad=True)
    _, _, gates = call(rnnlab.SLSTM(2, 4), X, return_gates=True)
    assert names(ran) == ["reference"] * 2
    assert set(gates[0][0]) == set(rnnlab.SLSTMCell.gate_names)


@pytest.mark.parametrize("backend", ["compiled", "torch"])
def test_slstm_forced_compiled_or_torch_names_the_fix(ran, backend: str) -> None:
    with pytest.raises(RuntimeError, match=f"backend='{backend}' has no kernel for SLSTMCell"):
        call(rnnlab.SLSTM(2, 4, backend=backend), X)
    with pytest.raises(RuntimeError, match="precision='bf16'.*not SLSTMCell"):
        call(rnnlab.SLSTM(2, 4), X, precision="bf16")
    assert ran == []


# -- mLSTM: the parallel form ---------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["auto", "fused"])
@pytest.mark.parametrize("grad", [False, True])
def test_mlstm_runs_its_parallel_form(ran, backend: str, grad: bool) -> None:
    call(rnnlab.MLSTM(2, 4, num_layers=2, bidirectional=True, backend=backend), X, grad, **LENGTHS)
    assert names(ran) == ["parallel.mlstm"] * 4


def test_mlstm_reference_return_gates_compiled_and_torch(ran) -> None:
    call(rnnlab.MLSTM(2, 4, backend="reference"), X, grad=True)
    _, _, gates = call(rnnlab.MLSTM(2, 4, num_heads=2), X, return_gates=True)
    assert names(ran) == ["reference"] * 2
    assert set(gates[0][0]) == set(rnnlab.MLSTMCell.gate_names)
    assert gates[0][0]["C_norm"].shape == (3, 4, 2)  # (B, T, NH): the memory's norm per head
    for backend in ("compiled", "torch"):
        with pytest.raises(RuntimeError, match=f"backend='{backend}' has no kernel for MLSTMCell"):
            call(rnnlab.MLSTM(2, 4, backend=backend), X)


# -- the decision without running it --------------------------------------------------------------
