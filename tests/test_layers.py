"""Layer semantics: stepping cells by hand, padding and masks, gates, validation."""

import pytest
import torch

from rnnlab import GRU, LSTM, RNN, LSTMState

LAYERS = [LSTM, GRU, RNN]
BACKENDS = ["reference", "fused"]


def _h(state):
    return state.h if isinstance(state, LSTMState) else state


@pytest.mark.parametrize("backend", BACKENDS)
def test_layer_equals_stepping_the_cells_by_hand(backend):
    """A 2-layer bidirectional LSTM is, by definition, cells applied step by step."""
    torch.manual_seed(0)
    B, T, I, H = 3, 5, 4, 6
    model = LSTM(I, H, num_layers=2, bidirectional=True, backend=backend)
    x = torch.randn(B, T, I)
    out, state = model(x)

    layer_input = x
    finals = []
    for layer in range(2):
        outputs = []
        for direction, steps in ((0, range(T)), (1, reversed(range(T)))):
            cell = model.cell(layer, direction)
            s = LSTMState(torch.zeros(B, H), torch.zeros(B, H))
            hs = [None] * T
            for t in steps:
                s = cell(layer_input[:, t], s)
                hs[t] = s.h
            outputs.append(torch.stack(hs, 1))
            finals.append(s)
        layer_input = torch.cat(outputs, -1)
    torch.testing.assert_close(out, layer_input, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(state.h, torch.stack([s.h for s in finals]), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(state.c, torch.stack([s.c for s in finals]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("layer_cls", LAYERS)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("padding", ["post", "pre"])
def test_padding_is_invisible(layer_cls, backend, padding):
    """Each sequence of a padded batch gives exactly what it gives alone, unpadded: the same
    outputs at its real steps, zeros at padded steps, and its own final state (the backward
    direction starting at its last real step)."""
    torch.manual_seed(1)
    T, I, H = 7, 3, 5
    model = layer_cls(I, H, num_layers=2, bidirectional=True, backend=backend)
    lengths = torch.tensor([7, 3, 1, 5])
    x = torch.randn(len(lengths), T, I) * 3  # padded positions hold garbage on purpose
    out, state = model(x, lengths=lengths, padding=padding)
    for b, n in enumerate(lengths.tolist()):
        real = slice(0, n) if padding == "post" else slice(T - n, T)
        pad = slice(n, T) if padding == "post" else slice(0, T - n)
        alone_out, alone_state = model(x[b : b + 1, real])
        torch.testing.assert_close(out[b, real], alone_out[0], rtol=1e-5, atol=1e-6)
        assert torch.count_nonzero(out[b, pad]) == 0
        torch.testing.assert_close(_h(state)[:, b], _h(alone_state)[:, 0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_mask_equals_lengths(backend):
    torch.manual_seed(2)
    model = GRU(3, 4, bidirectional=True, backend=backend)
    x = torch.randn(3, 6, 3)
    lengths = torch.tensor([6, 2, 4])
    mask = torch.arange(6)[None, :] >= (6 - lengths)[:, None]  # pre-padding
    a, sa = model(x, lengths=lengths, padding="pre")
    b, sb = model(x, mask=mask)
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(sa, sb)


def test_initial_state_is_used_and_passed_through_padding():
    torch.manual_seed(3)
    model = LSTM(2, 3)
    x = torch.randn(2, 4, 2)
    h0, c0 = torch.randn(1, 2, 3), torch.randn(1, 2, 3)
    _, state = model(x, (h0, c0), lengths=torch.tensor([4, 1]))
    _, alone = model(x[1:, :1], LSTMState(h0[:, 1:], c0[:, 1:]))
    torch.testing.assert_close(state.h[:, 1], alone.h[:, 0])
    out_zero, _ = model(x)
    out_h0, _ = model(x, LSTMState(h0, c0))
    assert not torch.allclose(out_zero, out_h0)


def test_return_gates():
    torch.manual_seed(4)
    B, T, H = 2, 5, 3
    model = LSTM(4, H, num_layers=2, bidirectional=True)
    x = torch.randn(B, T, 4)
    lengths = torch.tensor([5, 3])
    out, state, gates = model(x, lengths=lengths, return_gates=True)
    assert len(gates) == 2 and all(len(layer) == 2 for layer in gates)
    for layer in gates:
        for trace in layer:
            assert set(trace) == {"i", "f", "g", "o", "c", "h"}
            assert all(v.shape == (B, T, H) for v in trace.values())
            assert torch.count_nonzero(trace["f"][1, 3:]) == 0  # padded steps are zero
    last = gates[1]
    torch.testing.assert_close(torch.cat([last[0]["h"], last[1]["h"]], -1), out)
    torch.testing.assert_close(last[0]["c"][0, -1], state.c[2, 0])  # forward final cell state
    torch.testing.assert_close(last[1]["c"][1, 0], state.c[3, 1])  # backward ends at t = 0
    gru_gates = GRU(4, H)(x, return_gates=True)[2][0][0]
    assert set(gru_gates) == {"r", "z", "n", "h"}


def test_forced_fused_backend_records_gates_with_the_reference_loop():
    model = LSTM(2, 3, backend="fused")
    x = torch.randn(1, 2, 2)
    out, _, gates = model(x, return_gates=True)
    torch.testing.assert_close(gates[0][0]["h"], out, rtol=0, atol=0)
    assert model.resolve_backend() == "fused" and model.backend == "fused"
    assert model.resolve_backend(return_gates=True) == "reference"
    assert LSTM(2, 3).resolve_backend(backend="torch") == "torch"


def test_dropout_between_layers_only_in_training():
    torch.manual_seed(5)
    model = LSTM(3, 8, num_layers=2, dropout=0.5)
    x = torch.randn(2, 4, 3)
    model.train()
    a, _ = model(x)
    b, _ = model(x)
    assert not torch.allclose(a, b)
    model.eval()
    c, _ = model(x)
    d, _ = model(x)
    assert torch.equal(c, d)
    single = LSTM(3, 8, num_layers=1, dropout=0.5).train()  # no layer above to drop into
    assert torch.equal(single(x)[0], single(x)[0])


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (
            lambda m: m(torch.randn(2, 3)),
            ValueError,
            r"expected input of shape \(B, T, 4\), got \(2, 3\)",
        ),
        (
            lambda m: m(torch.randn(2, 3, 5)),
            ValueError,
            r"expected input of shape \(B, T, 4\), got \(2, 3, 5\)",
        ),
        (
            lambda m: m(torch.ones(2, 3, 4, dtype=torch.long)),
            TypeError,
            "floating-point input, got dtype torch.int64",
        ),
        (lambda m: m([[1.0]]), TypeError, "expected input to be a torch.Tensor, got list"),
        (lambda m: m(torch.randn(2, 0, 4)), ValueError, "at least one time step"),
        (lambda m: m(torch.randn(2, 3, 4), torch.zeros(1, 2, 5)), TypeError, "LSTMState"),
        (
            lambda m: m(torch.randn(2, 3, 4), (torch.zeros(1, 2, 5), torch.zeros(1, 2, 5))),
            ValueError,
            r"state.h of shape \(1, 2, 6\), got \(1, 2, 5\)",
        ),
        (
            lambda m: m(torch.randn(2, 3, 4), lengths=torch.tensor([1, 4])),
            ValueError,
            r"every length in \[1, 3\], got values in \[1, 4\]",
        ),
        (
            lambda m: m(torch.randn(2, 3, 4), lengths=torch.tensor([0, 2])),
            ValueError,
            r"every length in \[1, 3\], got values in \[0, 2\]",
        ),
        (
            lambda m: m(torch.randn(2, 3, 4), lengths=torch.tensor([1, 2, 3])),
            ValueError,
            r"lengths of shape \(2,\), got \(3,\)",
        ),
        (
            lambda m: m(torch.randn(2, 3, 4), lengths=torch.tensor([1.0, 2.0])),
            TypeError,
            "integer lengths, got dtype torch.float32",
        ),
        (
            lambda m: m(torch.randn(2, 3, 4), mask=torch.ones(2, 3)),
            ValueError,
            r"bool tensor of shape \(2, 3\), got torch.float32",
        ),
        (
            lambda m: m(torch.randn(2, 3, 4), lengths=torch.tensor([1, 2]), padding="left"),
            ValueError,
            "padding 'post' or 'pre', got 'left'",
        ),
    ],
)
def test_bad_input_is_named(call, error, message):
    model = LSTM(4, 6)
    with pytest.raises(error, match=message):
        call(model)


def test_bad_construction_is_named():
    with pytest.raises(ValueError, match="backend in"):
        LSTM(2, 3, backend="cudnn")
    with pytest.raises(ValueError, match=r"dropout in \[0, 1\), got 1.5"):
        GRU(2, 3, dropout=1.5)
    with pytest.raises(ValueError, match="num_layers to be a positive int, got 0"):
        RNN(2, 3, num_layers=0)
    with pytest.raises(
        TypeError, match=r"state of dtype torch.float32 \(the input's\), got torch.float64"
    ):
        GRU(2, 3)(torch.randn(1, 2, 2), torch.zeros(1, 1, 3, dtype=torch.float64))


def test_the_cell_registry_names_every_layer():
    from rnnlab import MLSTM, SLSTM, MinGRU, MinLSTM
    from rnnlab.nn.registry import CELL_NAMES, LAYERS, layer_class

    assert CELL_NAMES == ("rnn", "lstm", "gru", "mingru", "minlstm", "slstm", "mlstm")
    classes = [RNN, LSTM, GRU, MinGRU, MinLSTM, SLSTM, MLSTM]
    assert [layer_class(name) for name in CELL_NAMES] == classes == list(LAYERS.values())
    with pytest.raises(ValueError, match=r"expected one of \('rnn', 'lstm', .*\), got 'x'"):
        layer_class("x")
