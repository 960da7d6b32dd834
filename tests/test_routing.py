"""The routing table of rnnlab.nn.backends.scan_layer, one test per row: which kernel ran.

Every kernel function is wrapped to record its name (and its ``bf16`` argument) before the
layer runs, so these tests fail if a call ends up in another kernel than the table says. The
rows of the 2024 cells are in test_routing_2024.py, those of the LSTM and GRU variants in
test_routing_variants.py, and the dependency rules the table relies on in
test_architecture.py.
"""

from __future__ import annotations

import re

import pytest
import torch

import rnnlab
from compiled_kernels import require_compiled_kernels
from rnnlab.nn.backends import (
    _ext,
    compiled,
    compiled_unavailable,
    dispatch,
    fused,
    gru_variant_compiled,
    mlstm,
    native,
    parallel,
    reference,
    route_layer,
    scan_layer,
    slstm,
    variant_compiled,
    variant_fused,
)

KERNELS = {  # kernel name in the table -> (module, function)
    "reference": (reference, "scan"),
    "fused.lstm": (fused, "lstm"),
    "fused.gru": (fused, "gru"),
    "fused.rnn": (fused, "rnn"),
    "compiled.lstm_train": (compiled, "lstm_train"),
    "compiled.lstm_forward": (compiled, "lstm_forward"),
    "compiled.lstm_infer": (compiled, "lstm_infer"),
    "compiled.lstm_infer_pair": (compiled, "lstm_infer_pair"),
    "compiled.gru_train": (compiled, "gru_train"),
    "compiled.gru_forward": (compiled, "gru_forward"),
    "compiled.gru_infer": (compiled, "gru_infer"),
    "compiled.mingru": (compiled, "mingru"),
    "compiled.minlstm": (compiled, "minlstm"),
    "torch.lstm": (native, "lstm"),
    "torch.gru": (native, "gru"),
    "torch.rnn": (native, "rnn"),
    "torch.lstm_stack": (native, "stack"),  # one function, named by its cells (STACKS)
    "torch.gru_stack": (native, "stack"),
    "torch.rnn_stack": (native, "stack"),
    "parallel.mingru": (parallel, "mingru"),
    "parallel.minlstm": (parallel, "minlstm"),
    "fused.slstm": (slstm, "slstm"),
    "parallel.mlstm": (mlstm, "mlstm"),
    "fused.lstm_variant": (variant_fused, "lstm_variant"),
    "compiled.lstm_variant": (variant_compiled, "lstm_variant"),
    "fused.gru_variant": (variant_fused, "gru_variant"),
    "compiled.gru_variant": (gru_variant_compiled, "gru_variant"),
}
STACKS = {rnnlab.LSTMCell: "torch.lstm_stack", rnnlab.GRUCell: "torch.gru_stack"}
STACKS[rnnlab.RNNCell] = "torch.rnn_stack"


@pytest.fixture
def ran(monkeypatch) -> list[tuple[str, bool]]:
    """(kernel name, bf16 argument) of every kernel call, in order."""
    calls: list[tuple[str, bool]] = []
    for name, (module, attr) in KERNELS.items():
        if name not in STACKS.values():
            monkeypatch.setattr(module, attr, recorder(name, getattr(module, attr), calls))
    stack = native.stack

    def record_stack(cells, *args, **kwargs):
        calls.append((STACKS[type(cells[0])], False))
        return stack(cells, *args, **kwargs)

    monkeypatch.setattr(native, "stack", record_stack)
    return calls


def recorder(name: str, kernel, calls: list[tuple[str, bool]]):
    """``kernel``, appending (name, bf16) to ``calls`` on every call."""

    def record(*args, **kwargs):
        calls.append((name, kwargs.get("bf16", False)))
        return kernel(*args, **kwargs)

    return record


@pytest.fixture
def ext():
    return require_compiled_kernels()


def names(calls: list[tuple[str, bool]]) -> list[str]:
    return [name for name, _ in calls]


def call(layer, x, grad: bool = False, **kwargs):
    """Run ``layer`` on x with grad mode on or off."""
    with torch.set_grad_enabled(grad):
        return layer(x, **kwargs)


X = torch.randn(3, 4, 2)  # (B, T, I)
LENGTHS = dict(lengths=torch.tensor([4, 2, 3]), padding="pre")


def test_compiled_kernels_build_in_ci() -> None:
    """Fails when CI is set and the extension cannot build; skips with the reason elsewhere."""
    ext = require_compiled_kernels()
    assert all(hasattr(ext, name) for name in ("lstm_forward", "lstm_infer_pair", "gru_backward"))


def test_the_docstring_table_names_every_kernel() -> None:
    doc = scan_layer.__doc__
    assert all(name.split(".")[-1] in doc for name in KERNELS)
    assert set(KERNELS) == set(dispatch.Kernel.__args__)


# -- reference and return_gates -------------------------------------------------------------------
@pytest.mark.parametrize("cls", [rnnlab.LSTM, rnnlab.GRU, rnnlab.RNN])
@pytest.mark.parametrize("grad", [False, True])
def test_reference_backend_runs_the_loop(ran, cls, grad: bool) -> None:
    call(cls(2, 3, num_layers=2, bidirectional=True, backend="reference"), X, grad)
    assert names(ran) == ["reference"] * 4


def test_auto_with_return_gates_runs_the_loop(ran) -> None:
    out, _, gates = call(rnnlab.LSTM(2, 3, bidirectional=True), X, return_gates=True)
    assert names(ran) == ["reference"] * 2
    assert set(gates[0][1]) == {"i", "f", "g", "o", "c", "h"}


@pytest.mark.parametrize("backend", ["fused", "compiled", "torch"])
def test_forced_backend_with_return_gates_runs_the_loop(ran, backend: str) -> None:
    """return_gates is a per-call request: it outranks the layer's backend, which stays."""
    layer = rnnlab.LSTM(2, 3, bidirectional=True, backend=backend)
    out, _, gates = call(layer, X, return_gates=True)
    assert names(ran) == ["reference"] * 2 and layer.backend == backend
    reference_out, _ = call(layer, X, backend="reference")
    torch.testing.assert_close(out, reference_out, rtol=0, atol=0)
    assert set(gates[0][0]) == {"i", "f", "g", "o", "c", "h"}


def test_bf16_layer_records_float32_gates(ran) -> None:
    layer = rnnlab.LSTM(2, 3, precision="bf16")
    out, _, gates = call(layer, X, return_gates=True)
    assert names(ran) == ["reference"] and layer.precision == "bf16"
    fp32_out, _ = call(layer, X, backend="reference", precision="fp32")
    torch.testing.assert_close(out, fp32_out, rtol=0, atol=0)


def test_per_call_backend_overrides_the_layer_for_that_call_only(ran) -> None:
    layer = rnnlab.GRU(2, 3, backend="reference")
    call(layer, X, backend="fused")
    call(layer, X)
    assert names(ran) == ["fused.gru", "reference"] and layer.backend == "reference"
    with pytest.raises(ValueError, match=r"expected backend in .*, got 'cuda'"):
        call(layer, X, backend="cuda")
    with pytest.raises(ValueError, match=r"expected precision in \('fp32', 'bf16'\), got 'fp16'"):
        call(layer, X, precision="fp16")


# -- fused ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls, kernel", [(rnnlab.LSTM, "fused.lstm"), (rnnlab.GRU, "fused.gru")])
@pytest.mark.parametrize("grad", [False, True])
def test_fused_backend_runs_the_fused_kernel(ran, cls, kernel: str, grad: bool) -> None:
    call(cls(2, 3, bidirectional=True, backend="fused"), X, grad, **LENGTHS)
    assert names(ran) == [kernel] * 2


def test_auto_runs_fused_where_compiled_cannot(ran) -> None:
    call(rnnlab.RNN(2, 3, num_layers=2), X)  # no compiled RNN kernel
    layer = rnnlab.LSTM(2, 3).half()
    assert layer.resolve_backend(x=X.half()) == "fused"  # float16: no compiled kernel
    assert names(ran) == ["fused.rnn"] * 2


def test_auto_without_the_extension_runs_fused(ran, monkeypatch) -> None:
    monkeypatch.setattr(_ext, "_tried", False)
    monkeypatch.setattr(_ext, "_module", None)
    monkeypatch.setattr(_ext, "_reason", None)  # restored afterwards, like the two above
    monkeypatch.setenv("RNNLAB_NO_EXTENSION", "1")
    call(rnnlab.LSTM(2, 3), X)
    call(rnnlab.GRU(2, 3), X, grad=True)
    assert names(ran) == ["fused.lstm", "fused.gru"]
    with pytest.raises(RuntimeError, match="disabled by RNNLAB_NO_EXTENSION"):
        call(rnnlab.LSTM(2, 3, backend="compiled"), X)


def test_auto_warns_once_when_the_build_failed(ran, monkeypatch) -> None:
    monkeypatch.setattr(_ext, "_tried", True)
    monkeypatch.setattr(_ext, "_module", None)
    monkeypatch.setattr(_ext, "_build_failed", True)
    monkeypatch.setattr(_ext, "_reason", "building the extension failed: boom")
    monkeypatch.setattr(dispatch, "_warned_fallback", False)
    with pytest.warns(RuntimeWarning, match="fused path because building the extension failed"):
        call(rnnlab.LSTM(2, 3), X)
    call(rnnlab.LSTM(2, 3), X)  # no second warning (pytest's filter would turn it into one)
    assert names(ran) == ["fused.lstm"] * 2


def test_forced_compiled_that_cannot_run_names_the_cause(ran) -> None:
    with pytest.raises(RuntimeError, match="minGRU and minLSTM cells, not RNNCell.*backend=.auto."):
        call(rnnlab.RNN(2, 3, backend="compiled"), X)
    with pytest.raises(
        RuntimeError, match="need float32 or float64 input.*got input torch.float16"
    ):
        call(rnnlab.LSTM(2, 3, backend="compiled").half(), X.half())
    assert ran == []


# -- compiled -------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["auto", "compiled"])
def test_bidirectional_lstm_inference_runs_the_pair_kernel(ext, ran, backend: str) -> None:
    layer = rnnlab.LSTM(2, 3, num_layers=2, bidirectional=True, dropout=0.5, backend=backend)
    call(layer.train(), X)  # train mode under no_grad: still inference kernels
    assert ran == [("compiled.lstm_infer_pair", False)] * 2


def test_lstm_with_grad_runs_the_training_kernel(ext, ran) -> None:
    call(rnnlab.LSTM(2, 3, bidirectional=True), X, grad=True)
    call(rnnlab.LSTM(2, 3), X, grad=True, **LENGTHS)
    assert names(ran) == ["compiled.lstm_train"] * 3


def test_frozen_lstm_under_grad_mode_runs_inference_kernels(ext, ran) -> None:
    """ "grad" is whether autograd wants gradients of the scan, not the grad mode alone."""
    layer = rnnlab.LSTM(2, 3, bidirectional=True).requires_grad_(False)
    call(layer, X, grad=True)
    call(layer, X.clone().requires_grad_(True), grad=True)
    assert names(ran) == ["compiled.lstm_infer_pair", "compiled.lstm_train", "compiled.lstm_train"]


def test_unpadded_float32_lstm_inference_runs_lstm_infer(ext, ran) -> None:
    call(rnnlab.LSTM(2, 3, num_layers=2), X)
    assert names(ran) == ["compiled.lstm_infer"] * 2


def test_masked_or_float64_lstm_inference_runs_lstm_forward(ext, ran) -> None:
    call(rnnlab.LSTM(2, 3, bidirectional=True), X, **LENGTHS)
    call(rnnlab.LSTM(2, 3, bidirectional=True).double(), X.double())
    call(rnnlab.LSTM(2, 3), X, mask=torch.rand(3, 4) < 0.5)
    assert names(ran) == ["compiled.lstm_forward"] * 5


@pytest.mark.parametrize(
    "grad, kernels",
    [
        (True, ["compiled.gru_train"] * 3),
        (False, ["compiled.gru_infer"] * 2 + ["compiled.gru_forward"]),
    ],
)
def test_gru_runs_its_compiled_kernels(ext, ran, grad: bool, kernels: list[str]) -> None:
    """Unpadded float32 inference takes gru_infer (row blocks); padding or float64 the per-step
    gru_forward."""
    call(rnnlab.GRU(2, 3, bidirectional=True), X, grad)  # no pair kernel for GRU
    call(rnnlab.GRU(2, 3).double(), X.double(), grad, **LENGTHS)
    assert names(ran) == kernels


# -- bf16 -----------------------------------------------------------------------------------------
def test_precision_bf16_runs_compiled_lstm_kernels_in_bf16(ext, ran) -> None:
    layer = rnnlab.LSTM(2, 4, bidirectional=True, precision="bf16")
    call(layer, X)
    call(layer, X, grad=True)
    assert ran == [("compiled.lstm_infer_pair", True)] + [("compiled.lstm_train", True)] * 2


def test_autocast_runs_compiled_lstm_in_bf16_and_nothing_else(ext, ran) -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        call(rnnlab.LSTM(2, 4), X.bfloat16())  # bf16 input is cast up to the float32 weights
        call(rnnlab.GRU(2, 4), X)
        call(rnnlab.LSTM(2, 4, backend="fused"), X)
    assert ran == [("compiled.lstm_infer", True), ("compiled.gru_infer", False)] + [
        ("fused.lstm", False)
    ]


@pytest.mark.parametrize("backend", ["fused", "reference"])
def test_precision_bf16_where_compiled_does_not_run_raises(ran, backend: str) -> None:
    layer = rnnlab.LSTM(2, 4, backend=backend, precision="bf16")
    # the cause: why the compiled kernels cannot run, else that this call does not use them
    why = compiled_unavailable(layer.cell(0), X) if backend == "fused" else None
    why = why or f"this call uses backend '{backend}'"
    with pytest.raises(RuntimeError, match=f"but {re.escape(why)}"):
        call(layer, X)
    assert ran == []  # (return_gates=True is the exception: test_bf16_layer_records_...)


def test_precision_bf16_on_float64_names_the_dtype(ext) -> None:
    layer = rnnlab.LSTM(2, 4, precision="bf16").double()
    with pytest.raises(RuntimeError, match="bf16 mode takes float32 input and weights, got torch"):
        call(layer, X.double())


# -- torch: torch's own recurrent op on rnnlab's parameters ---------------------------------------
@pytest.mark.parametrize(
    "cls, kernel",
    [(rnnlab.LSTM, "torch.lstm"), (rnnlab.GRU, "torch.gru"), (rnnlab.RNN, "torch.rnn")],
)
@pytest.mark.parametrize("grad", [False, True])
def test_torch_backend_runs_torchs_op(ran, cls, kernel: str, grad: bool) -> None:
    """A whole stack in one call of the op; layer by layer where dropout comes between them."""
    call(cls(2, 3, num_layers=2, bidirectional=True, backend="torch"), X, grad)
    assert names(ran) == [f"{kernel}_stack"]
    ran.clear()
    layer = cls(2, 3, num_layers=2, bidirectional=True, dropout=0.5, backend="torch")
    call(layer, X, grad)  # training mode: rnnlab's dropout between the layers
    assert names(ran) == [kernel] * 4
    ran.clear()
    call(layer.eval(), X, grad)
    assert names(ran) == [f"{kernel}_stack"]
    ran.clear()
    call(cls(2, 3, backend="torch"), X, grad, return_gates=True)
    assert names(ran) == ["reference"]


def test_variant_cells_run_torchs_op_layer_by_layer(ran) -> None:
    """A variant cell (here an LSTM with a projection) is not a plain cell: one call a layer."""
    call(rnnlab.LSTM(2, 3, num_layers=2, proj_size=2, backend="torch"), X)
    assert names(ran) == ["torch.lstm"] * 2


@pytest.mark.parametrize("cls", [rnnlab.LSTM, rnnlab.GRU, rnnlab.RNN])
@pytest.mark.parametrize("seed", [0, 1])
def test_torch_backend_equals_the_reference(cls, seed: int) -> None:
    """Outputs, final states and every gradient (x, initial state, parameters) in float32."""
    torch.manual_seed(seed)
    B, T, I, H = 3, 7, 5, 4
    layer = cls(I, H, num_layers=2, bidirectional=True)
    with torch.no_grad():  # non-zero biases, so a misplaced bias would show
        for cell in layer.cells:
            for name, p in cell.named_parameters():
                if name.startswith("bias"):
                    p.uniform_(-0.5, 0.5)
    x = torch.randn(B, T, I)
    h0 = torch.randn(4, B, H)
    state = rnnlab.LSTMState(h0, torch.randn(4, B, H)) if cls is rnnlab.LSTM else h0
    results = []
    for backend in ("reference", "torch"):
        xb = x.clone().requires_grad_()
        sb = (
            type(state)(*(t.clone().requires_grad_() for t in state))
            if cls is rnnlab.LSTM
            else (state.clone().requires_grad_())
        )
        out, final = layer(xb, sb, lengths=torch.full((B,), T), backend=backend)
        finals = list(final) if cls is rnnlab.LSTM else [final]
        weights = torch.linspace(-1, 1, out.shape[-1])  # (D*H,) so every unit's gradient differs
        loss = (out * weights).sum() + sum(f.square().sum() for f in finals)
        leaves = [xb, *(sb if cls is rnnlab.LSTM else [sb]), *layer.parameters()]
        grads = torch.autograd.grad(loss, leaves)
        results.append([out, *finals, *grads])
    for got, want in zip(results[1], results[0], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


# -- auto's torch rows: where torch's op was measured faster ---------------------------------------
WIDE = dispatch.TORCH_LSTM_MIN_HIDDEN
XW = torch.randn(2, 3, 4)  # (B, T, I) for the wide layers


@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_auto_runs_torchs_op_for_wide_float32_lstms(ran, ext, grad, bidirectional) -> None:
    call(rnnlab.LSTM(4, WIDE, num_layers=2, bidirectional=bidirectional), XW, grad)
    assert names(ran) == ["torch.lstm_stack"]  # both layers in one call, as torch.nn.LSTM


def test_auto_keeps_the_compiled_kernels_elsewhere(ran, ext) -> None:
    """Narrower than the threshold, a mask, float64, bf16 (asked for or autocast), a GRU."""
    call(rnnlab.LSTM(4, WIDE - 1), XW, grad=True)
    call(rnnlab.LSTM(4, WIDE), XW, grad=True, lengths=torch.tensor([3, 2]))
    call(rnnlab.LSTM(4, WIDE).double(), XW.double())
    call(rnnlab.LSTM(4, WIDE, precision="bf16"), XW, grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        call(rnnlab.LSTM(4, WIDE), XW)
    call(rnnlab.GRU(4, WIDE), XW)
    assert ran == [
        ("compiled.lstm_train", False),
        ("compiled.lstm_train", False),
        ("compiled.lstm_forward", False),
        ("compiled.lstm_train", True),
        ("compiled.lstm_infer", True),
        ("compiled.gru_infer", False),
    ]


def test_auto_torch_row_equals_the_reference() -> None:
    """The wide LSTM through auto (torch's op): outputs, final state and every gradient."""
    torch.manual_seed(0)
    layer = rnnlab.LSTM(4, WIDE, num_layers=2)
    with torch.no_grad():
        for cell in layer.cells:
            cell.bias.uniform_(-0.5, 0.5)
    results = []
    for backend in ("reference", "auto"):
        x = XW.clone().requires_grad_()
        out, (h, c) = layer(x, backend=backend)
        loss = (out * torch.linspace(-1, 1, WIDE)).sum() + h.square().sum() + c.square().sum()
        results.append([out, h, c, *torch.autograd.grad(loss, [x, *layer.parameters()])])
    for got, want in zip(results[1], results[0], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
@pytest.mark.parametrize("cls, kernel", [(rnnlab.LSTM, "torch.lstm"), (rnnlab.GRU, "torch.gru")])
def test_auto_on_cuda_runs_torchs_op(ran, cls, kernel: str) -> None:
    layer = cls(2, 3, bidirectional=True).cuda()
    out, _ = call(layer, X.cuda(), grad=True)
    assert names(ran) == [kernel] * 2 and out.is_cuda


def test_torch_backend_with_padding_or_half_names_the_cause(ran) -> None:
    layer = rnnlab.LSTM(2, 3, backend="torch")
    with pytest.raises(ValueError, match="backend='torch' expected no mask .* Use backend='auto'"):
        call(layer, X, **LENGTHS)
    with pytest.raises(RuntimeError, match="backend='torch' runs float32 or float64 here, got"):
        call(layer.half(), X.half())
    with pytest.raises(RuntimeError, match="this call uses backend 'torch'"):
        call(rnnlab.LSTM(2, 3, backend="torch", precision="bf16").float(), X)
    assert ran == []


def test_route_layer_and_resolve_backend_report_the_decision(ext) -> None:
    layer = rnnlab.LSTM(2, 3, bidirectional=True)
    states = [rnnlab.LSTMState(torch.zeros(3, 3), torch.zeros(3, 3))] * 2
    with torch.no_grad():
        route = route_layer(list(layer.cells), X, states, None, backend="auto")
    assert route == dispatch.Route("compiled", ("compiled.lstm_infer_pair",), False, False)
    assert layer.resolve_backend(x=X) == "compiled"
    assert rnnlab.GRU(2, 3).resolve_backend(x=X) == "compiled"
    assert rnnlab.RNN(2, 3).resolve_backend(x=X) == "fused"
    assert layer.resolve_backend(return_gates=True) == "reference"
