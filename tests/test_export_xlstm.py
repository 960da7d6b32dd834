"""ONNX export of sLSTM and mLSTM language models (:mod:`rnnlab.export.xlstm`): onnxruntime gives
rnnlab's float32 logits and every final state (sLSTM h, c, n, m; mLSTM h, C, n, m) within
rtol = atol = 1e-5 (``assert_allclose``: |got - want| <= 1e-5 + 1e-5 |want|), from zeros and
from a carried state; one token per call with the state carried equals the whole sequence;
pre-activations in the thousands stay finite, as the stabilised cell does."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rnnlab import LanguageModel
from rnnlab.nn import MLSTM, SLSTM
from serve_runs import make_run

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
from rnnlab.export import ExportError, export_model, load_onnx  # noqa: E402

V, E, H, L = 37, 13, 15, 3  # odd sizes, three layers
FIELDS = {"slstm": ("h", "c", "n", "m"), "mlstm": ("h", "C", "n", "m")}


def _model(cell: str, heads: int = 1, forget_gate: str = "sigmoid", seed: int = 0) -> LanguageModel:
    """A random LM of ``cell``, every parameter moved off its initialisation (zero biases would
    hide a misplaced bias). ``LanguageModel`` builds one head and a sigmoid forget gate; other
    layouts are swapped in as a layer of the same sizes."""
    torch.manual_seed(seed)
    model = LanguageModel(V, E, H, L, cell=cell, dropout=0.2)
    if heads != 1 or (cell == "slstm" and forget_gate != "sigmoid"):
        extra = {"forget_gate": forget_gate} if cell == "slstm" else {}
        layer = SLSTM if cell == "slstm" else MLSTM
        model.rnn = layer(E, H, L, dropout=0.2, num_heads=heads, **extra)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model.eval()


def _session(model: LanguageModel, path) -> ort.InferenceSession:
    export_model(model, path)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _feeds(state) -> dict[str, np.ndarray]:
    return {f"{name}0": value.numpy() for name, value in state._asdict().items()}


def _assert_close(got: list[np.ndarray], logits: torch.Tensor, state, tol: float = 1e-5) -> None:
    np.testing.assert_allclose(got[0], logits.numpy(), rtol=tol, atol=tol, err_msg="logits")
    for name, value, want in zip(state._fields, got[1:], state, strict=True):
        np.testing.assert_allclose(value, want.numpy(), rtol=tol, atol=tol, err_msg=name)


CASES = [
    ("slstm", 1, "sigmoid"),  # what LanguageModel builds
    ("slstm", 1, "exp"),  # log f = f~
    ("slstm", 3, "sigmoid"),  # block-diagonal R: 3 heads of 5; log f = log sigmoid
    ("slstm", 5, "exp"),
    ("mlstm", 1, "exp"),
    ("mlstm", 5, "exp"),  # 5 heads of 3: C (B, 5, 3, 3)
]


@pytest.mark.parametrize(("cell", "heads", "forget_gate"), CASES)
def test_xlstm_language_model_matches_onnxruntime(tmp_path, cell, heads, forget_gate):
    """From zeros, then from the state the first call left (nonzero), against the model's own
    forward (sLSTM's fused path, mLSTM's parallel form) and its reference loop."""
    model = _model(cell, heads, forget_gate)
    session = _session(model, tmp_path / "lm.onnx")
    assert [i.name for i in session.get_inputs()] == ["ids", *(f"{f}0" for f in FIELDS[cell])]
    assert [o.name for o in session.get_outputs()] == ["logits", *FIELDS[cell]]
    ids = torch.randint(0, V, (3, 11))
    for backend in ("auto", "reference"):
        state = model.init_state(3)
        feeds = _feeds(state)
        with torch.no_grad():
            for part in (ids[:, :7], ids[:, 7:]):  # the second call starts from the first's state
                out, state = model.rnn(model.embedding(part), state, backend=backend)
                logits = model.decoder(out)  # (B, T, V)
                got = session.run(None, {**feeds, "ids": part.numpy()})
                _assert_close(got, logits, state)
                feeds = dict(zip(feeds, got[1:], strict=True))
                assert all(np.abs(s).max() > 0 for s in feeds.values())  # carried, not zeros


@pytest.mark.parametrize(("cell", "heads", "forget_gate"), CASES)
def test_one_token_per_call_with_the_state_carried_is_the_whole_sequence(
    tmp_path, cell, heads, forget_gate
):
    """The step form: T = 1 per call, each call's state fed to the next, gives the full run's
    logits at every position and its final state (both through onnxruntime), and the model's."""
    model = _model(cell, heads, forget_gate, seed=1)
    session = _session(model, tmp_path / "step.onnx")
    ids = torch.randint(0, V, (2, 9))
    start = _feeds(model.init_state(2))
    whole = session.run(None, {**start, "ids": ids.numpy()})
    with torch.no_grad():
        logits, state = model(ids)  # (B, T, V)
    _assert_close(whole, logits, state)
    feeds = start
    for t in range(ids.shape[1]):
        got = session.run(None, {**feeds, "ids": ids[:, t : t + 1].numpy()})
        np.testing.assert_allclose(got[0][:, 0], whole[0][:, t], rtol=1e-5, atol=1e-5)
        feeds = dict(zip(feeds, got[1:], strict=True))
    for name, stepped, full in zip(FIELDS[cell], got[1:], whole[1:], strict=True):
        np.testing.assert_allclose(stepped, full, rtol=1e-5, atol=1e-5, err_msg=name)


@pytest.mark.parametrize(("heads", "forget_gate"), [(1, "exp"), (3, "sigmoid")])
def test_exported_slstm_stays_finite_at_huge_pre_activations(tmp_path, heads, forget_gate):
    """Input weights and biases times 1000: pre-activations in the thousands, so an
    unstabilised exp(ĩ) or exp(f̃) would be inf in float32 (above 88.7), and over 40 steps the
    stabiliser m of the exponential forget gate reaches about 1e5. The graph, as the cell, only
    takes exp(log gate - m) <= 1: everything stays finite and agrees with rnnlab. Tolerance
    1e-4: one float32 ulp of a pre-activation of 2000 is 1.2e-4, so the gates themselves are
    known only to about that (rnnlab's own float32 differs from float64 by up to 6e-3 here)."""
    model = _model("slstm", heads, forget_gate, seed=2)
    with torch.no_grad():
        for cell in model.rnn.cells:
            cell.weight_ih.mul_(1000.0)
            cell.bias.mul_(1000.0)
    session = _session(model, tmp_path / "big.onnx")
    ids = torch.randint(0, V, (4, 40))
    with torch.no_grad():
        cell = model.rnn.cells[0]
        pre = model.embedding(ids) @ cell.weight_ih.T + cell.bias  # (B, T, 4H)
        logits, state = model(ids)
    assert pre.abs().max() > 1000  # exp() of it overflows float32
    got = session.run(None, {**_feeds(model.init_state(4)), "ids": ids.numpy()})
    assert all(np.isfinite(g).all() for g in got)
    assert torch.isfinite(logits).all() and all(torch.isfinite(s).all() for s in state)
    if forget_gate == "exp":
        assert state.m.max() > 1e4  # exp(m) would be inf; m - m is what the graph uses
    _assert_close(got, logits, state, tol=1e-4)


def test_rnnlab_export_of_an_slstm_run_writes_the_usual_sidecar(tmp_path):
    """``rnnlab export RUN`` of a two-layer sLSTM character model: the sidecar lists every
    state input, and :func:`load_onnx` (rnnlab's input checks) runs the file."""
    from rnnlab.cli import main
    from rnnlab.runs import load_run

    settings = ["model.embedding_dim=8", "model.hidden_sizes=[10,10]", "model.cell=slstm"]
    run = make_run(tmp_path / "chars", "charlm-sample", settings)
    assert main(["export", str(run)]) == 0
    meta = json.loads((run / "model.onnx.json").read_text())
    assert [i["name"] for i in meta["inputs"]] == ["ids", "h0", "c0", "n0", "m0"]
    assert meta["inputs"][1]["shape"] == [2, "B", 10]
    assert meta["vocab_size"] == 31 and meta["level"] == "char"
    _, model, _ = load_run(run, "last")
    ids = torch.randint(0, 31, (2, 6))
    state = model.init_state(2)
    with torch.no_grad():
        want, _ = model(ids, state)
    got = load_onnx(run / "model.onnx")(ids.numpy(), *_feeds(state).values())
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-5)


def test_a_bidirectional_layer_is_refused(tmp_path):
    """A language model reads left to right; a bidirectional layer cannot be its step form."""
    model = _model("slstm")
    model.rnn = SLSTM(E, H, 1, bidirectional=True)
    with pytest.raises(ExportError, match="expected a unidirectional recurrent layer"):
        export_model(model, tmp_path / "lm.onnx")
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.parametrize("cell", ["slstm", "mlstm"])
def test_classifiers_of_xlstm_cells_are_refused_by_name(tmp_path, cell):
    """Only the language model has the xLSTM step form; a classifier's graph uses ONNX's own
    recurrent ops and says which cell it cannot take."""
    from rnnlab.config import load_preset
    from rnnlab.tasks import build_model

    config = load_preset(
        "imdb-seed", [f"model.cell={cell}", "model.hidden_sizes=[6]", "data.num_words=50"]
    )
    with pytest.raises(ExportError, match=r"expected an LSTM, GRU or RNN cell here, got [SM]LSTM"):
        export_model(build_model(config), tmp_path / "clf.onnx")
    assert list(tmp_path.iterdir()) == []
