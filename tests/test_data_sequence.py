"""pad_sequences and to_categorical agree with Keras 3 (torch backend) on random cases."""

import os

import numpy as np
import pytest

from rnnlab.data import pad_sequences, to_categorical

os.environ["KERAS_BACKEND"] = "torch"  # before keras is imported; no TensorFlow here
keras = pytest.importorskip("keras")


def _random_sequences(rng: np.random.Generator) -> list:
    """0-6 sequences of length 0-8 (often empty), as lists or arrays, scalars or 2-vectors."""
    n = int(rng.integers(0, 7))
    vector = rng.random() < 0.1
    seqs = []
    for _ in range(n):
        length = 0 if rng.random() < 0.2 else int(rng.integers(1, 9))
        shape = (length, 2) if vector else (length,)
        seq = rng.integers(-5, 100, size=shape)
        seqs.append(seq if rng.random() < 0.3 else seq.tolist())
    return seqs


@pytest.mark.parametrize("seed", range(300))
def test_pad_sequences_matches_keras(seed):
    rng = np.random.default_rng(seed)
    seqs = _random_sequences(rng)
    kwargs = {
        "maxlen": None if rng.random() < 0.3 else int(rng.integers(1, 11)),
        "dtype": str(rng.choice(["int32", "int64", "float32", "float64"])),
        "padding": str(rng.choice(["pre", "post"])),
        "truncating": str(rng.choice(["pre", "post"])),
        "value": float(rng.choice([0.0, -1.0, 7.0, 2.5])),
    }
    if not seqs and kwargs["maxlen"] is None:  # Keras fails on max([]); so do we, clearly
        with pytest.raises(ValueError):
            keras.utils.pad_sequences(seqs, **kwargs)
        with pytest.raises(ValueError, match="maxlen"):
            pad_sequences(seqs, **kwargs)
        return
    expected = keras.utils.pad_sequences(seqs, **kwargs)
    got = pad_sequences(seqs, **kwargs)
    assert got.dtype == expected.dtype
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


def test_pad_sequences_defaults_and_docstring_example():
    seqs = [[1], [2, 3], [4, 5, 6]]
    np.testing.assert_array_equal(pad_sequences(seqs, maxlen=2), [[0, 1], [2, 3], [5, 6]])
    np.testing.assert_array_equal(pad_sequences(seqs), keras.utils.pad_sequences(seqs))
    assert pad_sequences([[], []]).shape == (2, 0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"padding": "middle"}, "padding"),
        ({"truncating": "both"}, "truncating"),
        ({"value": "x"}, "dtype=object"),
        ({"maxlen": -1}, "maxlen >= 0"),
    ],
)
def test_pad_sequences_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        pad_sequences([[1, 2]], **kwargs)


def test_pad_sequences_rejects_ragged_samples_and_non_sequences():
    with pytest.raises(ValueError, match="shape"):
        pad_sequences([[[1, 2]], [[1, 2, 3]]])
    with pytest.raises(ValueError, match="list of sequences"):
        pad_sequences([[1], 5])


@pytest.mark.parametrize("seed", range(200))
def test_to_categorical_matches_keras(seed):
    rng = np.random.default_rng(seed)
    shape = [(), (0,), (7,), (7, 1), (3, 4), (2, 3, 1), (1,), (5, 1, 2)][seed % 8]
    high = int(rng.integers(1, 12))
    y = rng.integers(0, high, size=shape)
    num_classes = None if rng.random() < 0.5 or y.size == 0 else high + int(rng.integers(0, 3))
    if y.size == 0:
        num_classes = high
    as_list = rng.random() < 0.3
    labels = y.tolist() if as_list else y
    expected = keras.utils.to_categorical(labels, num_classes)
    got = to_categorical(labels, num_classes)
    assert got.dtype == expected.dtype
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


def test_to_categorical_rejects_out_of_range_labels():
    with pytest.raises(ValueError, match=r"expected labels in \[0, 2\], got values in \[-1, 1\]"):
        to_categorical([0, 1, -1], 3)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        to_categorical([0, 2], 2)
    with pytest.raises(ValueError, match="num_classes"):
        to_categorical([])
