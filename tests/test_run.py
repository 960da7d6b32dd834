"""Run directories: what a run writes, using it, and every way it can go wrong."""

import json

import numpy as np
import pytest
import torch

from rnnlab.checkpoint import CheckpointError, load_checkpoint
from rnnlab.config import load_preset
from rnnlab.data import load_mnist
from rnnlab.predict import PredictError, evaluate_run, predict_images, predict_texts
from rnnlab.runs import Report, RunError, load_run, resume, train
from run_helpers import Poison
from tiny import merge_settings

TINY_MNIST = [
    "model.projection=16",
    "model.hidden_sizes=[16]",
    "train.epochs=2",
    "train.batch_size=250",
    "run.log_every=5",
    "run.checkpoint_every=7",
]
TINY_IMDB = [
    "model.embedding_dim=8",
    "model.hidden_sizes=[8]",
    "data.maxlen=60",
    "train.epochs=1",
    "train.batch_size=100",
    "data.num_words=2000",
]


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "mnist"
    return out, train("mnist-sample", out, overrides=TINY_MNIST)


def test_a_run_directory_holds_everything(mnist_run):
    out, report = mnist_run
    for name in (
        "config.json",
        "run.json",
        "metrics.jsonl",
        "learning_curve.png",
        "report.json",
        "checkpoints/last.json",
        "checkpoints/best.json",
    ):
        assert (out / name).is_file(), name
    assert json.loads((out / "run.json").read_text())["status"] == "finished"
    assert json.loads((out / "config.json").read_text())["model"]["hidden_sizes"] == [16]
    assert report == Report.read(out)  # what train returned is what it wrote
    written = json.loads((out / "report.json").read_text())
    assert report.to_json() == written and list(report.to_json()) == list(written)
    for key in (
        "test_accuracy",
        "best_val_accuracy",
        "epochs",
        "steps",
        "wall_seconds",
        "samples_per_second",
    ):
        assert written[key] is not None, key
    assert written["selection"] == "val_accuracy (max)" and written["throughput_unit"] == "samples"
    assert report.epochs == 2 and report.steps == 80 and report.best == written["best_val_accuracy"]
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if x["kind"] == "step"] == list(range(5, 81, 5))
    assert [x["epoch"] for x in lines if x["kind"] == "epoch"] == [1, 2]
    tensors, meta = load_checkpoint(out / "checkpoints", "last")
    assert meta["state"]["step"] == 80 and meta["config"]["name"] == "mnist-sample"
    assert "optimizer.0.exp_avg" in tensors and "rng.torch" in tensors
    assert len(list((out / "checkpoints").glob("*.safetensors"))) == 2  # old ones removed


def test_evaluate_and_predict_images(mnist_run, tmp_path):
    out, report = mnist_run
    result = evaluate_run(out, checkpoint="last")
    assert result["accuracy"] == pytest.approx(report.test["accuracy"])
    (_, _), (x_test, y_test) = load_mnist(sample=True)
    np.save(tmp_path / "digit.npy", x_test[0])
    import matplotlib.image

    matplotlib.image.imsave(tmp_path / "digit.png", x_test[1], cmap="gray", vmin=0, vmax=255)
    results = predict_images(out, [tmp_path / "digit.npy", tmp_path / "digit.png"])
    assert len(results) == 2 and all(len(r["probabilities"]) == 10 for r in results)
    assert sum(results[0]["probabilities"]) == pytest.approx(1.0)
    np.save(tmp_path / "wide.npy", np.zeros((28, 30), np.uint8))
    with pytest.raises(PredictError, match=r"expected a 28x28 image, got shape \(28, 30\)"):
        predict_images(out, [tmp_path / "wide.npy"])
    with pytest.raises(PredictError, match="expected a text model"):
        predict_texts(out, ["a fine film"])


def test_predict_turns_dark_on_light_images_around(mnist_run, tmp_path):
    """A digit drawn dark on white (MNIST's negative) gets the original's probabilities with
    invert="auto" and is reported as inverted; "never" feeds it as it is, and light-on-dark
    images are left alone by "auto"."""
    out, _ = mnist_run
    (_, _), (x_test, _) = load_mnist(sample=True)
    digits = x_test[:6]
    for i, x in enumerate(digits):
        np.save(tmp_path / f"d{i}.npy", x)
        np.save(tmp_path / f"neg{i}.npy", 255 - x)
    plain = predict_images(out, [tmp_path / f"d{i}.npy" for i in range(6)])
    negative = predict_images(out, [tmp_path / f"neg{i}.npy" for i in range(6)])
    raw = predict_images(out, [tmp_path / f"neg{i}.npy" for i in range(6)], invert="never")
    assert [r["inverted"] for r in plain] == [False] * 6
    assert [r["inverted"] for r in negative] == [True] * 6
    assert [r["inverted"] for r in raw] == [False] * 6
    for p, n, r in zip(plain, negative, raw, strict=True):
        assert n["probabilities"] == pytest.approx(p["probabilities"], abs=1e-6)
        assert r["probabilities"] != pytest.approx(p["probabilities"], abs=1e-3)
    forced = predict_images(out, [tmp_path / "d0.npy"], invert="always")
    assert forced[0]["inverted"] and forced[0]["probabilities"] == pytest.approx(
        raw[0]["probabilities"], abs=1e-6
    )
    with pytest.raises(PredictError, match=r"invert expected one of .*got 'sometimes'"):
        predict_images(out, [tmp_path / "d0.npy"], invert="sometimes")


def test_out_must_be_new_or_empty(mnist_run, tmp_path):
    out, _ = mnist_run
    with pytest.raises(RunError, match="expected a new or empty directory"):
        train("mnist-sample", out, overrides=TINY_MNIST)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(RunError, match="expected a new or empty directory, got an existing file"):
        train("mnist-sample", blocker, overrides=TINY_MNIST)
    with pytest.raises(RunError, match="expected a writable directory"):
        train("mnist-sample", blocker / "sub", overrides=TINY_MNIST)
    assert blocker.read_text() == "x"


def test_foreign_or_finished_run_directories(mnist_run, tmp_path):
    out, _ = mnist_run
    with pytest.raises(RunError, match="expected an rnnlab run's config.json, got no such file"):
        evaluate_run(tmp_path)
    with pytest.raises(RunError, match="expected an rnnlab run directory, got nothing there"):
        resume(tmp_path / "missing")
    with pytest.raises(RunError, match="expected an unfinished run, got a finished one"):
        resume(out)


def test_checkpoint_of_another_architecture_is_refused(mnist_run, tmp_path):
    out, _ = mnist_run
    import shutil

    from rnnlab.checkpoint import load_model_weights
    from rnnlab.runs import RunWarning
    from rnnlab.tasks import get_task

    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    config = json.loads((copy / "config.json").read_text())
    config["model"]["hidden_sizes"] = [32]
    (copy / "config.json").write_text(json.dumps(config))
    # the checkpoint's own configuration is used; the edited copy is only reported (issue 15)
    with pytest.warns(RunWarning, match=r"config.json differs .* \(model.hidden_sizes\)"):
        loaded, _, _ = load_run(copy)
    assert loaded.model.hidden_sizes == (16,)
    other = get_task(loaded.override(["model.hidden_sizes=[32]"])).build_model()
    tensors, _ = load_checkpoint(copy / "checkpoints", "best")
    with pytest.raises(CheckpointError, match="expected the parameters of this architecture"):
        load_model_weights(other, tensors, "best.json")


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(RunError, match=r"loss became nan at epoch 1, step 16.*--resume"):
        train("mnist-sample", out, overrides=TINY_MNIST, callbacks=[Poison(15)])
    tensors, meta = load_checkpoint(out / "checkpoints", "last")
    assert meta["state"]["step"] == 14
    assert all(torch.isfinite(t).all() for k, t in tensors.items() if k.startswith("model."))
    assert json.loads((out / "run.json").read_text())["status"] == "diverged"
    assert not (out / "report.json").exists()


def test_failure_before_any_checkpoint_leaves_no_directory(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(
        RunError, match="No checkpoint had been written; the run directory was removed"
    ):
        train("mnist-sample", out, overrides=TINY_MNIST, callbacks=[Poison(1)])
    assert not out.exists()


def test_text_run_predicts_reviews(tmp_path):
    out = tmp_path / "imdb"
    report = train("imdb-sample", out, overrides=TINY_IMDB)
    assert 0.0 <= report.test["accuracy"] <= 1.0 and (out / "vocab.json").is_file()
    results = predict_texts(out, ["A wonderful, moving film.", "Dull and far too long!"])
    assert [len(r["probabilities"]) for r in results] == [2, 2]
    assert results[0]["label_name"] in ("negative", "positive")
    with pytest.raises(PredictError, match="expected non-empty text"):
        predict_texts(out, ["   "])
    with pytest.raises(PredictError, match="expected at least one known word"):
        predict_texts(out, ["qqqzx vvvwq"])
    with pytest.raises(PredictError, match="expected an image model"):
        predict_images(out, [tmp_path / "x.npy"])


def test_image_presets_train_on_any_idx_folder(tmp_path):
    from rnnlab.data import sample_dir

    out = tmp_path / "idx"
    report = train(
        "mnist-sample",
        out,
        overrides=[
            *merge_settings(TINY_MNIST, "train.epochs=1"),
            f"data.path={sample_dir()}",
            "data.sample=false",
        ],
    )
    assert report.train_examples == 10_000 and report.steps == 40


def test_holdout_validation_tests_the_best_checkpoint_once(tmp_path, monkeypatch):
    """Validation on held-out training images every epoch; the test split is read once, at the
    end, by the best checkpoint."""
    from rnnlab.tasks import ImageClassification
    from rnnlab.train import Batches

    loaded, reads = [], []
    load, epoch = ImageClassification.load, Batches.epoch

    def spy_load(self, *args, **kwargs):
        loaded.append(load(self, *args, **kwargs))
        return loaded[-1]

    def spy_epoch(self, *args, **kwargs):
        data = loaded[-1]
        reads.append(
            {id(data.train): "train", id(data.val): "val", id(data.test): "test"}.get(
                id(self.split), "other"
            )
        )
        return epoch(self, *args, **kwargs)

    monkeypatch.setattr(ImageClassification, "load", spy_load)
    monkeypatch.setattr(Batches, "epoch", spy_epoch)
    report = train(
        "mnist-sample",
        tmp_path / "run",
        overrides=[*TINY_MNIST, "data.validation=holdout", "data.holdout=1000"],
    )
    assert report.train_examples == 9000 and report.test_checkpoint == "best"
    assert report.steps == 2 * 36 and report.holdout_seed == 0
    assert reads == ["train", "val", "train", "val", "test"]
    val, test = loaded[0].val, loaded[0].test
    assert len(val) == 1000 and not any(torch.equal(v, test.inputs[0][0]) for v in val.inputs[0])


@pytest.mark.parametrize(
    ("preset", "validation"),
    [("mnist", "holdout"), ("imdb", "holdout"), ("mnist-seed", "test"), ("imdb-seed", "test")],
)
def test_best_presets_select_on_a_holdout_and_seed_presets_as_the_tutorial(preset, validation):
    data = load_preset(preset).data
    assert data.validation == validation
    if validation == "holdout":
        assert data.holdout > 0 and data.holdout_seed == 0


def test_punctuation_can_be_dropped_like_keras(tmp_path):
    from rnnlab.config import load_preset
    from rnnlab.tasks import get_task

    config = load_preset("imdb-sample", ["data.punctuation=false"])
    data = get_task(config).load()
    comma = data.artifacts["vocab.json"][","] + 3
    assert comma < config.data.num_words and not (data.train.inputs[0] == comma).any()
    assert (get_task(load_preset("imdb-sample")).load().train.inputs[0] == comma).any()


def test_a_config_json_from_before_a_key_was_added_loads_without_a_warning(mnist_run, tmp_path):
    """A run written before Config gained a key (its config.json and checkpoint both lack it)
    is not told that its config.json differs: both are read with today's defaults."""
    import shutil
    import warnings

    run = shutil.copytree(mnist_run[0], tmp_path / "run")
    config = json.loads((run / "config.json").read_text())
    del config["data"]["max_length"]  # a key added by this release (sequence to sequence)
    (run / "config.json").write_text(json.dumps(config))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        evaluate_run(run)
