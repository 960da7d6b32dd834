"""python -m projects.context: context use and the cloze probe, on tiny settings."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch
from torch import nn

from projects.context.cli import main
from projects.context.experiment import ContextConfig, run_context
from projects.context.measure import (
    context_use,
    final_logits,
    other_text,
    sample_positions,
    stateful_losses,
    stops_gaining,
    window_losses,
)
from projects.context.probe import ClozeProbe
from projects.context.report import format_table, write_results
from rnnlab import LanguageModel
from rnnlab.data import Vocabulary, batchify, load_corpus

TINY = dict(
    max_vocab=5000,
    embedding_dim=16,
    hidden_size=16,
    batch_size=8,
    bptt=10,
    steps=3,
    log_every=2,
    contexts=(1, 2, 5),
    eval_tokens=3000,
    eval_rows=4,
    positions=60,
    distances=(0, 3),
    spans=2,
)


@pytest.fixture(scope="module")
def sample_corpus():
    return load_corpus("imdb", level="word", sample=True, max_vocab=5000)


def _model(cell: str = "lstm", vocab: int = 50, seed: int = 0) -> LanguageModel:
    torch.manual_seed(seed)
    return LanguageModel(vocab, 8, 12, num_layers=2, cell=cell).eval()


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_stateful_losses_equal_one_forward_over_each_row(cell):
    model = _model(cell)
    rows = torch.randint(0, 50, (3, 41))  # (B, L)
    with torch.no_grad():
        logits, _ = model(rows[:, :-1])  # (B, L - 1, V)
    expected = nn.functional.cross_entropy(logits.transpose(1, 2), rows[:, 1:], reduction="none")
    got = stateful_losses(model, rows, bptt=7)  # windows of 7 with the state carried
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_window_from_the_row_start_equals_the_stateful_loss():
    """A window of k tokens ending at t = k is the whole prefix, so its loss is the stateful
    one; a shorter window differs."""
    model = _model("gru")
    rows = torch.randint(0, 50, (2, 30))
    full = stateful_losses(model, rows)  # (B, L - 1)
    k = 9
    positions = torch.tensor([[0, k], [1, k]])  # targets rows[b, 9], read from rows[b, 0:9]
    torch.testing.assert_close(window_losses(model, rows, positions, k), full[:, k - 1])
    assert not torch.allclose(window_losses(model, rows, positions, 2), full[:, k - 1])
    with torch.no_grad():
        logits, _ = model(rows[:, :5])
    torch.testing.assert_close(final_logits(model, rows[:, :5]), logits[:, -1])


def test_a_prefix_of_the_real_words_before_the_window_is_a_longer_window():
    model = _model("lstm")
    rows = torch.randint(0, 50, (3, 40))
    positions = torch.tensor([[0, 30], [1, 25], [2, 39]])
    k, w = 4, 6
    prefix = torch.stack([rows[r, t - k - w : t - k] for r, t in positions.tolist()])  # (P, W)
    torch.testing.assert_close(
        window_losses(model, rows, positions, k, prefix=prefix),
        window_losses(model, rows, positions, k + w),
    )
    other = other_text(rows, positions, 5, seed=0)
    assert other.shape == (3, 5)
    for (r, _), span in zip(positions.tolist(), other.tolist(), strict=True):
        starts = [s for s in range(36) if rows[(r + 1) % 3, s : s + 5].tolist() == span]
        starts += [s for s in range(36) if rows[(r + 2) % 3, s : s + 5].tolist() == span]
        assert starts  # words from another row


def test_k_all_equals_the_ordinary_stateful_test_loss():
    """With every target sampled (k = 1 only needs one token before), the "all" entry is the
    mean of the ordinary stateful evaluation, and test_loss is that of one forward pass."""
    model = _model("lstm")
    rows = torch.randint(0, 50, (4, 26))
    config = ContextConfig(contexts=(1,), positions=10_000, replaced_words=0)
    result = context_use(model, rows, config)
    with torch.no_grad():
        logits, _ = model(rows[:, :-1])
    ordinary = nn.functional.cross_entropy(logits.flatten(0, 1), rows[:, 1:].flatten()).item()
    assert result["positions"] == result["test_targets"] == 4 * 25
    assert result["test_loss"] == pytest.approx(ordinary, rel=1e-5)
    assert result["context_loss"]["all"]["loss"] == pytest.approx(ordinary, rel=1e-5)


def test_sample_positions_leave_room_for_the_longest_context():
    rows = torch.zeros(3, 40, dtype=torch.long)
    pos = sample_positions(rows, 20, 25, seed=0)
    assert pos.shape == (20, 2) and int(pos[:, 1].min()) >= 25 and int(pos[:, 0].max()) <= 2
    assert len(set(map(tuple, pos.tolist()))) == 20  # no target twice
    assert sample_positions(rows, 1000, 25, seed=0).shape == (3 * 15, 2)
    with pytest.raises(ValueError, match="expected rows longer than 40"):
        sample_positions(rows, 5, 40, seed=0)


def test_stops_gaining_is_the_start_of_the_flat_tail():
    loss = {
        "1": {"minus_all": 1.0, "minus_all_se": 0.01},
        "5": {"minus_all": 0.2, "minus_all_se": 0.01},
        "20": {"minus_all": 0.005, "minus_all_se": 0.001},
        "50": {"minus_all": 0.03, "minus_all_se": 0.02},  # within 2 standard errors
        "all": {"minus_all": 0.0, "minus_all_se": 0.0},
    }
    assert stops_gaining(loss, 0.01) == 20
    loss["50"]["minus_all"] = 0.1
    assert stops_gaining(loss, 0.01) is None


# -- the cloze probe ----------------------------------------------------------------------------
TEMPLATE_WORDS = "i grew up in speak fluent the film was made dialogue is . a b c d e f g"
FILLER = "a b c d e f g italian a b c d e f g"
PAIRS = (("france", "french"), ("italy", "italian"), ("spain", "spanish"), ("mars", "martian"))


def _probe(distances=(0, 2, 6)) -> tuple[Vocabulary, ClozeProbe]:
    words = TEMPLATE_WORDS.split()
    words += ["france", "french", "italy", "italian", "spain", "spanish"]  # no mars, martian
    vocab = Vocabulary.build(Counter(words), "imdb")
    filler = vocab.lookup(FILLER.split() * 5)  # spans with "italian" are redrawn
    probe = ClozeProbe.build(
        vocab,
        np.asarray(filler),
        PAIRS,
        (("i grew up in {country} .", "i speak fluent"),),
        distances,
        spans=3,
        seed=0,
    )
    return vocab, probe


def test_probe_keeps_pairs_in_the_vocabulary_and_lays_out_the_examples():
    vocab, probe = _probe()
    assert [c for c, _ in probe.pairs] == ["france", "italy", "spain"]
    assert probe.skipped == (("mars", "martian"),) and probe.chance == pytest.approx(1 / 3)
    ids = probe.examples[2][0]  # (spans x countries, T)
    assert ids.shape == (9, 1 + 6 + 2 + 1 + 3)
    first = [vocab.tokens[i] for i in ids[1].tolist()]
    assert first[:7] == ["<eos>", "i", "grew", "up", "in", "italy", "."]
    assert first[-4:] == [".", "i", "speak", "fluent"]
    assert "italian" not in {vocab.tokens[i] for i in probe.examples[6][0].flatten().tolist()}
    assert probe.examples[0][0].shape[1] == 1 + 6 + 3  # no distractor, no extra full stop


def _preferring(vocab: Vocabulary, probe: ClozeProbe, within: int | None):
    """A hand-made next-token function: it gives the language of the country it finds in the
    last ``within`` tokens (anywhere if None) a high logit, and "french" otherwise."""
    country_to_language = {
        int(vocab.lookup([c])[0]): int(vocab.lookup([lang])[0]) for c, lang in probe.pairs
    }
    french = int(vocab.lookup(["french"])[0])

    def next_logits(ids: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(len(ids), len(vocab))
        for row, seq in enumerate(ids.tolist()):
            seen = seq if within is None else seq[-within:]
            found = [country_to_language[t] for t in seen if t in country_to_language]
            logits[row, found[-1] if found else french] = 5.0
        return logits

    return next_logits


def test_probe_ranks_the_preferred_word_first():
    vocab, probe = _probe()
    perfect = probe.evaluate(_preferring(vocab, probe, within=None))
    assert all(v["accuracy"] == 1.0 for v in perfect.values())
    assert all(v["gain"] > 4.0 for v in perfect.values())  # logit 5 against 0, V = 27
    # a model that always says "french" is right for one country in three, exactly chance
    blind = probe.evaluate(lambda ids: _preferring(vocab, probe, 0)(ids[:, :0]))
    assert all(v["accuracy"] == pytest.approx(1 / 3) for v in blind.values())
    assert all(v["probability"] == pytest.approx(1 / 3) for v in blind.values())
    assert all(v["gain"] == pytest.approx(0.0, abs=1e-6) for v in blind.values())
    # one that looks 10 tokens back: the country is 6 + n tokens before the blank
    short = probe.evaluate(_preferring(vocab, probe, within=10))
    assert short["0"]["accuracy"] == 1.0 and short["2"]["accuracy"] == 1.0
    assert short["6"]["accuracy"] == pytest.approx(1 / 3)


def test_probe_refuses_too_few_pairs():
    vocab, _ = _probe()
    with pytest.raises(ValueError, match="at least 2"):
        ClozeProbe.build(vocab, np.zeros(50), PAIRS[3:], (("{country}", "x"),), (0,), 1, 0)


# -- the whole experiment -----------------------------------------------------------------------
def test_run_measures_every_cell_and_writes_the_files(tmp_path, sample_corpus):
    events = []
    results = run_context(ContextConfig(**TINY), progress=events.append, corpus=sample_corpus)
    assert [e["event"] for e in events].count("run") == 3 and events[0]["event"] == "data"
    assert [r["cell"] for r in results.runs] == ["rnn", "lstm", "gru"]
    for row in results.table.values():
        assert list(row["context_loss"]) == ["1", "2", "5", "all"]
        assert list(row["context_loss_replaced"]) == ["1", "2", "5", "all"]
        assert list(row["cloze"]) == ["0", "3"]
        assert all(0 <= v["accuracy"] <= 1 for v in row["cloze"].values())
        assert row["context_loss"]["all"]["minus_all"] == 0.0 and row["test_loss"] > 0
    assert results.probe["chance"] == pytest.approx(1 / len(results.probe["pairs"]))
    paths = write_results(results, tmp_path / "out", extra={"machine": {"cpu_count": 2}})
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "cloze_vs_distance.png",
        "loss_vs_context.png",
        "results.json",
        "table.md",
    ]
    saved = json.loads(paths["json"].read_text())
    assert saved["config"]["contexts"] == [1, 2, 5] and len(saved["runs"]) == 3
    assert saved["machine"] == {"cpu_count": 2} and "torch" in saved["versions"]
    for key in ("context_png", "cloze_png"):
        assert paths[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = format_table(results)
    assert "| context k | RNN loss (vs all) | LSTM loss (vs all) | GRU loss (vs all) |" in table
    assert "stops gaining" in table and "chance = 1/" in table
    assert "after 100 words of other test text" in table
    assert paths["table"].read_text().strip() == table


def test_command_runs_quick_on_the_sample(tmp_path, capsys, monkeypatch):
    """``--quick --sample`` with the quick settings shrunk to the tiny ones."""
    tiny = ContextConfig.quick
    monkeypatch.setattr(
        ContextConfig, "quick", classmethod(lambda cls, **ch: tiny(**{**TINY, **ch}))
    )
    out = tmp_path / "ctx"
    argv = ["--quick", "--sample", "--cells", "lstm", "--steps", "2", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert (
        "[1/1] lstm seed 0" in printed
        and "| distractor words n | LSTM acc (prob, gain) |" in printed
    )
    assert json.loads((out / "results.json").read_text())["config"]["steps"] == 2


@pytest.mark.parametrize(
    "bad",
    [
        {"cells": ("lstm", "tcn")},
        {"contexts": (0, 5)},
        {"distances": ()},
        {"steps": 0},
        {"replaced_words": -1},
    ],
)
def test_config_refuses_bad_values(bad):
    with pytest.raises(ValueError, match="ContextConfig expected"):
        ContextConfig(**bad)


def test_batchified_test_prefix_is_what_the_rows_hold(sample_corpus):
    rows = batchify(sample_corpus.test[:3000].astype(np.int64), 4)
    assert rows.shape == (4, 750)
