"""A text classifier started from a word language model's run (``model.init_from``, issue 26)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rnnlab.config import ConfigError, TrainConfig, load_preset
from rnnlab.data.vocab import Vocabulary
from rnnlab.predict import predict_texts
from rnnlab.runs import RunError, load_run, train
from rnnlab.runs.load import load_pretrained
from rnnlab.tasks import get_task
from rnnlab.tasks.text_pretrained import encode_review
from rnnlab.train.schedule import group_rate, make_optimizer
from tiny import merge_settings

# a small word language model on the IMDB sample shipped in the package
LM_SETS = [
    "model.embedding_dim=16",
    "model.hidden_sizes=[16]",
    "train.time_limit=3",
    "data.eval_tokens=2000",
    "run.log_every=0",
]
# imdb-sample as a one-way LSTM of the language model's sizes, one short epoch
CLASSIFIER_SETS = [
    "model.bidirectional=false",
    "model.embedding_dim=16",
    "model.hidden_sizes=[16]",
    "data.maxlen=40",
    "train.epochs=1",
    "train.batch_size=250",
    "run.log_every=0",
]


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("pretrain") / "lm"
    train("wordlm-sample", out=run, overrides=LM_SETS)
    return run


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_classifier_starts_with_the_language_model_weights(lm_run):
    _, lm, _ = load_run(lm_run)
    config = load_preset("imdb-sample", [*CLASSIFIER_SETS, f"model.init_from={lm_run}"])
    task = get_task(config)
    task.bind_pretrained(load_pretrained(lm_run))
    model = task.build_model()
    assert torch.equal(model.embedding.weight, lm.embedding.weight)
    ours, theirs = model.stack.layers[0].cells[0], lm.rnn.cells[0]
    for name, value in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[name], value), name
    assert model.pretrained_names == {
        "embedding.weight",
        *(f"stack.layers.0.cells.0.{n}" for n, _ in ours.named_parameters()),
    }


def test_frozen_pretrained_layers_stay_the_language_model_while_the_head_learns(lm_run, tmp_path):
    """With every step frozen, training moves the head only: the run's weights are then the
    language model's exactly, and the run records which checkpoint they came from."""
    _, lm, lm_meta = load_run(lm_run)
    out = tmp_path / "clf"
    sets = [*CLASSIFIER_SETS, f"model.init_from={lm_run}", "train.frozen_steps=1000"]
    train("imdb-sample", out=out, overrides=sets)
    _, model, _ = load_run(out, "last")
    assert torch.equal(model.embedding.weight, lm.embedding.weight)
    for name, value in lm.rnn.cells[0].state_dict().items():
        assert torch.equal(model.stack.layers[0].cells[0].state_dict()[name], value), name
    record = json.loads((out / "pretrained.json").read_text())
    assert record["run"] == str(lm_run.absolute())
    assert record["tensors_sha256"] == lm_meta["sha256"]
    assert Vocabulary.load(out / "vocab.json") == Vocabulary.load(lm_run / "vocab.json")
    results = predict_texts(out, ["A wonderful film, truly great."])
    assert results[0]["label"] in (0, 1) and results[0]["truncated"] is False


def test_fine_tuning_moves_the_pretrained_layers(lm_run, tmp_path):
    _, lm, _ = load_run(lm_run)
    out = tmp_path / "clf"
    sets = [*CLASSIFIER_SETS, f"model.init_from={lm_run}", "train.pretrained_lr_ratio=0.5"]
    train("imdb-sample", out=out, overrides=sets)
    _, model, _ = load_run(out, "last")
    assert not torch.equal(model.embedding.weight, lm.embedding.weight)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("model.cell=gru", "model.cell: expected 'lstm', the cell of the language model in"),
        ("model.embedding_dim=24", "model.embedding_dim: expected 16, the language model's in"),
        ("model.hidden_sizes=[32]", "model.hidden_sizes: expected [16] (or its first layers)"),
        ("model.bidirectional=true", "model.bidirectional: expected false with model.init_from"),
    ],
)
def test_a_mismatch_is_refused_naming_both(lm_run, tmp_path, setting, message):
    out = tmp_path / "clf"
    sets = merge_settings(CLASSIFIER_SETS, f"model.init_from={lm_run}", setting)
    with pytest.raises(ConfigError) as info:
        train("imdb-sample", out=out, overrides=sets)
    assert message in str(info.value)
    assert str(lm_run) in str(info.value) or "got true" in str(info.value)
    assert not out.exists()  # refused before anything was written


def test_sources_that_are_not_word_language_models_are_refused(lm_run, tmp_path):
    clf = tmp_path / "clf"
    train("imdb-sample", out=clf, overrides=CLASSIFIER_SETS)
    sets = [*CLASSIFIER_SETS, f"model.init_from={clf}"]
    with pytest.raises(
        ConfigError, match="expected a language-model run \\(kind 'lm'\\), got kind 'text'"
    ):
        train("imdb-sample", out=tmp_path / "b", overrides=sets)
    with pytest.raises(RunError, match="model.init_from: expected a trained run"):
        train(
            "imdb-sample", out=tmp_path / "c", overrides=[*CLASSIFIER_SETS, "model.init_from=/nope"]
        )
    sets = ["model.init_from=" + str(lm_run)]
    with pytest.raises(ConfigError, match="model.kind='image'"):
        train("mnist-sample", out=tmp_path / "d", overrides=sets)
    assert not any((tmp_path / n).exists() for n in "bcd")


def test_a_review_is_read_as_the_language_model_read_it():
    vocab = Vocabulary("imdb", ("<unk>", "<eos>", "the", "film", "."))
    ids, tokens, unknown = encode_review(vocab, "The film <br />was.")
    assert tokens == ["<eos>", "the", "film", "was", "."]
    assert ids == [1, 2, 3, 0, 4]
    assert unknown == [False, False, False, True, False]


def test_pretrained_group_is_frozen_then_scaled():
    cfg = TrainConfig(lr=0.01, pretrained_lr_ratio=0.25, frozen_steps=3)
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    model.pretrained_names = frozenset({"0.weight", "0.bias"})
    fresh, taken = make_optimizer(model, cfg).param_groups
    assert [p.shape for p in taken["params"]] == [(2, 2), (2,)]
    assert taken["pretrained"] and "pretrained" not in fresh
    assert [group_rate(taken, 0.01, s, cfg) for s in (0, 2, 3)] == [0.0, 0.0, 0.0025]
    assert group_rate(fresh, 0.01, 0, cfg) == 0.01


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("train.pretrained_lr_ratio=0", "train.pretrained_lr_ratio: expected > 0, got 0"),
        ("train.frozen_steps=-1", "train.frozen_steps: expected >= 0, got -1"),
    ],
)
def test_fine_tuning_settings_are_checked(setting, message):
    with pytest.raises(ConfigError, match=message.replace("(", "\\(")):
        load_preset("imdb-sample", [setting])


def test_a_preset_source_is_trained_first_into_its_own_run(tmp_path, monkeypatch):
    """``model.init_from = "preset:NAME"`` trains NAME into ``<out>-pretrain``, then the
    classifier starts from that run (here wordlm-sample, made tiny for the test)."""
    import rnnlab.runs.session as session

    real = session.load_preset

    def tiny(name, overrides=()):
        extra = LM_SETS if name == "wordlm-sample" else []
        return real(name, [*overrides, *extra])

    monkeypatch.setattr(session, "load_preset", tiny)
    out = tmp_path / "clf"
    train(
        "imdb-sample", out=out, overrides=[*CLASSIFIER_SETS, "model.init_from=preset:wordlm-sample"]
    )
    pretrain = tmp_path / "clf-pretrain"
    assert json.loads((out / "pretrained.json").read_text())["run"] == str(pretrain.absolute())
    assert json.loads((out / "config.json").read_text())["model"]["init_from"] == str(pretrain)
    assert (pretrain / "checkpoints" / "best.json").is_file()
    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        train(
            "imdb-sample",
            out=tmp_path / "b",
            overrides=[*CLASSIFIER_SETS, "model.init_from=preset:nope"],
        )
    assert not (tmp_path / "b").exists() and not (tmp_path / "b-pretrain").exists()


def test_the_preset_is_summarised_before_its_language_model_exists():
    """``rnnlab summary imdb-pretrained`` sizes the embedding by imdb-lm's data.max_vocab."""
    from rnnlab.tasks import build_model

    model = build_model(load_preset("imdb-pretrained"))
    lm = load_preset("imdb-lm")
    assert model.embedding.weight.shape == (lm.data.max_vocab, lm.model.embedding_dim)
    assert model.pretrained_names >= {"embedding.weight"}
