"""Property-based tests (hypothesis) of the two places that take free text from a user: the
``--set`` parser and predict's inputs. Whatever comes, the answer is a result or a refusal that
says what was expected and what came, never a traceback."""

from __future__ import annotations

import json
import string
from collections import Counter

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rnnlab.config import SECTIONS, Config, ConfigError, load_preset

EXAMPLES = Counter()  # examples run per test, printed at the end of each (pytest -s)
KEYS = [f"{s}.{f}" for s, cls in SECTIONS.items() for f in cls.__dataclass_fields__]
NUMBERS = ["inf", "-inf", "nan", "+nan", "1e400", "-1e400", "0", "-1", "1e-400", "0x10", "1_000"]
VALUES = st.one_of(
    st.sampled_from(
        NUMBERS + ["true", "[]", "[1, 2]", "[[1]]", "{a = 1}", '"x"', "''", "1979-05-27"]
    ),
    st.integers().map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.lists(st.integers(-(2**70), 2**70), max_size=4).map(str),
    st.text(max_size=30),
)
ASSIGNMENTS = st.one_of(
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(KEYS), VALUES),
    st.builds(lambda k, v: f"{k}={v}", st.text(max_size=20), VALUES),
    st.text(max_size=40),
)


def _refusal_is_clear(exc: Exception) -> None:
    text = str(exc)
    assert "expected" in text and "got" in text, text


@settings(max_examples=400, deadline=None)
@given(st.lists(ASSIGNMENTS, min_size=1, max_size=3))
def test_set_never_raises_anything_but_a_clear_config_error(assignments):
    EXAMPLES["--set"] += 1
    try:
        config = load_preset("mnist-sample", assignments)
    except ConfigError as exc:
        _refusal_is_clear(exc)
        return
    assert Config.from_dict(json.loads(json.dumps(config.to_dict()))) == config  # round trip
    for section in (config.data, config.model, config.train, config.run):
        for value in vars(section).values():
            assert not isinstance(value, float) or np.isfinite(value)


@pytest.fixture(scope="module")
def imdb_run(tmp_path_factory):
    from rnnlab.runs import train

    out = tmp_path_factory.mktemp("runs") / "imdb"
    settings_ = ["model.embedding_dim=8", "model.hidden_sizes=[8]", "data.maxlen=20"]
    train("imdb-sample", out, overrides=[*settings_, "train.epochs=1", "data.num_words=2000"])
    return out


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory):
    from rnnlab.runs import train

    out = tmp_path_factory.mktemp("runs") / "mnist"
    tiny = ["model.projection=8", "model.hidden_sizes=[8]", "train.batch_size=500"]
    train("mnist-sample", out, overrides=[*tiny, "train.epochs=1"])
    return out


REVIEW_TEXT = st.one_of(
    st.text(max_size=200),
    st.text(alphabet=string.ascii_letters + " .,!'\n\t", max_size=400),
    st.lists(st.sampled_from(["good", "bad", "film", "the", "zzqx", "!", ""]), max_size=300).map(
        " ".join
    ),
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(REVIEW_TEXT, min_size=1, max_size=5))
def test_predict_answers_or_names_each_bad_review(imdb_run, reviews):
    from rnnlab.predict import predict_each

    EXAMPLES["reviews"] += 1
    results = predict_each(imdb_run, reviews, input_kind="text")
    assert len(results) == len(reviews)
    for review, result in zip(reviews, results, strict=True):
        if "error" in result:
            _refusal_is_clear(result["error"])
            assert not review.strip() or "known word" in result["error"]
        else:
            assert abs(sum(result["probabilities"]) - 1) < 1e-6
            assert isinstance(result["truncated"], bool)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(max_size=300))
def test_predict_file_never_tracebacks(imdb_run, tmp_path_factory, capsys, content):
    from rnnlab.cli import main

    EXAMPLES["--file bytes"] += 1
    path = tmp_path_factory.mktemp("in") / "reviews.txt"
    path.write_bytes(content)
    status = main(["predict", str(imdb_run), "--file", str(path), "--json"])
    err = capsys.readouterr().err
    assert status in (0, 1, 2) and "Traceback" not in err
    for line in err.splitlines():
        if "error:" in line:
            _refusal_is_clear(line)


ARRAYS = st.one_of(
    st.builds(
        lambda shape, dtype, fill: np.full(shape, fill).astype(dtype),
        st.sampled_from([(28, 28), (28, 27), (28, 28, 3), (28, 28, 4), (784,), (0,), (2, 28, 28)]),
        st.sampled_from(["uint8", "float32", "float64", "int64", "bool", "complex64", "U3"]),
        st.sampled_from([0, 1, 255, -1, 0.5, 2.0, np.nan, np.inf]),
    ),
)


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.one_of(ARRAYS, st.binary(max_size=200)), st.sampled_from([".npy", ".png"]))
def test_predict_images_never_tracebacks(mnist_run, tmp_path_factory, data, suffix):
    from rnnlab.predict import PredictError, predict_images

    EXAMPLES["--image files"] += 1
    path = tmp_path_factory.mktemp("img") / f"x{suffix}"
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        with open(path, "wb") as handle:
            np.save(handle, data)
    try:
        results = predict_images(mnist_run, [path])
    except PredictError as exc:
        _refusal_is_clear(exc)
        assert "allow_pickle" not in str(exc)
        return
    assert len(results) == 1 and abs(sum(results[0]["probabilities"]) - 1) < 1e-6


def teardown_module() -> None:
    print(f"\nhypothesis examples run: {dict(EXAMPLES)}, total {sum(EXAMPLES.values())}")
