"""The tasks: the registry, a review encoded for predict exactly as the corpus was, truncation
reported, the holdout fixed by its seed, the image task's input shape."""

import dataclasses
from pathlib import Path

import pytest
import torch

from rnnlab.config import ConfigError, load_preset
from rnnlab.data import encode_text, get_word_index
from rnnlab.tasks import TASKS, ImageClassification, PredictError, TextClassification, get_task
from rnnlab.tasks.base import carve_holdout
from rnnlab.train import Split

REVIEW = "A wonderful, moving film! The acting was great; the plot, though, was thin."


def test_the_registry_maps_model_kind_to_a_task():
    assert isinstance(get_task(load_preset("mnist-seed")), ImageClassification)
    assert isinstance(get_task(load_preset("imdb-seed")), TextClassification)
    assert {cls.kind for cls in TASKS.values()} == set(TASKS)
    with pytest.raises(ConfigError, match="expected 'imdb' for model.kind='text', got 'mnist'"):
        get_task(load_preset("imdb-seed", ["data.dataset=mnist"]))


@pytest.mark.parametrize("punctuation", [True, False])
def test_a_review_is_encoded_as_the_data_layer_encodes_the_corpus(punctuation):
    """TextClassification.encode (ids, words, oov) against rnnlab.data.encode_text, which
    encodes the training corpus's way; with punctuation dropped, no punctuation id remains."""
    config = load_preset(
        "imdb-sample", [f"data.punctuation={str(punctuation).lower()}", "data.num_words=200"]
    )
    task, word_index = get_task(config), get_word_index(sample=True)
    ids, words, oov, truncated = task.encode(REVIEW, word_index)
    expected = encode_text(REVIEW, word_index, num_words=200)
    if not punctuation:
        expected = [i for i in expected if i in (1, 2) or any(c.isalnum() for c in _word(i))]
    assert ids == expected and not truncated
    assert words[0] == "[START]" and len(words) == len(ids) == len(oov)
    assert [i == 2 for i in ids[1:]] == oov[1:]
    assert (", " in REVIEW) and (("," in words) == punctuation)


def _word(i):
    """The word of id ``i`` (ranks offset by 3, as Keras encodes them)."""
    return {rank + 3: w for w, rank in get_word_index(sample=True).items()}.get(i, "")


def test_predict_inputs_report_truncation():
    config = load_preset("imdb-sample", ["data.maxlen=5"])
    task, vocab = get_task(config), {"vocab.json": get_word_index(sample=True)}
    prepared = task.prepare([REVIEW, "great film"], vocab)
    assert [n["truncated"] for n in prepared.notes] == [True, False]
    ids, lengths = prepared.inputs
    assert ids.shape == (2, 5) and lengths.tolist() == [5, 3]
    with pytest.raises(PredictError, match="review 2: expected at least one known word"):
        task.prepare(["good", "zzzzqqq"], vocab)


def test_the_holdout_is_fixed_by_its_own_seed():
    split = Split((torch.arange(100)[:, None],), torch.zeros(100, dtype=torch.int64))
    config = load_preset("mnist-sample", ["data.validation=holdout", "data.holdout=10"])
    _, val = carve_holdout(split, config)
    _, again = carve_holdout(split, config.override(["train.seed=7"]))
    _, other = carve_holdout(split, config.override(["data.holdout_seed=1"]))
    assert torch.equal(val.inputs[0], again.inputs[0])  # the training seed does not move it
    assert not torch.equal(val.inputs[0], other.inputs[0])
    with pytest.raises(ConfigError, match="expected fewer than the 100 training examples"):
        carve_holdout(split, config.override(["data.holdout=100"]))


def test_the_image_task_reads_28_rows_of_input_size_pixels():
    task = get_task(load_preset("mnist-seed", ["model.input_size=20"]))
    (x,) = task.example_inputs(3)
    assert x.shape == (3, 28, 20) and task.build_model()(x).shape == (3, 10)
    assert dataclasses.is_dataclass(task.selection) and task.selection.mode == "max"


def test_atomic_output_names_its_temporary_file_and_leaves_nothing_on_failure(tmp_path):
    from rnnlab.files import atomic_output, atomic_write

    dest = tmp_path / "f.bin"
    with atomic_output(dest) as handle:
        handle.write(b"abc")
        handle.flush()
        assert Path(handle.name).read_bytes() == b"abc" and not dest.exists()
    assert dest.read_bytes() == b"abc"
    with pytest.raises(RuntimeError), atomic_output(dest) as handle:
        handle.write(b"partial")
        raise RuntimeError("stop")
    atomic_write(tmp_path / "g.bin", b"xyz")
    assert dest.read_bytes() == b"abc" and sorted(p.name for p in tmp_path.iterdir()) == [
        "f.bin",
        "g.bin",
    ]
