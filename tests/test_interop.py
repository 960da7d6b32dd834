"""rnnlab layers against the real torch.nn and Keras 3 layers whose weights they copy.

Shape legend: B batch, T time, I input features, H hidden units, D directions, L layers.
Every expected value comes from running torch or Keras; sizes and seeds are drawn at random.
"""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch
from torch import nn

from rnnlab import GRU, LSTM, RNN, LSTMState, Recurrent

TORCH_TYPES = {LSTM: nn.LSTM, GRU: nn.GRU, RNN: nn.RNN}
BACKENDS = ("fused", "reference")
TOL = {"rtol": 1e-5, "atol": 1e-5}
# Keras's own torch <-> numpy conversions trip a NumPy 2 deprecation; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def random_torch_module(cls: type, seed: int) -> nn.RNNBase:
    """A torch module of random sizes, layer count, directions and layout; torch's own init."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    L = rng.randint(1, 2)
    return TORCH_TYPES[cls](
        rng.randint(1, 6),
        rng.randint(1, 6),
        num_layers=L,
        bidirectional=rng.random() < 0.5,
        batch_first=rng.random() < 0.5,
        dropout=0.25 if L > 1 else 0.0,
    ).eval()


def run_torch(module: nn.RNNBase, x: torch.Tensor) -> tuple[torch.Tensor, object]:
    """Run a torch module on batch-first x (B, T, I); returns batch-first output and state."""
    out, state = module(x if module.batch_first else x.transpose(0, 1))
    return (out if module.batch_first else out.transpose(0, 1)), state


def assert_same_state(ours: object, theirs: object) -> None:
    if isinstance(ours, LSTMState):
        torch.testing.assert_close(ours.h, theirs[0], **TOL)
        torch.testing.assert_close(ours.c, theirs[1], **TOL)
    else:
        torch.testing.assert_close(ours, theirs, **TOL)


# -- torch ------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("cls", [LSTM, GRU, RNN])
def test_from_torch_matches_torch(cls: type, seed: int) -> None:
    module = random_torch_module(cls, seed)
    layer = cls.from_torch(module)
    assert not layer.training
    x = torch.randn(3, 5, module.input_size)  # (B, T, I)
    expected_out, expected_state = run_torch(module, x)
    for backend in BACKENDS:
        layer.backend = backend
        out, state = layer(x)
        torch.testing.assert_close(out, expected_out, **TOL)
        assert_same_state(state, expected_state)


def test_from_torch_two_layer_bidirectional_lstm_with_lengths() -> None:
    """The acceptance case, also against torch's packed sequences for post-padded lengths."""
    torch.manual_seed(0)
    module = nn.LSTM(4, 6, num_layers=2, bidirectional=True, batch_first=True).eval()
    layer = LSTM.from_torch(module)
    assert (layer.num_layers, layer.num_directions) == (2, 2)
    x = torch.randn(3, 7, 4)  # (B, T, I)
    lengths = torch.tensor([7, 2, 5])
    packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    packed_out, (h, c) = module(packed)
    expected, _ = nn.utils.rnn.pad_packed_sequence(packed_out, batch_first=True, total_length=7)
    for backend in BACKENDS:
        layer.backend = backend
        out, state = layer(x, lengths=lengths)
        torch.testing.assert_close(out, expected, **TOL)
        assert_same_state(state, (h, c))


@pytest.mark.parametrize("cls", [LSTM, GRU, RNN])
def test_to_torch_round_trip(cls: type) -> None:
    module = random_torch_module(cls, seed=10)
    layer = cls.from_torch(module)
    back = layer.to_torch()
    assert type(back) is TORCH_TYPES[cls] and back.batch_first and not back.training
    assert (back.num_layers, back.bidirectional) == (module.num_layers, module.bidirectional)
    x = torch.randn(2, 4, module.input_size)  # (B, T, I)
    expected_out, expected_state = run_torch(module, x)
    out, state = back(x)
    torch.testing.assert_close(out, expected_out, **TOL)
    assert_same_state(LSTMState(*state) if cls is LSTM else state, expected_state)
    again = cls.from_torch(back)
    for p, q in zip(layer.parameters(), again.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6)


def test_to_torch_gives_the_rnnlab_gru_candidate_bias_to_b_hn() -> None:
    torch.manual_seed(3)
    layer = GRU(3, 4, bidirectional=True)
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_()  # every bias non-zero, bias_hn included
    module = layer.to_torch()
    x = torch.randn(2, 5, 3)  # (B, T, I)
    out, h = layer(x)
    expected_out, expected_h = module(x)
    torch.testing.assert_close(out, expected_out, **TOL)
    torch.testing.assert_close(h, expected_h, **TOL)


def test_from_torch_without_bias_and_in_float64() -> None:
    torch.manual_seed(4)
    module = nn.LSTM(3, 5, bias=False, batch_first=True, dtype=torch.float64).train()
    layer = LSTM.from_torch(module)
    assert layer.training
    assert all(p.dtype == torch.float64 for p in layer.parameters())
    assert all(cell.bias.abs().sum() == 0 for cell in layer.cells)
    x = torch.randn(2, 4, 3, dtype=torch.float64)  # (B, T, I)
    out, _ = layer(x)
    torch.testing.assert_close(out, module(x)[0], rtol=1e-12, atol=1e-12)
    assert layer.to_torch().weight_ih_l0.dtype == torch.float64


def test_from_torch_refuses_what_rnnlab_cannot_express() -> None:
    with pytest.raises(TypeError, match=r"expected a torch.nn.LSTM, got GRU"):
        LSTM.from_torch(nn.GRU(2, 3))
    with pytest.raises(TypeError, match=r"expected a torch.nn.GRU, got Linear"):
        GRU.from_torch(nn.Linear(2, 3))
    with pytest.raises(ValueError, match=r"expected nonlinearity='tanh'.*got 'relu'"):
        RNN.from_torch(nn.RNN(2, 3, nonlinearity="relu"))
    # torch's proj_size (LSTMP) converts since issue 23: tests/test_variants.py checks it
    assert LSTM.from_torch(nn.LSTM(2, 3, proj_size=2)).proj_size == 2


# -- Keras --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def keras():
    os.environ["KERAS_BACKEND"] = "torch"  # must be set before Keras is first imported
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "torch":
        pytest.skip(f"Keras already imported with the {keras.backend.backend()} backend")
    keras.utils.set_random_seed(0)
    return keras


def randomize(keras_layer, seed: int) -> None:
    """Non-zero weights everywhere, biases included (Keras initialises them to 0 / 1)."""
    rng = np.random.default_rng(seed)
    keras_layer.set_weights([rng.normal(0, 0.5, w.shape) for w in keras_layer.get_weights()])


def keras_call(keras, model, x: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(keras.ops.convert_to_numpy(model(x.numpy())))


def assert_matches_keras(keras, ours, theirs, x: torch.Tensor, return_sequences: bool) -> None:
    expected = keras_call(keras, theirs, x)
    wrapped = Recurrent(ours, return_sequences=return_sequences).eval()
    for backend in BACKENDS:
        ours.backend = backend
        torch.testing.assert_close(wrapped(x), expected, **TOL)


@pytest.mark.parametrize("return_sequences", [True, False])
@pytest.mark.parametrize("cls, kind", [(LSTM, "LSTM"), (GRU, "GRU"), (RNN, "SimpleRNN")])
def test_from_keras_single_layer(keras, cls: type, kind: str, return_sequences: bool) -> None:
    x = torch.randn(3, 6, 4)  # (B, T, I)
    theirs = getattr(keras.layers, kind)(5, return_sequences=return_sequences)
    theirs(x.numpy())  # build
    randomize(theirs, seed=1)
    ours = cls.from_keras(theirs)
    assert (ours.input_size, ours.hidden_size, ours.num_layers) == (4, 5, 1)
    assert_matches_keras(keras, ours, theirs, x, return_sequences)


@pytest.mark.parametrize("return_sequences", [True, False])
@pytest.mark.parametrize("cls, kind", [(LSTM, "LSTM"), (GRU, "GRU")])
def test_from_keras_bidirectional(keras, cls: type, kind: str, return_sequences: bool) -> None:
    x = torch.randn(2, 5, 3)  # (B, T, I)
    theirs = keras.layers.Bidirectional(
        getattr(keras.layers, kind)(4, return_sequences=return_sequences)
    )
    theirs(x.numpy())
    randomize(theirs, seed=2)
    ours = cls.from_keras(theirs)
    assert ours.bidirectional
    assert_matches_keras(keras, ours, theirs, x, return_sequences)


def test_from_keras_stacked_sequential_with_dropout(keras) -> None:
    T, I, H = 6, 3, 4
    theirs = keras.Sequential(
        [
            keras.Input((T, I)),
            keras.layers.LSTM(H, return_sequences=True),
            keras.layers.Dropout(0.3),
            keras.layers.LSTM(H),
        ]
    )
    randomize(theirs, seed=3)
    ours = LSTM.from_keras(theirs)
    assert (ours.num_layers, ours.dropout) == (2, 0.3)
    assert_matches_keras(keras, ours, theirs, torch.randn(2, T, I), return_sequences=False)


def test_from_keras_stacked_bidirectional_list(keras) -> None:
    x = torch.randn(2, 4, 3)  # (B, T, I)
    first = keras.layers.Bidirectional(keras.layers.LSTM(5, return_sequences=True))
    second = keras.layers.Bidirectional(keras.layers.LSTM(5, return_sequences=True))
    model = keras.Sequential([keras.Input((4, 3)), first, second])
    randomize(model, seed=4)
    ours = LSTM.from_keras([first, second])
    assert (ours.num_layers, ours.num_directions, ours.input_size) == (2, 2, 3)
    assert_matches_keras(keras, ours, model, x, return_sequences=True)


def test_from_keras_functional_model_takes_the_recurrent_run(keras) -> None:
    """Embedding in front and Dense behind are skipped; the two LSTMs become one stack."""
    ids = keras.Input((7,), dtype="int32")
    embedded = keras.layers.Embedding(50, 3)(ids)
    run = keras.layers.LSTM(4, return_sequences=True, use_bias=False)(embedded)
    run = keras.layers.LSTM(4)(run)
    model = keras.Model(ids, keras.layers.Dense(2)(run))
    randomize(model, seed=5)
    ours = LSTM.from_keras(model)
    assert torch.all(ours.cell(0).bias == 0)
    tokens = torch.randint(0, 50, (2, 7))  # (B, T)
    x = keras_call(keras, model.layers[1], tokens)  # (B, T, 3): Keras's own embedding
    features = keras.Model(ids, run)
    expected = torch.as_tensor(keras.ops.convert_to_numpy(features(tokens.numpy())))
    torch.testing.assert_close(Recurrent(ours)(x), expected, **TOL)


def test_from_keras_refuses_what_rnnlab_cannot_express(keras) -> None:
    def built(layer, input_size: int = 3):
        layer(np.zeros((1, 2, input_size), "float32"))
        return layer

    L = keras.layers
    with pytest.raises(TypeError, match=r"expected a Keras LSTM.*got GRU"):
        LSTM.from_keras(built(L.GRU(2)))
    with pytest.raises(TypeError, match=r"got LSTM"):
        LSTM.from_keras(nn.LSTM(2, 3))
    with pytest.raises(ValueError, match=r"expected go_backwards=False.*got go_backwards=True"):
        LSTM.from_keras(built(L.LSTM(2, go_backwards=True)))
    with pytest.raises(ValueError, match=r"expected activation='tanh', got 'relu'"):
        LSTM.from_keras(built(L.LSTM(2, activation="relu")))
    with pytest.raises(ValueError, match=r"expected recurrent_activation='sigmoid'"):
        GRU.from_keras(built(L.GRU(2, recurrent_activation="hard_sigmoid")))
    with pytest.raises(ValueError, match=r"expected reset_after=True"):
        GRU.from_keras(built(L.GRU(2, reset_after=False)))
    with pytest.raises(ValueError, match=r"expected a built Keras layer"):
        LSTM.from_keras(L.LSTM(2))
    with pytest.raises(ValueError, match=r"expected every layer of the stack to have 2 units"):
        LSTM.from_keras([built(L.LSTM(2, return_sequences=True)), built(L.LSTM(3), 2)])
    with pytest.raises(ValueError, match=r"2 inputs, got 2 units, 1 direction\(s\) and 3 inputs"):
        LSTM.from_keras([built(L.LSTM(2, return_sequences=True)), built(L.LSTM(2))])
    with pytest.raises(ValueError, match=r"expected return_sequences=True on every layer but"):
        LSTM.from_keras([built(L.LSTM(2)), built(L.LSTM(2), 2)])
    with pytest.raises(ValueError, match=r"expected the same dropout between every pair"):
        LSTM.from_keras(
            [built(L.LSTM(2, return_sequences=True)), L.Dropout(0.5)]
            + [built(L.LSTM(2, return_sequences=True), 2), built(L.LSTM(2), 2)]
        )
    with pytest.raises(ValueError, match=r"expected nothing or one Dropout.*got \['Dense'\]"):
        LSTM.from_keras([built(L.LSTM(2, return_sequences=True)), L.Dense(2), built(L.LSTM(2))])
    with pytest.raises(ValueError, match=r"expected a Bidirectional.*merge_mode='concat'"):
        LSTM.from_keras(built(L.Bidirectional(L.LSTM(2), merge_mode="sum")))


def test_from_keras_refuses_parallel_branches(keras) -> None:
    x = keras.Input((4, 3))
    a = keras.layers.LSTM(3, return_sequences=True)(x)
    b = keras.layers.LSTM(3, return_sequences=True)(x)  # reads x, not a
    model = keras.Model(x, keras.layers.Add()([a, b]))
    with pytest.raises(ValueError, match=r"to read the output of"):
        LSTM.from_keras(model)


def random_rnnlab_layer(cls: type, layers: int, bidirectional: bool, seed: int):
    """An rnnlab layer (4 -> 5 units) with non-zero biases everywhere, GRU's bias_hn included."""
    torch.manual_seed(seed)
    layer = cls(4, 5, num_layers=layers, bidirectional=bidirectional, dropout=0.25 * (layers - 1))
    with torch.no_grad():
        for p in layer.parameters():
            if p.dim() == 1:
                p.normal_(0, 0.5)
    return layer.eval()


@pytest.mark.parametrize("return_sequences", [True, False])
@pytest.mark.parametrize("layers, bidirectional", [(1, False), (1, True), (2, False), (2, True)])
@pytest.mark.parametrize("cls", [LSTM, GRU, RNN])
def test_to_keras_matches_rnnlab_and_reads_back_exactly(
    keras, cls: type, layers: int, bidirectional: bool, return_sequences: bool
) -> None:
    ours = random_rnnlab_layer(cls, layers, bidirectional, seed=layers + 2 * bidirectional)
    theirs = ours.to_keras(return_sequences=return_sequences)
    stack = theirs if isinstance(theirs, list) else [theirs]
    assert isinstance(theirs, list) == (layers > 1)
    recurrent = [item for item in stack if not isinstance(item, keras.layers.Dropout)]
    assert len(recurrent) == layers and len(stack) == 2 * layers - 1  # Dropout between layers
    assert all(isinstance(item, keras.layers.Bidirectional) == bidirectional for item in recurrent)
    x = torch.randn(3, 6, 4)  # (B, T, I)
    model = keras.Sequential([keras.Input((6, 4)), *stack])
    expected = Recurrent(ours, return_sequences=return_sequences)(x)
    torch.testing.assert_close(keras_call(keras, model, x), expected, rtol=0, atol=1e-5)

    back = cls.from_keras(theirs)
    assert (back.num_layers, back.bidirectional, back.dropout) == (
        ours.num_layers,
        ours.bidirectional,
        ours.dropout,
    )
    assert back.state_dict().keys() == ours.state_dict().keys()
    for name, value in ours.state_dict().items():
        assert torch.equal(back.state_dict()[name], value), name


def test_to_keras_gru_is_reset_after_and_float64_stays_float64(keras) -> None:
    ours = random_rnnlab_layer(GRU, 1, False, seed=7).double()
    theirs = ours.to_keras(return_sequences=True)
    assert theirs.reset_after and theirs.dtype == "float64"
    x = torch.randn(2, 5, 4, dtype=torch.float64)
    torch.testing.assert_close(keras_call(keras, theirs, x), ours(x)[0], rtol=0, atol=1e-12)
    assert GRU.from_keras(theirs).cell(0).bias_hn.dtype == torch.float64


def test_to_keras_refuses_other_dtypes(keras) -> None:
    with pytest.raises(ValueError, match=r"LSTM.to_keras expected float32 or float64 weights"):
        LSTM(2, 3).half().to_keras()
