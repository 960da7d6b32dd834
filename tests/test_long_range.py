"""The long-range experiment: the task's batches, the summary rules, determinism, the files and
the command. Tiny budgets: these check the machinery, not the RNN/LSTM result (RESULTS.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from projects.long_range import LongRangeConfig, run_long_range
from projects.long_range.cli import main
from projects.long_range.experiment import RecallModel, make_batch, summarize, train_recall
from projects.long_range.report import format_table, write_results

TINY = dict(
    gaps=(2, 4), seeds=(0,), hidden_size=8, batch_size=16, steps=6, eval_size=50, eval_every=3
)


def test_batch_puts_the_symbol_and_marker_at_step_0_and_noise_after():
    g = torch.Generator().manual_seed(0)
    x, y, lengths = make_batch(32, gap=5, num_classes=4, noise=2.0, generator=g)
    assert x.shape == (32, 6, 5) and y.shape == (32,) and lengths.tolist() == [6] * 32
    assert torch.equal(x[:, 0, :4].argmax(-1), y)  # the symbol, one-hot
    assert torch.equal(x[:, 0, :4].sum(-1), torch.ones(32))
    assert torch.equal(x[:, :, 4], torch.tensor([1.0] + [0.0] * 5).expand(32, 6))  # the marker
    assert x[:, 1:, :4].std() > 1.0  # distractors: noise of std 2 on the symbol's channels


def test_variable_gap_pads_after_each_length_with_zeros():
    g = torch.Generator().manual_seed(1)
    x, _, lengths = make_batch(64, gap=7, num_classes=3, noise=1.0, generator=g, variable_gap=True)
    assert lengths.min() >= 1 and lengths.max() <= 8 and len(set(lengths.tolist())) > 3
    for b in range(64):
        assert torch.all(x[b, lengths[b] :] == 0)
        assert x[b, 0, 3] == 1.0


def test_model_reads_the_final_state_at_each_length():
    torch.manual_seed(0)
    model = RecallModel("lstm", num_classes=4, hidden_size=6)
    x, _, lengths = make_batch(5, 6, 4, 1.0, torch.Generator().manual_seed(2), True)
    full = model(x, lengths)  # (B, K)
    one = torch.stack([model(x[b : b + 1, : lengths[b]])[0] for b in range(5)])
    torch.testing.assert_close(full, one, rtol=1e-5, atol=1e-6)


def test_same_seed_gives_the_same_result():
    config = LongRangeConfig(**TINY)
    a = train_recall("gru", 3, 0, config)
    b = train_recall("gru", 3, 0, config)
    assert a["accuracy"] == b["accuracy"] and a["curve"] == b["curve"]
    assert [p["step"] for p in a["curve"]] == [3, 6]


def test_summary_counts_solved_and_chance_gaps():
    config = LongRangeConfig(
        gaps=(10, 100), seeds=(0, 1), cells=("rnn", "lstm"), num_classes=4, eval_size=1000
    )
    rows = [
        {"cell": "rnn", "gap": 10, "seed": 0, "accuracy": 0.95},
        {"cell": "rnn", "gap": 10, "seed": 1, "accuracy": 0.93},
        {"cell": "rnn", "gap": 100, "seed": 0, "accuracy": 0.26},
        {"cell": "rnn", "gap": 100, "seed": 1, "accuracy": 0.25},
        {"cell": "lstm", "gap": 10, "seed": 0, "accuracy": 1.0},
        {"cell": "lstm", "gap": 10, "seed": 1, "accuracy": 1.0},
        {"cell": "lstm", "gap": 100, "seed": 0, "accuracy": 0.5},
        {"cell": "lstm", "gap": 100, "seed": 1, "accuracy": 1.0},
    ]
    table, solved, chance = summarize(config, rows)
    assert solved == {"rnn": [10], "lstm": [10]}  # 0.75 mean at 100 is not solved
    assert chance == {"rnn": [100], "lstm": []}
    assert table[1]["lstm"] == {
        "mean": 0.75,
        "min": 0.5,
        "max": 1.0,
        "seeds": 2,
        "per_seed": [0.5, 1.0],
        "seeds_at_chance": 0,
    }
    assert table[1]["rnn"]["seeds_at_chance"] == 2 and table[0]["rnn"]["seeds_at_chance"] == 0
    # one seed at chance, one not: the mean (0.36) is not at chance, the count says 1 of 2
    rows[3]["accuracy"] = 0.47
    table, _, chance = summarize(config, rows)
    assert chance["rnn"] == [] and table[1]["rnn"]["seeds_at_chance"] == 1


@pytest.mark.parametrize(
    "bad",
    [
        dict(gaps=()),
        dict(gaps=(0,)),
        dict(cells=("lstm", "tcn")),
        dict(steps=0),
        dict(lr=0.0),
        dict(num_classes=1),
        dict(seeds=(-1,)),
        dict(solved=0.2),
    ],
)
def test_config_refuses_bad_values(bad):
    with pytest.raises(ValueError, match="LongRangeConfig expected"):
        LongRangeConfig(**bad)


def test_run_reports_progress_and_writes_table_json_and_png(tmp_path):
    events = []
    results = run_long_range(LongRangeConfig(**TINY), progress=events.append)
    finished = [e for e in events if e["event"] == "run"]
    assert [e["index"] for e in finished] == list(range(1, 7)) and finished[0]["total"] == 6
    assert [(r["gap"], r["cell"]) for r in results.runs][:3] == [
        (2, "rnn"),
        (2, "lstm"),
        (2, "gru"),
    ]
    paths = write_results(results, tmp_path / "out", extra={"machine": {"cpu_count": 2}})
    saved = json.loads(paths["json"].read_text())
    assert saved["chance"] == 0.25 and saved["config"]["gaps"] == [2, 4]
    assert set(saved["solved_gaps"]) == {"rnn", "lstm", "gru"} and len(saved["runs"]) == 6
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = format_table(results)
    assert table.splitlines()[0] == "| gap | RNN | LSTM | GRU |"
    assert paths["table"].read_text().strip() == table
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "accuracy_vs_gap.png",
        "results.json",
        "table.md",
    ]


def test_command_prints_the_table(tmp_path, capsys):
    status = main(
        [
            "--gaps",
            "2",
            "--seeds",
            "0",
            "--steps",
            "4",
            "--cells",
            "rnn",
            "lstm",
            "--out",
            str(tmp_path / "lr"),
        ]
    )
    out = capsys.readouterr().out
    assert status == 0
    assert "| gap | RNN | LSTM |" in out and "[2/2] gap    2 lstm seed 0" in out
    assert (tmp_path / "lr" / "results.json").is_file()


def test_command_refuses_an_unwritable_out_before_training(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    status = main(["--gaps", "2", "--steps", "4", "--out", str(blocker / "sub")])
    err = capsys.readouterr().err
    assert status == 2 and "expected a writable folder" in err


def test_python_m_runs_it_from_a_checkout(tmp_path):
    """``python -m projects.long_range`` from the checkout's root, as README and RESULTS say."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root / "src"), str(root)])}
    argv = ["--gaps", "2", "--steps", "2", "--cells", "lstm", "--seeds", "0"]
    done = subprocess.run(
        [sys.executable, "-m", "projects.long_range", *argv, "--out", str(tmp_path / "lr")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "| gap | LSTM |" in done.stdout and (tmp_path / "lr" / "results.json").is_file()


def test_rnnlab_experiment_names_the_command_that_replaced_it(capsys):
    from rnnlab.cli import main as rnnlab

    assert rnnlab(["experiment", "long-range", "--gaps", "2", "--out", "my runs"]) == 2
    err = capsys.readouterr().err
    assert "moved out of the package" in err
    assert "`python -m projects.long_range --gaps 2 --out 'my runs'`" in err
    assert rnnlab(["experiment"]) == 2
    assert "python -m projects.context" in capsys.readouterr().err


def test_every_registry_cell_is_named_coloured_and_styled():
    """--cells takes any registry cell; a cell missing here crashed a finished 76-minute run
    when its table and plot were written."""
    from projects.long_range.report import COLOURS, NAMES, STYLES
    from rnnlab.nn.registry import CELL_NAMES

    assert set(CELL_NAMES) <= set(NAMES) & set(COLOURS) & set(STYLES)


def test_results_of_the_new_cells_are_written(tmp_path):
    config = LongRangeConfig(**{**TINY, "cells": ("mingru", "mlstm"), "gaps": (2,)})
    results = run_long_range(config)
    paths = write_results(results, tmp_path / "out")
    assert format_table(results).splitlines()[0] == "| gap | minGRU | mLSTM |"
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"
