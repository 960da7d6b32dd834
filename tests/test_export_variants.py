"""ONNX export of the LSTM variants (issue 23, :mod:`rnnlab.export.variants`): a layer with
LayerNorm or projection becomes a ``Scan`` of :class:`VariantLSTMCell`'s step, one with only
peepholes (the op's input P), recurrent dropout or zoneout (the identity in eval mode) ONNX's
own ``LSTM`` op, and onnxruntime gives the model's outputs for every kind that has an
exporter: trained runs of the sample presets, and models with every parameter moved off its
initialisation (zero biases and unit gains would hide a misplaced one) over single rows,
single steps, padding on either side and both directions.

The tolerance is the existing export tests' 1e-5, with the same model in float64 as the judge
(:func:`_assert_agree`): the export must be within 1e-5 of float64, plus ten times rnnlab's
own float32 error. Where rnnlab's float32 is good to 1e-7 that is 1e-5 as before; a cell with
LayerNorm can be ill-conditioned, though: a c_new row spread less than sqrt(eps) is normalised
with a gain near 1/sqrt(eps), and one row of the trained text run below magnifies each step's
float32 rounding about a thousandfold (1e-7 to 7e-4 in ten steps of its second level), so
rnnlab's own float32 ends 3.4e-6 from float64 and the export 1.7e-5; with the weights moved
by one float32 ulp, ten times over, rnnlab's error ranged over 3e-6..2e-5 and the export's over
1e-6..5e-5, at most 0.57 of the bound."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from rnnlab import LanguageModel
from rnnlab.config import load_preset
from rnnlab.nn import VariantLSTMCell
from rnnlab.nn.seq2seq import BOS, Seq2Seq
from rnnlab.runs import load_run, train
from rnnlab.tasks import build_model, get_task
from tiny import merge_settings

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from rnnlab.export import ExportError, export_model, export_run, load_onnx  # noqa: E402
from rnnlab.export.graph import onnx_kind  # noqa: E402

TOL = 1e-5  # as tests/test_export.py and tests/test_export_lm.py
SHAPES = [(1, 1), (3, 7), (8, 13), (2, 31)]  # (B, T): single rows, single steps, odd sizes
QUIET = ["run.log_every=1000", "run.checkpoint_every=1000", "train.time_limit=0"]
NOISE = ["model.zoneout=0.1", "model.recurrent_dropout=0.2"]  # eval mode: the identity
OPTIONS = {"layer_norm": True, "proj_size": 3, "peepholes": True}


def _assert_agree(got: np.ndarray, want: torch.Tensor, exact: torch.Tensor, what: str = "") -> None:
    """onnxruntime's float32 ``got`` within TOL + 10 own of the float64 model's ``exact``, own
    being the error of rnnlab's float32 ``want``, max |want - exact| (1e-7 unless LayerNorm
    magnifies the rounding: module docstring)."""
    own = float((want.double() - exact).abs().max())
    np.testing.assert_allclose(got, exact.numpy(), rtol=0, atol=TOL + 10 * own, err_msg=what)


def _float64(model: torch.nn.Module) -> torch.nn.Module:
    return copy.deepcopy(model).double()


def _ops(path: Path) -> set[str]:
    """The op types of the file's top graph."""
    return {node.op_type for node in onnx.load(str(path)).graph.node}


def _perturbed(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model.eval()


def _train(tmp_path: Path, preset: str, *settings: str) -> Path:
    """A run of ``preset`` trained with ``settings`` (one short epoch: a few CPU seconds)."""
    torch.manual_seed(0)
    run = tmp_path / preset
    train(preset, run, overrides=merge_settings(QUIET, *settings))
    return run


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


# -- trained runs of every kind with an exporter --------------------------------------------------


def test_image_run_with_projection_and_peepholes(tmp_path):
    """No LayerNorm in training here: MNIST's blank rows overflow its gradient (see
    tests/test_variant_presets.py); the image model with LayerNorm is tested below."""
    run = _train(
        tmp_path,
        "mnist-sample",
        "model.projection=16",
        "model.hidden_sizes=[16]",
        "model.bidirectional=true",
        "train.batch_size=500",
        "train.epochs=1",
        "model.proj_size=8",
        "model.peepholes=true",
        *NOISE,
    )
    result = export_run(run)
    assert "Scan" in _ops(result.path) and "LSTM" not in _ops(result.path)
    config, model, _ = load_run(run)
    x = get_task(config).load().test.inputs[0][:300]  # (B, 28, 28) real test images
    with torch.no_grad():
        want, exact = model(x), _float64(model)(x.double())
    got = load_onnx(result.path)(x.numpy())
    _assert_agree(got, want, exact)
    assert (got.argmax(1) == want.numpy().argmax(1)).all()


def test_masked_text_run_with_every_option_and_pre_padding(tmp_path):
    """Two bidirectional levels of 8 cells projected to 4, LayerNorm, peepholes, ids padded in
    front (the graph turns them to post padding before the Scans)."""
    run = _train(
        tmp_path,
        "imdb-sample",
        "model.embedding_dim=8",
        "model.hidden_sizes=[8, 8]",
        "data.maxlen=40",
        "data.padding=pre",
        "train.epochs=1",
        "train.batch_size=250",
        "data.num_words=2000",
        "model.proj_size=4",
        "model.layer_norm=true",
        "model.peepholes=true",
        "model.mask=true",
        *NOISE,
    )
    result = export_run(run)
    _, model, _ = load_run(run)
    g = torch.Generator().manual_seed(0)  # not the test reviews: building them takes seconds
    ids = torch.randint(1, 2000, (64, 40), generator=g)
    lengths = torch.randint(1, 41, (64,), generator=g)
    lengths[0] = 40
    for row, n in zip(ids, lengths.tolist(), strict=True):  # padded in front, as the run's data
        row.copy_(torch.cat([torch.zeros(40 - n, dtype=row.dtype), row[:n]]))
    with torch.no_grad():
        want, exact = model(ids, lengths), _float64(model)(ids, lengths)
    got = load_onnx(result.path)(ids.numpy(), lengths.numpy())
    _assert_agree(got, want, exact)
    assert (got.argmax(1) == want.numpy().argmax(1)).all()


def test_language_model_run_carries_its_state_and_steps_one_token_at_a_time(tmp_path):
    """LSTMP with LayerNorm and peepholes, decoder tied to the 16-wide embedding: h0 (L, B, 16),
    c0 (L, B, 32); a 2nd call from the 1st call's state gives the model's logits and states,
    and one token per call the whole sequence's logits. One epoch of the corpus takes a minute,
    so this run trains for one second (train.time_limit): how many steps it makes depends on
    the host, what is checked holds for any weights."""
    run = _train(
        tmp_path,
        "wordlm-sample",
        "model.embedding_dim=16",
        "model.hidden_sizes=[32]",
        "data.bptt=16",
        "train.batch_size=8",
        "train.time_limit=1",
        "train.eval_batch_size=4",
        "data.eval_tokens=2000",
        "train.epochs=1",
        "model.tie_weights=true",
        "model.proj_size=16",
        "model.layer_norm=true",
        "model.peepholes=true",
        *NOISE,
    )
    result = export_run(run)
    assert [(i["name"], i["shape"]) for i in result.metadata["inputs"]] == [
        ("ids", ["B", "T"]),
        ("h0", [1, "B", 16]),
        ("c0", [1, "B", 32]),
    ]
    _, model, _ = load_run(run)
    exact_model = _float64(model)
    session = _session(result.path)
    ids = torch.randint(0, model.vocab_size, (3, 10), generator=torch.Generator().manual_seed(0))
    state = model.init_state(3)
    exact_state = type(state)(*(s.double() for s in state))
    feeds = {"h0": state.h.numpy(), "c0": state.c.numpy()}
    with torch.no_grad():
        for part in (ids[:, :6], ids[:, 6:]):  # the 2nd call starts from the 1st's state
            logits, state = model(part, state)
            exact_logits, exact_state = exact_model(part, exact_state)
            got = session.run(None, {**feeds, "ids": part.numpy()})
            for name, value, want, exact in zip(
                ("logits", "h", "c"),
                got,
                (logits, *state),
                (exact_logits, *exact_state),
                strict=True,
            ):
                _assert_agree(value, want, exact, name)
            feeds = {"h0": got[1], "c0": got[2]}
    zeros = {"h0": np.zeros((1, 3, 16), np.float32), "c0": np.zeros((1, 3, 32), np.float32)}
    whole = session.run(["logits"], {**zeros, "ids": ids.numpy()})[0]  # (B, T, V)
    feeds = zeros
    for t in range(ids.shape[1]):
        logits, h, c = session.run(None, {**feeds, "ids": ids[:, t : t + 1].numpy()})
        np.testing.assert_allclose(logits[:, 0], whole[:, t], rtol=TOL, atol=TOL)
        feeds = {"h0": h, "c0": c}


def test_ctc_run_agrees_on_the_real_frames(tmp_path):
    run = _train(
        tmp_path,
        "digits-ctc-sample",
        "train.epochs=1",
        "data.strings=32",
        "model.hidden_sizes=[16]",
        "model.layer_norm=true",
        "model.proj_size=8",
        "model.peepholes=true",
        *NOISE,
    )
    result = export_run(run)
    _, model, _ = load_run(run)
    x = torch.randn(3, 50, model.input_size, generator=torch.Generator().manual_seed(0))
    lengths = torch.tensor([50, 31, 7])
    with torch.no_grad():
        want, exact = model(x, lengths), _float64(model)(x.double(), lengths)  # (B, T, S)
    got = load_onnx(result.path)(x.numpy(), lengths.numpy())
    assert got.shape == want.shape
    for b, n in enumerate(lengths.tolist()):  # frames past a row's length are padding
        _assert_agree(got[b, :n], want[b, :n], exact[b, :n], f"row {b}")


def test_seq2seq_run_encodes_and_steps_as_rnnlab(tmp_path):
    """The encoder (bidirectional LayerNorm + peepholes; the decoder stays the plain cell):
    memory, the decoder's first state and the first step's log-probabilities."""
    run = _train(
        tmp_path,
        "g2p-sample",
        "model.embedding_dim=16",
        "model.hidden_sizes=[32]",
        "train.epochs=1",
        "train.batch_size=1000",
        "model.layer_norm=true",
        "model.peepholes=true",
        *NOISE,
    )
    result = export_run(run)
    _, model, _ = load_run(run)
    _check_seq2seq(model, result.path)


def _check_seq2seq(model: Seq2Seq, path: Path) -> None:
    """The exported encoder's memory, h0 and c0, and one decoder step from them, against
    :meth:`Seq2Seq.encode` and :meth:`Seq2Seq.decode_step` on rows of 9, 4 and 1 steps."""
    g = torch.Generator().manual_seed(0)
    src = torch.randint(4, model.source_vocab, (3, 9), generator=g)
    lengths = torch.tensor([9, 4, 1])
    src[1, 4:] = src[2, 1:] = 0  # <pad> after each length
    bos = torch.full((3,), BOS)
    session = _session(path)
    inputs = {"src": src.numpy(), "src_lengths": lengths.numpy()}
    memory, h0, c0 = session.run(["memory", "h0", "c0"], inputs)
    with torch.no_grad():
        want, state = model.encode(src, lengths)
        log_probs = model.decode_step(want, bos, state)[0]
        exact_model = _float64(model)
        exact, exact_state = exact_model.encode(src, lengths)
        exact_log_probs = exact_model.decode_step(exact, bos, exact_state)[0]
    for b, n in enumerate(lengths.tolist()):
        _assert_agree(memory[b, :n], want.bank[b, :n], exact.bank[b, :n], f"memory row {b}")
    _assert_agree(h0, state.rnn.h, exact_state.rnn.h, "h0")
    _assert_agree(c0, state.rnn.c, exact_state.rnn.c, "c0")
    feeds = {"token": bos.numpy(), "h": h0, "c": c0, "feed": state.feed.numpy()}
    feeds |= {"memory_in": memory, "keys_in": want.keys.numpy(), "mask_in": want.mask.numpy()}
    (got,) = session.run(["log_probs"], feeds)
    _assert_agree(got, log_probs, exact_log_probs, "log_probs")


# -- each option alone, on models moved off their initialisation ---------------------------------


def _text_model(options: list[str], bidirectional: bool, mask: bool, padding: str):
    config = load_preset(
        "imdb-seed",
        [
            f"model.bidirectional={str(bidirectional).lower()}",
            f"model.mask={str(mask).lower()}",
            f"data.padding={padding}",
            "model.pooling=meanmax" if bidirectional else "model.pooling=last",
            "model.hidden_sizes=[6,5]",
            "data.num_words=50",
            *options,
        ],
    )
    return _perturbed(build_model(config))


@pytest.mark.parametrize(
    "options",
    [
        ["layer_norm=true"],
        ["proj_size=3"],
        ["peepholes=true"],
        ["layer_norm=true", "proj_size=3", "peepholes=true"],
    ],
)
@pytest.mark.parametrize(
    ("bidirectional", "mask", "padding"), [(True, True, "pre"), (False, False, "post")]
)
def test_each_option_in_a_text_model(tmp_path, options, bidirectional, mask, padding):
    model = _text_model([f"model.{o}" for o in options], bidirectional, mask, padding)
    exact_model = _float64(model)
    path = export_model(model, tmp_path / "m.onnx").path
    op = "LSTM" if options == ["peepholes=true"] else "Scan"  # peepholes: the op's input P
    assert op in _ops(path) and ({"LSTM", "Scan"} - {op}).isdisjoint(_ops(path))
    runner = load_onnx(path)
    g = torch.Generator().manual_seed(1)
    for B, T in SHAPES:
        ids = torch.randint(0, 50, (B, T), generator=g)
        lengths = torch.randint(1, T + 1, (B,), generator=g)
        lengths[0] = T  # a full row beside the padded ones
        with torch.no_grad():
            want, exact = model(ids, lengths), exact_model(ids, lengths)
        _assert_agree(runner(ids.numpy(), lengths.numpy()), want, exact, f"B={B} T={T}")


def test_image_model_with_layer_norm(tmp_path):
    config = load_preset(
        "mnist-seed",
        [
            "model.layer_norm=true",
            "model.bidirectional=true",
            "model.pooling=meanmax",
            "model.projection=7",
            "model.hidden_sizes=[6,5]",
        ],
    )
    model = _perturbed(build_model(config))
    exact_model = _float64(model)
    runner = load_onnx(export_model(model, tmp_path / "m.onnx").path)
    for B, T in [*SHAPES, (5, 28)]:
        x = torch.rand(B, T, 28)
        with torch.no_grad():
            want, exact = model(x), exact_model(x.double())
        _assert_agree(runner(x.numpy()), want, exact, f"B={B} T={T}")


def test_noise_only_variants_export_as_the_lstm_op(tmp_path):
    """Recurrent dropout and zoneout are the identity in eval mode: ONNX's LSTM op, no Scan,
    and the plain LSTM's 1e-5 against rnnlab's float32."""
    model = _text_model(NOISE, True, True, "pre")
    assert isinstance(model.stack.layers[0].cells[0], VariantLSTMCell)
    path = export_model(model, tmp_path / "m.onnx").path
    assert "LSTM" in _ops(path) and "Scan" not in _ops(path)
    ids, lengths = torch.randint(0, 50, (4, 9)), torch.tensor([9, 1, 5, 7])
    with torch.no_grad():
        want = model(ids, lengths).numpy()
    got = load_onnx(path)(ids.numpy(), lengths.numpy())
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL)
    lm = _perturbed(LanguageModel(23, 8, 8, 2, zoneout=0.1, recurrent_dropout=0.2))
    path = export_model(lm, tmp_path / "lm.onnx").path
    assert "LSTM" in _ops(path) and "Scan" not in _ops(path)
    ids = torch.randint(0, 23, (2, 5))
    with torch.no_grad():
        logits, _ = lm(ids)
    zeros = np.zeros((2, 2, 8), np.float32)
    got = _session(path).run(["logits"], {"ids": ids.numpy(), "h0": zeros, "c0": zeros})[0]
    np.testing.assert_allclose(got, logits.numpy(), rtol=TOL, atol=TOL)


@pytest.mark.parametrize("option", [*OPTIONS, "all"])
def test_language_model_from_a_carried_state(tmp_path, option):
    options = OPTIONS if option == "all" else {option: OPTIONS[option]}
    model = _perturbed(LanguageModel(29, 7, 6, 2, **options))
    path = export_model(model, tmp_path / "lm.onnx").path
    assert ("LSTM" if option == "peepholes" else "Scan") in _ops(path)
    session = _session(path)
    g = torch.Generator().manual_seed(2)
    state = model.init_state(3)
    state = type(state)(*(torch.randn(s.shape, generator=g) for s in state))  # not zeros
    ids = torch.randint(0, 29, (3, 8), generator=g)
    with torch.no_grad():
        logits, final = model(ids, state)
        exact = _float64(model)(ids, type(state)(*(s.double() for s in state)))
    got = session.run(None, {"ids": ids.numpy(), "h0": state.h.numpy(), "c0": state.c.numpy()})
    for name, value, want, ex in zip(
        ("logits", "h", "c"), got, (logits, *final), (exact[0], *exact[1]), strict=True
    ):
        _assert_agree(value, want, ex, name)


@pytest.mark.parametrize("layer_norm", [True, False])
def test_seq2seq_encoder_of_two_levels(tmp_path, layer_norm):
    """Two bidirectional levels with peepholes: a Scan per direction with LayerNorm, else the
    LSTM op with P; the decoder's LSTM op beside them."""
    options = {"layer_norm": layer_norm, "peepholes": True, "zoneout": 0.1}
    model = Seq2Seq(
        17, 13, embedding_dim=6, hidden_size=10, encoder_layers=2, encoder_options=options
    )
    model = _perturbed(model)
    path = export_model(model, tmp_path / "s2s.onnx").path
    assert ("Scan" in _ops(path)) is layer_norm
    _check_seq2seq(model, path)


def test_the_lstm_op_refuses_what_it_cannot_express_by_name():
    """A variant with LayerNorm or projection never reaches ONNX's LSTM op; were one to be
    routed there, the error names the options."""
    assert onnx_kind(VariantLSTMCell(4, 6, zoneout=0.1, recurrent_dropout=0.2)) == "LSTM"
    assert onnx_kind(VariantLSTMCell(4, 6, peepholes=True)) == "LSTM"
    cell = VariantLSTMCell(4, 6, proj_size=3, layer_norm=True, peepholes=True)
    with pytest.raises(ExportError, match=r"expected a cell without layer_norm, proj_size, got"):
        onnx_kind(cell)


# -- the GRU variants ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("options", "op"), [(["layer_norm=true"], "Scan"), (NOISE, "GRU")], ids=["ln", "noise"]
)
@pytest.mark.parametrize(
    ("bidirectional", "mask", "padding"), [(True, True, "pre"), (False, False, "post")]
)
def test_gru_variants_in_a_text_model(tmp_path, options, op, bidirectional, mask, padding):
    """A GRU with LayerNorm is a Scan of VariantGRUCell's step; with only recurrent dropout or
    zoneout (the identity in eval mode) it is ONNX's GRU op."""
    settings = ["model.cell=gru", *(o if o.startswith("model.") else f"model.{o}" for o in options)]
    model = _text_model(settings, bidirectional, mask, padding)
    exact_model = _float64(model)
    path = export_model(model, tmp_path / "m.onnx").path
    assert op in _ops(path) and ({"GRU", "Scan"} - {op}).isdisjoint(_ops(path))
    runner = load_onnx(path)
    g = torch.Generator().manual_seed(1)
    for B, T in SHAPES:
        ids = torch.randint(0, 50, (B, T), generator=g)
        lengths = torch.randint(1, T + 1, (B,), generator=g)
        lengths[0] = T
        with torch.no_grad():
            want, exact = model(ids, lengths), exact_model(ids, lengths)
        _assert_agree(runner(ids.numpy(), lengths.numpy()), want, exact, f"B={B} T={T}")


def test_gru_layer_norm_language_model_from_a_carried_state(tmp_path):
    model = _perturbed(LanguageModel(29, 7, 6, 2, cell="gru", layer_norm=True))
    path = export_model(model, tmp_path / "lm.onnx").path
    assert "Scan" in _ops(path) and "GRU" not in _ops(path)
    g = torch.Generator().manual_seed(2)
    state = torch.randn(model.init_state(3).shape, generator=g)
    ids = torch.randint(0, 29, (3, 8), generator=g)
    with torch.no_grad():
        logits, final = model(ids, state)
        exact = _float64(model)(ids, state.double())
    got = _session(path).run(None, {"ids": ids.numpy(), "h0": state.numpy()})
    _assert_agree(got[0], logits, exact[0], "logits")
    _assert_agree(got[1], final, exact[1], "h")
