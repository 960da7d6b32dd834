"""report.json as a typed Report: round trips, reports of older versions, the CLI's last lines.

A real run's report is checked against its file in tests/test_run.py
(``test_a_run_directory_holds_everything``)."""

import json
from pathlib import Path

import pytest

from rnnlab.cli.commands import final_lines
from rnnlab.runs import Report, RunError
from rnnlab.train import Selection

# report.json of an mnist-sample run, as rnnlab wrote it before the Report class (key order too)
CLASSIFIER = {
    "preset": "mnist-sample",
    "run_dir": "runs/mnist",
    "test_accuracy": 0.9123,
    "test_loss": 0.31,
    "test_checkpoint": "last",
    "val_accuracy": 0.9123,
    "best_val_accuracy": 0.9123,
    "best_epoch": 2,
    "final_train_accuracy": 0.88,
    "selection": "val_accuracy (max)",
    "validation": "test",
    "holdout_seed": None,
    "epochs": 2,
    "stopped": None,
    "steps": 80,
    "samples": 20000,
    "train_examples": 10000,
    "parameters": 2218,
    "processes": 1,
    "train_seconds": 4.0,
    "wall_seconds": 6.31,
    "samples_per_second": 5000.4,
    "throughput_unit": "samples",
    "machine": {"platform": "Linux", "cpu_count": 2, "torch_threads": 1},
    "versions": {"rnnlab": "0.1.0", "torch": "2.13.0"},
}
# a word-level language model's, selected on the validation loss, with perplexity
LANGUAGE_MODEL = {
    **{k: v for k, v in CLASSIFIER.items() if "accuracy" not in k and k != "test_loss"},
    "preset": "wordlm",
    "test_perplexity": 151.5,
    "test_loss": 5.02,
    "val_loss": 5.1,
    "best_val_loss": 5.0,
    "final_train_loss": 4.9,
    "selection": "val_loss (min)",
    "samples_per_second": 8400.0,
    "throughput_unit": "tokens",
}


def test_a_report_round_trips_key_for_key_in_order():
    report = Report.from_json(CLASSIFIER)
    assert report.to_json() == CLASSIFIER and list(report.to_json()) == list(CLASSIFIER)
    assert Report.from_json(report.to_json()) == report
    assert report.selection == Selection("accuracy", "max")
    assert report.selection_key == "val_accuracy"
    assert report.test == {"accuracy": 0.9123, "loss": 0.31}
    assert (report.best, report.best_epoch, report.final_train) == (0.9123, 2, 0.88)
    assert json.loads(report.to_bytes()) == CLASSIFIER


def test_a_language_model_report_names_its_metric_keys_from_the_selection():
    report = Report.from_json(LANGUAGE_MODEL)
    assert report.selection == Selection("loss", "min")
    assert (report.val, report.best, report.final_train) == (5.1, 5.0, 4.9)
    assert report.test == {"perplexity": 151.5, "loss": 5.02}
    assert report.throughput_unit == "tokens"
    written = report.to_json()
    assert written == LANGUAGE_MODEL
    assert "best_val_accuracy" not in written and written["best_val_loss"] == 5.0


def test_a_run_without_a_test_has_no_test_keys():
    values = {k: v for k, v in CLASSIFIER.items() if not k.startswith("test_")}
    report = Report.from_json(values)
    assert report.test == {} and report.test_checkpoint is None
    assert report.to_json() == values


def test_a_report_of_the_first_rnnlab_version_still_reads():
    """Its keys (commit d712706): no selection, validation, holdout_seed, stopped, processes
    or throughput_unit; every run then was a classifier."""
    later = ("selection", "validation", "holdout_seed", "stopped", "processes", "throughput_unit")
    old = {k: v for k, v in CLASSIFIER.items() if k not in later}
    report = Report.from_json(old)
    assert report.selection == Selection("accuracy", "max") and report.best == 0.9123
    assert (report.processes, report.throughput_unit, report.validation) == (1, "samples", None)
    assert report.test == {"accuracy": 0.9123, "loss": 0.31}
    assert {k: report.to_json()[k] for k in old} == old  # writing it back keeps every value


def test_read_names_the_file_and_what_is_missing(tmp_path):
    with pytest.raises(RunError, match=r"report\.json: expected a finished run's report\.json"):
        Report.read(tmp_path)
    (tmp_path / "report.json").write_text(json.dumps({"test_accuracy": 0.5, "steps": 3}))
    with pytest.raises(RunError, match=r"expected the keys \['preset', 'run_dir', 'epochs'"):
        Report.read(tmp_path)
    (tmp_path / "report.json").write_text(json.dumps({**CLASSIFIER, "selection": "accuracy"}))
    with pytest.raises(RunError, match=r'expected a selection like "val_accuracy \(max\)"'):
        Report.read(tmp_path)
    (tmp_path / "report.json").write_text(json.dumps(CLASSIFIER))
    assert Report.read(tmp_path).to_json() == CLASSIFIER


def test_the_cli_last_lines_of_a_classifier_are_the_tutorial_s():
    """Exactly what ``rnnlab train`` printed before the Report class (cli/commands.py)."""
    assert final_lines(Report.from_json(CLASSIFIER), Path("runs/mnist")) == [
        "Testing Accuracy: 0.9123",
        "Best val_acc: 0.9123 (epoch 2)",
        "80 steps in 6.3 s (5000 samples/s). Run saved in runs/mnist",
    ]


def test_the_cli_last_lines_of_a_language_model_count_tokens():
    assert final_lines(Report.from_json(LANGUAGE_MODEL), Path("runs/lm")) == [
        "Test perplexity: 151.5000",
        "Best val_loss: 5.0000 (epoch 2)",
        "80 steps in 6.3 s (8400 tokens/s). Run saved in runs/lm",
    ]
