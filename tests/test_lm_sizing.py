"""model.autosize (rnnlab.tasks.lm_sizing): the rule on made-up speeds, and a run that applies
it end to end (its choice in sizing.json and config.json, the model read back at that size)."""

import json

import pytest

from rnnlab.config import ConfigError, load_preset
from rnnlab.runs import load_run
from rnnlab.runs.session import train
from rnnlab.tasks import get_task, lm_sizing
from rnnlab.tasks.lm_sizing import DROPOUT, LADDER, MAX_PASSES, MIN_PASSES, choose
from test_lm_task import TINY, _corpus
from tiny import with_sets


def _rate(per_width: dict[int, float]):
    asked = []

    def rate(width: int) -> float:
        asked.append(width)
        return per_width[width]

    return rate, asked


def test_a_large_corpus_keeps_the_base_width_and_measures_nothing_else():
    rate, asked = _rate({256: 50_000.0})
    # 50,000 tokens/s x 600 s = 3e7 tokens: 0.3 passes over 1e8
    s = choose(256, 0.0, 10**8, 600.0, rate)
    assert (s.hidden, s.dropout, asked) == (256, 0.0, [256])
    assert s.passes[256] == pytest.approx(0.3)


def test_a_small_corpus_takes_the_widest_width_that_still_reads_it_often_enough():
    # 6e6 tokens, 600 s: 256 reads it 5x (> MAX_PASSES), 1024 0.5x, 512 2.0x
    speeds = {256: 50_000.0, 512: 20_000.0, 1024: 5_000.0}
    rate, asked = _rate(speeds)
    s = choose(256, 0.0, 6 * 10**6, 600.0, rate)
    assert s.passes[256] > MAX_PASSES
    assert s.hidden == 512 and s.passes[512] >= MIN_PASSES
    assert s.dropout == DROPOUT  # 2 passes: the wider model still repeats the corpus
    assert asked == [256, 1024, 512]  # widest first, stopping at the first that qualifies
    assert "512" in s.reason and s.to_dict()["hidden"] == 512


def test_when_no_wider_width_qualifies_the_base_stays_with_dropout():
    speeds = {w: 1_000.0 for w in LADDER} | {256: 50_000.0}
    rate, _ = _rate(speeds)
    s = choose(256, 0.1, 6 * 10**6, 600.0, rate)
    assert (s.hidden, s.dropout) == (256, DROPOUT)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="corpus_tokens >= 1"):
        choose(256, 0.0, 0, 600.0, lambda w: 1.0)


def test_autosize_needs_a_time_limit_and_a_language_model():
    with pytest.raises(ConfigError, match="train.time_limit > 0"):
        get_task(
            load_preset(
                "charlm-sample", ["model.autosize=true", "train.time_limit=0", "train.epochs=1"]
            )
        )
    with pytest.raises(ConfigError, match="model.kind='lm'"):
        load_preset("mnist-sample", ["model.autosize=true"])


def test_a_run_records_its_choice_and_is_read_back_at_that_size(tmp_path, monkeypatch):
    """A tiny corpus read many times in the budget: the rule widens the model; the run's
    config.json and sizing.json say so, and load_run builds the chosen size."""
    corpus = _corpus(tmp_path, lines=400)
    measured = {}

    def fake_rate(build, optimizer, vocab, batch, bptt):  # speeds made up, so the choice is fixed
        width = build().hidden_size
        measured[width] = True
        return {32: 1e6, 48: 5e5}.get(width, 10.0)

    monkeypatch.setattr(lm_sizing, "LADDER", (32, 48, 64))
    monkeypatch.setattr("rnnlab.tasks.language_model.measure_rate", fake_rate)
    sets = with_sets(
        TINY, f"data.path={corpus}", "model.autosize=true", "train.time_limit=2", "train.epochs=0"
    )
    overrides = [s for flag, s in zip(sets[::2], sets[1::2], strict=True) if flag == "--set"]
    out = tmp_path / "run"
    train("charlm-sample", out=out, overrides=overrides)
    sizing = json.loads((out / "sizing.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert sizing["hidden"] == 48 and sizing["dropout"] == DROPOUT
    assert config["model"]["hidden_sizes"] == [48] and config["model"]["dropout"] == DROPOUT
    assert set(measured) == {32, 64, 48}  # the base, then widest first
    config, model, _ = load_run(out)
    assert model.hidden_size == 48 and config.model.hidden_sizes == (48,)
