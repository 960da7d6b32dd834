"""Presets, dotted overrides and their errors."""

import pytest

from rnnlab.config import Config, ConfigError, list_presets, load_preset, parse_override
from rnnlab.tasks import build_model


def test_every_preset_loads_and_round_trips():
    assert {"mnist-seed", "imdb-seed", "mnist", "imdb", "mnist-sample", "imdb-sample"} <= set(
        list_presets()
    )
    for name in list_presets():
        config = load_preset(name)
        assert config.name == name and config.description
        assert Config.from_dict(config.to_dict()) == config


def test_overrides_are_typed():
    config = load_preset(
        "mnist-seed",
        [
            "train.epochs=5",
            "train.lr=3e-4",
            "model.bidirectional=true",
            "model.hidden_sizes=[64, 32]",
            "data.path=/x/fashion",
        ],
    )
    assert config.train.epochs == 5 and config.train.lr == 3e-4
    assert config.model.bidirectional is True and config.model.hidden_sizes == (64, 32)
    assert config.data.path == "/x/fashion"
    assert load_preset("mnist-seed", ["train.lr=1"]).train.lr == 1.0  # int accepted as float
    assert parse_override("data.padding=post") == ("data.padding", "post")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epoch=5", "unknown key"),
        ("trian.epochs=5", "expected section.key"),
        ("train.epochs=five", "train.epochs: expected int, got 'five'"),
        ("train.epochs=2.5", "train.epochs: expected int, got 2.5"),
        ("train.epochs=0", "train.epochs: expected an int >= 1, or 0"),
        (
            "model.cell=transformer",
            "model.cell: expected one of ('rnn', 'lstm', 'gru', 'mingru', 'minlstm', 'slstm', "
            "'mlstm'), got 'transformer'",
        ),
        ("model.dropout=1.5", "model.dropout: expected in [0, 1)"),
        ("model.bidirectional=1", "model.bidirectional: expected bool, got 1"),
        ("model.kind=[]", "model.kind: expected str, got []"),  # once a TypeError
        (
            "model.precision=fp16",
            "model.precision: expected one of 'fp32' | 'bf16' | 'auto', got 'fp16'",
        ),
        (
            "model.precision=BF16",
            "model.precision: expected one of 'fp32' | 'bf16' | 'auto', got 'BF16'",
        ),
        ("train.epochs", "expected section.key=value"),
    ],
)
def test_bad_overrides_say_what_was_expected(override, message):
    with pytest.raises(
        ConfigError,
        match=message.replace("[", r"\[")
        .replace("(", r"\(")
        .replace(")", r"\)")
        .replace("|", r"\|"),
    ):
        load_preset("mnist-seed", [override])


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown preset 'mnist-sed': expected one of .*seed"):
        load_preset("mnist-sed")


def test_unknown_key_in_a_saved_config_is_refused():
    values = load_preset("mnist-seed").to_dict()
    values["model"]["layers"] = 3
    with pytest.raises(ConfigError, match="unknown key 'model.layers'"):
        Config.from_dict(values)


def test_seed_presets_are_the_tutorials_models():
    imdb = build_model(load_preset("imdb-seed"))
    assert sum(p.numel() for p in imdb.parameters()) == 805_186  # Keras's model.summary()
    mnist = build_model(load_preset("mnist-seed"))
    # Linear 28->128, LSTM 128 (one bias per gate), Linear 128->10
    assert sum(p.numel() for p in mnist.parameters()) == (28 * 128 + 128) + 4 * 128 * 257 + 1290


def test_precision_defaults_to_fp32_and_round_trips():
    # float32 unless a preset asks for bf16 where the CPU has it natively ("auto")
    assert {load_preset(name).model.precision for name in list_presets()} == {"fp32", "auto"}
    assert load_preset("mnist-seed").model.precision == "fp32"  # the tutorial's programs
    config = load_preset("mnist-seed", ["model.precision=bf16"])
    assert config.model.precision == "bf16"
    assert config.to_dict()["model"]["precision"] == "bf16"  # saved with runs and checkpoints
    assert Config.from_dict(config.to_dict()) == config
    older = config.to_dict()  # a run saved before the key existed trains in float32
    del older["model"]["precision"]
    assert Config.from_dict(older).model.precision == "fp32"


@pytest.mark.parametrize(
    ("preset", "overrides", "message"),
    [
        ("mnist-seed", ["model.cell=gru"], "expected model.cell='lstm' .*got cell='gru'"),
        ("mnist-seed", ["model.cell=rnn"], "expected model.cell='lstm' .*got cell='rnn'"),
        ("imdb", [], "expected model.cell='lstm' .*got cell='gru'"),  # a GRU preset
        (
            "mnist-seed",
            ["model.backend=torch"],
            "expected model.backend='auto' .*got backend='torch'",
        ),
        (
            "mnist-seed",
            ["model.backend=fused"],
            "expected model.backend='auto' .*got backend='fused'",
        ),
        (
            "mnist-seed",
            ["model.backend=reference"],
            "expected model.backend='auto' .*got backend='reference'",
        ),
    ],
)
def test_bf16_needs_an_lstm_on_the_auto_backend(preset, overrides, message):
    for order in ([*overrides, "model.precision=bf16"], ["model.precision=bf16", *overrides]):
        with pytest.raises(ConfigError, match=r"^model\.precision='bf16' " + message):
            load_preset(preset, order)
    assert load_preset(preset, overrides).model.precision == "fp32"  # fine in float32
