"""The classifiers: shapes, masking, pooling, gates, the torch comparison backend and bf16."""

import pytest
import torch

from rnnlab.config import ConfigError, load_preset
from rnnlab.models import model_precision
from rnnlab.nn.layers import LSTM
from rnnlab.nn.seq2seq import Seq2Seq
from rnnlab.tasks import build_model


def _text_config(*extra):
    return load_preset(
        "imdb-seed", ["model.hidden_sizes=[6, 5]", "data.num_words=50", "data.maxlen=9", *extra]
    )


@pytest.mark.parametrize("pooling", ["last", "mean", "max", "meanmax"])
@pytest.mark.parametrize("padding", ["pre", "post"])
def test_masked_text_model_ignores_padding(pooling, padding):
    torch.manual_seed(0)
    config = _text_config(
        "model.mask=true",
        f"model.pooling={pooling}",
        f"data.padding={padding}",
        "model.bidirectional=true",
    )
    model = build_model(config).eval()
    words = torch.randint(1, 50, (3, 4))
    pad = torch.zeros(3, 5, dtype=torch.int64)
    padded = torch.cat([pad, words], 1) if padding == "pre" else torch.cat([words, pad], 1)
    lengths = torch.full((3,), 4)
    short = model(words, lengths)
    assert short.shape == (3, 2)
    torch.testing.assert_close(model(padded, lengths), short, rtol=1e-5, atol=1e-6)


def test_unmasked_text_model_reads_padding_like_keras():
    """Without mask, lengths are ignored and the pad ids are read as words: the model equals
    torch.nn.LSTM layers (copied weights) run over every step, padding included, then the
    head on the last step's output."""
    torch.manual_seed(0)
    model = build_model(_text_config()).eval()
    words = torch.randint(1, 50, (2, 4))
    padded = torch.cat([torch.zeros(2, 3, dtype=torch.int64), words], 1)  # (B, 7), pre-padded
    with torch.no_grad():
        x = model.embedding(padded)  # (B, 7, E)
        for layer in model.stack.layers:
            x, _ = layer.to_torch()(x)  # (B, 7, H)
        expected = model.head(x[:, -1])  # (B, C)
        got = model(padded, torch.full((2,), 4))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    assert (got - model(words)).abs().max() > 1e-4  # reading the padding changed the answer


def test_sequence_model_shapes_and_errors():
    model = build_model(load_preset("mnist-seed", ["model.bidirectional=true"]))
    assert model(torch.rand(5, 28, 28)).shape == (5, 10)
    with pytest.raises(ValueError, match=r"expected input of shape \(B, T, 28\), got \(5, 28\)"):
        model(torch.rand(5, 28))


def test_return_gates_gives_every_layers_trace():
    torch.manual_seed(0)
    model = build_model(_text_config()).eval()
    ids = torch.randint(0, 50, (2, 9))
    logits, traces = model(ids, return_gates=True)
    torch.testing.assert_close(logits, model(ids))
    assert len(traces) == 2 and traces[1][0][0]["f"].shape == (2, 9, 5)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_torch_backend_is_the_same_model_through_torchs_op(cell):
    """model.backend=torch builds rnnlab layers (same parameter names, same initial values)
    whose layers run torch's own recurrent op; the logits match the default backend's."""
    overrides = [f"model.cell={cell}", "model.hidden_sizes=[16, 16]"]
    torch.manual_seed(0)
    ours = build_model(load_preset("mnist-seed", overrides)).eval()
    torch.manual_seed(0)
    theirs = build_model(load_preset("mnist-seed", [*overrides, "model.backend=torch"])).eval()
    for (name, p), (their_name, q) in zip(
        ours.state_dict().items(), theirs.state_dict().items(), strict=True
    ):
        assert name == their_name and torch.equal(p, q)
    assert all(layer.backend == "torch" for layer in theirs.stack.layers)
    x = torch.rand(4, 28, 28)
    torch.testing.assert_close(theirs(x), ours(x), rtol=1e-5, atol=1e-5)


def test_old_torch_backend_checkpoint_is_refused_with_the_reason():
    from rnnlab.checkpoint import CheckpointError, load_model_weights

    model = build_model(load_preset("mnist-seed", ["model.hidden_sizes=[16]"]))
    tensors = {f"model.{k}": v for k, v in model.state_dict().items() if "stack" not in k}
    tensors["model.stack.layers.0.weight_ih_l0"] = torch.zeros(64, 128)
    with pytest.raises(CheckpointError, match="trained with model.backend='torch' before"):
        load_model_weights(model, tensors, "old run")


def _needs_compiled_kernels():
    from rnnlab.nn.backends import _ext

    if _ext.load() is None:
        pytest.skip(f"compiled kernels unavailable: {_ext.unavailable_reason()}")


@pytest.mark.parametrize("preset", ["mnist-seed", "imdb-seed"])
def test_bf16_precision_reaches_every_lstm_layer(preset):
    _needs_compiled_kernels()
    extra = ["model.hidden_sizes=[16, 8]", "model.bidirectional=true"]
    model = build_model(load_preset(preset, [*extra, "model.precision=bf16"]))
    layers = list(model.stack.layers)
    assert len(layers) == 2 and all(isinstance(lay, LSTM) for lay in layers)
    assert [lay.precision for lay in layers] == ["bf16", "bf16"]
    plain = build_model(load_preset(preset, extra))
    assert [lay.precision for lay in plain.stack.layers] == ["fp32", "fp32"]
    assert plain.state_dict().keys() == model.state_dict().keys()  # same parameters, same dtype
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_bf16_model_is_close_to_but_not_the_fp32_model():
    """Same weights: bf16 GEMM operands (8 significant bits) move the logits a little, not far;
    identical logits would mean the precision never reached the kernels."""
    _needs_compiled_kernels()
    torch.manual_seed(0)
    fp32 = build_model(load_preset("mnist-seed", ["model.hidden_sizes=[32]"])).eval()
    bf16 = build_model(
        load_preset("mnist-seed", ["model.hidden_sizes=[32]", "model.precision=bf16"])
    ).eval()
    bf16.load_state_dict(fp32.state_dict())
    x = torch.rand(6, 28, 28)  # (B, T, I)
    with torch.no_grad():
        a, b = fp32(x), bf16(x)  # (B, C)
    assert b.dtype == torch.float32 and torch.isfinite(b).all()
    assert not torch.equal(a, b)
    torch.testing.assert_close(b, a, rtol=0.0, atol=1e-2)  # seen: about 2e-3


def test_bf16_without_compiled_kernels_is_refused_when_the_model_is_built(monkeypatch):
    from rnnlab.nn.backends import _ext

    for name in ("_tried", "_module", "_reason"):
        monkeypatch.setattr(_ext, name, getattr(_ext, name))
    monkeypatch.setattr(_ext, "_tried", False)
    monkeypatch.setenv("RNNLAB_NO_EXTENSION", "1")
    config = load_preset("mnist-seed", ["model.precision=bf16"])  # valid as a configuration
    with pytest.raises(
        ConfigError,
        match=r"model.precision='bf16' expected the compiled kernels to run here, got: "
        r"disabled by RNNLAB_NO_EXTENSION\. Use model.precision=fp32",
    ):
        build_model(config)
    assert build_model(load_preset("mnist-seed")) is not None  # float32 still builds


def _lstm_precisions(model) -> list[str]:
    return [m.precision for m in model.modules() if isinstance(m, LSTM)]


@pytest.mark.parametrize(
    "preset",
    ["g2p-sample", "digits-ctc-sample", "mnist-lines-sample", "digits-speech-sample"],
)
def test_bf16_precision_reaches_the_lstm_layers_of_every_kind(preset, monkeypatch):
    """seq2seq, CTC and speech models take model.precision like the classifiers: every LSTM of
    the encoder, decoder or stack runs it, and their parameters stay float32."""
    _needs_compiled_kernels()
    model = build_model(load_preset(preset, ["model.precision=bf16"]))
    assert _lstm_precisions(model) and set(_lstm_precisions(model)) == {"bf16"}
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert set(_lstm_precisions(build_model(load_preset(preset)))) == {"fp32"}


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_is_bf16_only_where_the_cpu_has_native_bf16(native, monkeypatch):
    """'auto' resolves per host: bf16 on a CPU with native bf16 (the kernels built), float32
    on one without, and float32 for any model that is not all LSTMs."""
    _needs_compiled_kernels()
    import rnnlab.models.classifiers as classifiers

    monkeypatch.setattr(classifiers, "native_bf16", lambda: native)
    auto = load_preset("g2p-sample", ["model.precision=auto"])
    assert model_precision(auto.model) == ("bf16" if native else "fp32")
    assert set(_lstm_precisions(build_model(auto))) == {"bf16" if native else "fp32"}
    gru = load_preset("g2p-sample", ["model.precision=auto", "model.decoder_cell=gru"])
    assert model_precision(gru.model) == "fp32"
    text = load_preset("imdb-seed", ["model.precision=auto", "model.cell=gru"])
    assert model_precision(text.model) == "fp32"
    assert model_precision(load_preset("g2p-sample").model) == "fp32"  # fp32 stays fp32


def test_bf16_seq2seq_with_a_gru_decoder_is_refused_naming_both():
    with pytest.raises(
        ConfigError, match="expected model.decoder_cell='lstm'.*got decoder_cell='gru'"
    ):
        load_preset("g2p-sample", ["model.precision=bf16", "model.decoder_cell=gru"])
    with pytest.raises(ValueError, match="expected cell='lstm' and decoder_cell='lstm'"):
        Seq2Seq(10, 10, 8, 8, decoder_cell="gru", precision="bf16")
