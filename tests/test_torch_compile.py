"""torch.compile on models of rnnlab layers (issue 23, part 4).

torch graph-breaks on its own recurrent modules (pytorch#141184, #158007). rnnlab's compiled
kernels are torch operators (``torch.ops.rnnlab.*``, :mod:`rnnlab.nn.backends.ops`) with fake
kernels for the compiler, and the routing code traces, so ``Embedding -> rnnlab.LSTM (2 layers)
-> Linear`` compiles with ``fullgraph=True``. What is checked here:

* every operator's fake kernel gives the real kernel's shapes, dtypes and strides, and no
  operator mutates or returns an input (``torch.library.opcheck``); tracers (torch.compile, a
  dispatch mode) see the operators, while a plain eager call runs their kernels directly;
* compiled models equal eager ones (float32, 1e-5 relative): outputs, final states and every
  parameter's gradient in training, outputs under no_grad, and the graphs hold the kernels that
  the routing table names for eager calls (training forward and backward, inference, the
  bidirectional pair kernel), with lengths, in bf16 mode, for minGRU and minLSTM, and when the
  batch shape changes;
* the other backends: ``"reference"`` and ``"torch"`` compile whole; ``"fused"`` breaks the
  graph (its oneDNN ``_linear_pointwise.binary`` has no fake kernel, and its GRU writes into
  strided ``out=`` slices), so it compiles only without ``fullgraph`` and runs its scans
  eagerly, with the same results;
* a first call that is a compiled one (the extension not yet loaded) still traces whole.

The LSTM and GRU variants' operators and models are checked the same way in
test_torch_compile_variants.py.

Most cases use the ``aot_eager`` backend (Dynamo and AOTAutograd, no code generation): what is
under test is the tracing, not inductor's kernels. One case runs inductor.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch
from functorch.compile import make_boxed_func
from torch import Tensor, nn
from torch._dynamo.backends.common import aot_autograd
from torch.utils._python_dispatch import TorchDispatchMode

import rnnlab
from compiled_kernels import require_compiled_kernels
from rnnlab.nn.backends import compiled, ops
from rnnlab.nn.backends.ops import SMALL_INPUTS
from rnnlab.nn.registry import layer_class

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def ext():
    """The compiled extension (tests/compiled_kernels.py), and a Dynamo cache emptied after
    each test so that no compiled graph outlives its model."""
    module = require_compiled_kernels()
    torch._dynamo.reset()
    yield module
    torch._dynamo.reset()


# -- the operators' fake kernels ----------------------------------------------------------------
def _randn(*shape: int, dtype: torch.dtype = torch.float32) -> Tensor:
    return torch.randn(*shape, dtype=dtype)


def _lstm_args(B: int, T: int, I: int, H: int) -> list[Tensor]:
    return [_randn(B, T, I), _randn(B, H), _randn(B, H), _randn(4 * H, I), _randn(4 * H, H),
            _randn(4 * H)]  # fmt: skip


def _gru_args(B: int, T: int, I: int, H: int) -> list[Tensor]:
    return [_randn(B, T, I), _randn(B, H), _randn(3 * H, I), _randn(3 * H, H), _randn(3 * H),
            _randn(H)]  # fmt: skip


def _mask(B: int, T: int) -> Tensor:
    mask = torch.rand(B, T) < 0.7
    mask[:, 0] = True
    return mask


def _lstm_cases():
    ops = torch.ops.rnnlab
    for B, T, masked, reverse, bf16, I in [
        (3, 5, False, False, False, 6),
        (3, 5, True, True, False, 6),
        (1, 4, False, False, False, 6),  # B = 1: the C++ xt is a view of x, the operator copies it
        (2, 1, True, False, False, 6),  # T = 1: likewise
        (3, 5, True, True, True, 6),
        (4, 3, False, False, True, 6),
        (3, 5, True, True, False, 1),  # narrow inputs: no GEMM for x, dx gathered in the loop
        (3, 5, False, False, True, SMALL_INPUTS),  # ... and in bf16 mode x stays float32
        (2, 3, False, True, True, SMALL_INPUTS + 1),  # the first width past the bound
    ]:
        args = _lstm_args(B, T, I, 8)
        mask = _mask(B, T) if masked else None
        yield ops.lstm_train, (*args, mask, reverse, bf16)
        out, h, c, acts, hs, cs, xt = ops.lstm_train(*args, mask, reverse, bf16)
        grads = (torch.randn_like(out), torch.randn_like(h), torch.randn_like(c))
        for need_dx in (True, False):
            weights = (args[3], args[4])
            yield ops.lstm_backward, (*grads, xt, *weights, acts, hs, cs, mask, reverse, need_dx)
        yield ops.lstm_forward, (*args, mask, reverse, bf16)
        if not masked:
            yield ops.lstm_infer, (*args, reverse, bf16)
            yield ops.lstm_infer_pair, (*args, *_lstm_args(B, T, I, 8)[1:], bf16)
    yield ops.lstm_infer, (*_lstm_args(2, 3, 4, 300), False, False)  # too wide for row blocks


def _gru_cases():
    ops = torch.ops.rnnlab
    for B, T, masked, reverse in [(3, 5, False, False), (3, 5, True, True), (1, 4, False, True)]:
        args = _gru_args(B, T, 6, 8)
        mask = _mask(B, T) if masked else None
        yield ops.gru_train, (*args, mask, reverse)
        out, h, acts, ghn, hs, xt = ops.gru_train(*args, mask, reverse)
        grads = (torch.randn_like(out), torch.randn_like(h))
        for need_dx in (True, False):
            weights = (args[2], args[3])
            yield ops.gru_backward, (*grads, xt, *weights, acts, ghn, hs, mask, reverse, need_dx)
        yield ops.gru_forward, (*args, mask, reverse)
        if not masked:
            yield ops.gru_infer, (*args, reverse)
    yield ops.gru_infer, (*_gru_args(2, 3, 4, 400), False)  # too wide for row blocks


def _min_cases():
    ops = torch.ops.rnnlab
    for kind, G in ((0, 2), (1, 3)):
        for masked, reverse in ((False, False), (True, True)):
            B, T, H = 3, 5, 8
            k, bias, h0 = _randn(B, T, G * H), _randn(G * H), _randn(B, H)
            mask = _mask(B, T) if masked else None
            yield ops.min_scan_forward, (k, bias, h0, mask, reverse, kind)
            h = ops.min_scan_forward(k, bias, h0, mask, reverse, kind)
            dh = torch.randn_like(h)
            yield ops.min_scan_backward, (k, bias, h0, h, dh, mask, reverse, kind)


def test_fake_kernels_match_the_real_ones() -> None:
    """opcheck runs each operator on real tensors and on fake ones and compares every output's
    shape, dtype and strides; its schema test fails an operator that returns or mutates an
    input (as the C++ xt would for B = 1 or T = 1 without the operator's copy)."""
    torch.manual_seed(0)
    cases = [*_lstm_cases(), *_gru_cases(), *_min_cases()]
    assert len({op for op, _ in cases}) == 11  # every operator of rnnlab/nn/backends/ops.py
    for op, args in cases:
        result = torch.library.opcheck(op, args, test_utils=("test_schema", "test_faketensor"))
        assert set(result.values()) == {"SUCCESS"}, (op, result)
    op, args = cases[0]  # and one under AOTAutograd with dynamic shapes
    assert torch.library.opcheck(op, args, test_utils="test_aot_dispatch_dynamic")


def test_the_extension_check_is_a_compile_time_constant() -> None:
    """compiled._extension_reason carries the mark torch.compiler.assume_constant_result
    sets (set by hand there, to spare importing torch._dynamo with rnnlab); a torch that marks
    such functions differently fails here."""
    marked = torch.compiler.assume_constant_result(lambda: None)
    assert marked._dynamo_marked_constant is True
    assert compiled._extension_reason._dynamo_marked_constant is True
    assert compiled._extension_reason() is None  # the extension is loaded (the fixture)


def test_tracers_see_the_operators_and_eager_calls_skip_the_dispatcher() -> None:
    """A plain eager call runs the operator's kernel function itself; under a dispatch mode
    (here one that records what it sees, as make_fx's and FakeTensorMode's do) the layer calls
    the operator, so the mode sees it."""
    x = torch.randn(2, 3, 4)
    assert compiled._kernel("lstm_infer", x) is ops.KERNELS["lstm_infer"]

    class Seen(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.names: set[str] = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.names.add(str(func))
            return func(*args, **(kwargs or {}))

    layer = rnnlab.LSTM(4, 5)
    with torch.no_grad():
        expected = layer(x)[0]
        with Seen() as seen:
            assert compiled._kernel("lstm_infer", x) is torch.ops.rnnlab.lstm_infer
            out = layer(x)[0]
    assert "rnnlab.lstm_infer.default" in seen.names
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


# -- compiled models equal eager ones ----------------------------------------------------------
class TinyModel(nn.Module):
    """ids (B, T) -> Embedding (B, T, E) -> an rnnlab layer (B, T, D*H) -> Linear: logits
    (B, T, V), and the layer's final h (L*D, B, H)."""

    def __init__(self, layer: type[nn.Module], V: int = 20, E: int = 8, H: int = 16, **kw):
        super().__init__()
        torch.manual_seed(0)
        self.embedding = nn.Embedding(V, E)
        self.rnn = layer(E, H, **{"num_layers": 2, **kw})
        width = getattr(self.rnn, "output_size", H)  # P for an LSTMP
        self.head = nn.Linear((2 if kw.get("bidirectional") else 1) * width, V)

    def forward(self, ids: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
        out, state = self.rnn(self.embedding(ids), lengths=lengths)
        h = state[0] if isinstance(state, tuple) else state  # LSTMState: h
        return self.head(out), h


class Recorder:
    """A torch.compile backend that runs AOTAutograd's graphs as they are (as ``aot_eager``
    does) and keeps the name of every operator in them, forward and backward."""

    def __init__(self) -> None:
        self.ops: set[str] = set()
        self.backend = aot_autograd(fw_compiler=self._keep, bw_compiler=self._keep)

    def _keep(self, gm: torch.fx.GraphModule, example_inputs):
        self.ops |= {str(n.target) for n in gm.graph.nodes if n.op == "call_function"}
        return make_boxed_func(gm.forward)

    def rnnlab_ops(self) -> set[str]:
        return {name.split(".")[1] for name in self.ops if name.startswith("rnnlab.")}


def train_step(model: nn.Module, ids: Tensor, lengths: Tensor | None = None):
    """Logits, final h and every parameter's gradient of a fixed random loss of both (a
    compiled model shares its parameters with the model it wraps, ``_orig_mod``)."""
    module = getattr(model, "_orig_mod", model)  # for the parameters' names
    module.zero_grad(set_to_none=True)
    logits, h = model(ids, lengths)
    g = torch.Generator().manual_seed(1)
    loss = (logits * torch.randn(logits.shape, generator=g)).sum()
    loss = loss + (h * torch.randn(h.shape, generator=g)).sum()
    loss.backward()
    grads = {name: p.grad.clone() for name, p in module.named_parameters()}
    return logits.detach(), h.detach(), grads


def infer(model: nn.Module, ids: Tensor, lengths: Tensor | None = None) -> tuple[Tensor, Tensor]:
    with torch.no_grad():
        return model(ids, lengths)


def assert_equal_runs(a, b) -> None:
    """Outputs, states and gradients equal within float32's 1e-5 relative."""
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def compiled_whole(model: nn.Module) -> tuple[nn.Module, Recorder]:
    """``model`` (whose layers route to the compiled kernels) under torch.compile with
    fullgraph=True, and the recorder of the graphs it makes."""
    assert model.rnn.resolve_backend() == "compiled"
    recorder = Recorder()
    return torch.compile(model, backend=recorder.backend, fullgraph=True), recorder


def ids(B: int = 4, T: int = 7) -> Tensor:
    return torch.randint(0, 20, (B, T), generator=torch.Generator().manual_seed(T))


LAYER_OPS = {
    # (layer, bidirectional): kernels of a training step, kernels of an inference call
    ("LSTM", False): ({"lstm_train", "lstm_backward"}, {"lstm_infer"}),
    ("LSTM", True): ({"lstm_train", "lstm_backward"}, {"lstm_infer_pair"}),
    ("GRU", False): ({"gru_train", "gru_backward"}, {"gru_infer"}),
    ("GRU", True): ({"gru_train", "gru_backward"}, {"gru_infer"}),
}


@pytest.mark.parametrize(("name", "bidirectional"), sorted(LAYER_OPS))
def test_a_model_of_rnnlab_layers_compiles_whole(name: str, bidirectional: bool) -> None:
    """fullgraph=True: one graph from the ids to the logits, holding the compiled kernels the
    routing table gives eager calls; training and inference equal eager."""
    model = TinyModel(getattr(rnnlab, name), bidirectional=bidirectional)
    fast, recorder = compiled_whole(model)
    x = ids()
    assert_equal_runs(train_step(fast, x), train_step(model, x))
    train_ops, infer_ops = LAYER_OPS[(name, bidirectional)]
    assert recorder.rnnlab_ops() == train_ops
    recorder.ops.clear()
    model.eval()
    assert_equal_runs(infer(fast, x), infer(model, x))
    assert recorder.rnnlab_ops() == infer_ops


@pytest.mark.parametrize("name", ["LSTM", "GRU"])
def test_lengths_compile_with_a_graph_break_in_the_mask(name: str) -> None:
    """make_mask reads the lengths' values (their range check, and "no mask when every length
    is T"), which breaks the graph there; the layers compile around it and the masked kernels
    run as operators."""
    model = TinyModel(getattr(rnnlab, name), bidirectional=True)
    recorder = Recorder()
    fast = torch.compile(model, backend=recorder.backend)
    x, lengths = ids(), torch.tensor([7, 3, 5, 2])
    assert_equal_runs(train_step(fast, x, lengths), train_step(model, x, lengths))
    assert {f"{name.lower()}_train", f"{name.lower()}_backward"} <= recorder.rnnlab_ops()
    assert_equal_runs(infer(fast, x, lengths), infer(model, x, lengths))


def test_lengths_compile_whole() -> None:
    model = TinyModel(rnnlab.LSTM)
    fast = torch.compile(model, backend="aot_eager", fullgraph=True)
    x, lengths = ids(), torch.tensor([7, 3, 5, 2])
    assert_equal_runs(train_step(fast, x, lengths), train_step(model, x, lengths))


def test_training_at_wide_layers_compiles_the_kernels_not_torch_lstm() -> None:
    model = TinyModel(rnnlab.LSTM, H=256, num_layers=1)
    recorder = Recorder()
    fast = torch.compile(model, backend=recorder.backend, fullgraph=True)
    x = ids(2, 3)
    assert_equal_runs(train_step(fast, x), train_step(model, x))
    assert recorder.rnnlab_ops() == {"lstm_train", "lstm_backward"}


@pytest.mark.parametrize("how", ["precision", "autocast"])
def test_bf16_mode_compiles_whole(how: str) -> None:
    """precision="bf16", or CPU autocast to bf16 around a float32 layer, runs the same bf16
    kernels compiled as eager: equal results."""
    model = TinyModel(rnnlab.LSTM, precision="bf16" if how == "precision" else "fp32")
    fast = torch.compile(model, backend="aot_eager", fullgraph=True)
    x = ids()
    context = torch.autocast("cpu", dtype=torch.bfloat16) if how == "autocast" else nullcontext()
    with context:
        assert_equal_runs(train_step(fast, x), train_step(model, x))
        assert_equal_runs(infer(fast, x), infer(model, x))


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_narrow_inputs_compile_whole(precision: str) -> None:
    """A one-wide input (the kernels' narrow path: no GEMM for x, whose saved copy stays float32
    in bf16 mode too) under a second, ordinary layer compiles whole and equals eager."""
    model = TinyModel(rnnlab.LSTM, E=1, precision=precision)
    fast, recorder = compiled_whole(model)
    x = ids()
    assert_equal_runs(train_step(fast, x), train_step(model, x))
    assert_equal_runs(infer(fast, x), infer(model, x))
    assert {"lstm_train", "lstm_backward"} <= recorder.rnnlab_ops()


@pytest.mark.parametrize("cell", ["mingru", "minlstm"])
def test_min_cells_compile_whole(cell: str) -> None:
    model = TinyModel(layer_class(cell))
    fast, recorder = compiled_whole(model)
    x = ids()
    assert_equal_runs(train_step(fast, x), train_step(model, x))
    assert recorder.rnnlab_ops() == {"min_scan_forward", "min_scan_backward"}
    assert_equal_runs(infer(fast, x), infer(model, x))


def test_a_new_batch_shape_recompiles_with_dynamic_shapes() -> None:
    """The second shape makes Dynamo mark the sizes dynamic; the fakes take symbolic sizes."""
    model = TinyModel(rnnlab.LSTM)
    fast = torch.compile(model, backend="aot_eager", fullgraph=True)
    for B, T in [(4, 7), (3, 5), (5, 9)]:
        x = ids(B, T)
        assert_equal_runs(train_step(fast, x), train_step(model, x))


@pytest.mark.parametrize(("backend", "fullgraph"), [("reference", True), ("torch", True),
                                                    ("fused", False)])  # fmt: skip
@pytest.mark.parametrize("name", ["LSTM", "GRU"])
def test_the_other_backends(name: str, backend: str, fullgraph: bool) -> None:
    """Backends "reference" (unrolled over time) and "torch" (torch's own op) trace whole;
    "fused" runs its scans eagerly between graphs (see the module docstring). One layer, three
    steps: every step of the reference loop is traced, and every graph break costs a compile."""
    model = TinyModel(getattr(rnnlab, name), backend=backend, num_layers=1)
    fast = torch.compile(model, backend="aot_eager", fullgraph=fullgraph)
    x = ids(3, 3)
    assert_equal_runs(train_step(fast, x), train_step(model, x))
    assert_equal_runs(infer(fast, x), infer(model, x))


def test_inductor_compiles_a_model_of_rnnlab_layers() -> None:
    """The default backend: inductor generates C++ for the embedding, the head and the
    backward's sums around the opaque kernels; training and inference equal eager."""
    model = TinyModel(rnnlab.LSTM)
    fast = torch.compile(model, fullgraph=True)
    x = ids()
    assert_equal_runs(train_step(fast, x), train_step(model, x))
    assert_equal_runs(infer(fast, x), infer(model, x))


def test_a_first_call_that_is_compiled_traces_whole() -> None:
    """In a fresh process the extension is loaded while Dynamo traces the first call (the
    constant extension check), not inside the graph: fullgraph=True holds."""
    script = textwrap.dedent(
        """
        import torch
        import rnnlab
        from rnnlab.nn.backends import _ext
        from torch import nn
        assert not _ext._tried
        torch.manual_seed(0)
        model = nn.Sequential(nn.Embedding(20, 8), rnnlab.LSTM(8, 16))
        fast = torch.compile(model, backend="aot_eager", fullgraph=True)
        x = torch.randint(0, 20, (4, 7))
        out, _ = fast(x)
        assert _ext._tried and _ext.load() is not None
        torch.testing.assert_close(out, model(x)[0], rtol=1e-5, atol=1e-6)
        print("whole")
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0 and done.stdout.strip() == "whole", done.stderr[-3000:]


def test_a_classifier_with_a_projection_compiles_whole() -> None:
    """The MNIST model folds its Linear into the LSTM in eager mode (rnnlab.nn.fold); under
    torch.compile it runs the Linear first, in one graph, with the same logits and gradients."""
    from rnnlab.config import ModelConfig
    from rnnlab.models.classifiers import SequenceClassifier

    torch.manual_seed(0)
    model = SequenceClassifier(ModelConfig(input_size=6, projection=10, hidden_sizes=(8,)))
    fast = torch.compile(model, backend="aot_eager", fullgraph=True)
    x = torch.randn(4, 5, 6)
    eager = model(x)
    eager.square().sum().backward()
    want = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    got = fast(x)
    got.square().sum().backward()
    assert torch.allclose(got, eager, rtol=1e-5, atol=1e-6)
    for g, w in zip((p.grad for p in model.parameters()), want, strict=True):
        assert torch.allclose(g, w, rtol=1e-5, atol=1e-6)
