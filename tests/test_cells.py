"""The reference cells against a hand computation and against torch's own cells."""

import math

import numpy as np
import pytest
import torch

from rnnlab import GRUCell, LSTMCell, LSTMState, RNNCell


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def test_lstm_cell_one_step_by_hand():
    """One step written out with numpy in float64, gate by gate, from the equations in the
    concatenated form of Olah's "Understanding LSTM Networks" (2015), W [h_{t-1}, x_t] + b."""
    torch.manual_seed(0)
    I, H, B = 3, 2, 2
    cell = LSTMCell(I, H).double()
    with torch.no_grad():
        cell.bias.normal_()
    x = torch.randn(B, I, dtype=torch.float64)
    h0 = torch.randn(B, H, dtype=torch.float64)
    c0 = torch.randn(B, H, dtype=torch.float64)

    W_ih, W_hh, b = (p.detach().numpy() for p in (cell.weight_ih, cell.weight_hh, cell.bias))
    xn, hn, cn = x.numpy(), h0.numpy(), c0.numpy()
    W = {}
    for k, name in enumerate("ifgo"):  # rows [kH:(k+1)H] belong to gate `name`
        rows = slice(k * H, (k + 1) * H)
        W[name] = (np.concatenate([W_hh[rows], W_ih[rows]], axis=1), b[rows])  # [W_h W_x]
    hx = np.concatenate([hn, xn], axis=1)  # [h_{t-1}, x_t]
    f = _sigmoid(hx @ W["f"][0].T + W["f"][1])
    i = _sigmoid(hx @ W["i"][0].T + W["i"][1])
    g = np.tanh(hx @ W["g"][0].T + W["g"][1])
    o = _sigmoid(hx @ W["o"][0].T + W["o"][1])
    c = f * cn + i * g
    h = o * np.tanh(c)

    with torch.no_grad():
        state, gates = cell(x, LSTMState(h0, c0), return_gates=True)
    np.testing.assert_allclose(state.c.numpy(), c, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(state.h.numpy(), h, rtol=1e-12, atol=1e-12)
    for name, value in zip("ifgo", (i, f, g, o), strict=True):
        np.testing.assert_allclose(gates[name].numpy(), value, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cells_match_torch_cells(seed):
    """torch.nn.{RNN,LSTM,GRU}Cell are independent implementations: copy our weights into them
    (the second torch bias set to zero, or to b_hn for the GRU) and compare."""
    torch.manual_seed(seed)
    B, I, H = 4, 5, 6
    x, h = torch.randn(B, I), torch.randn(B, H)

    lstm = LSTMCell(I, H)
    ref = torch.nn.LSTMCell(I, H)
    gru = GRUCell(I, H)
    ref_gru = torch.nn.GRUCell(I, H)
    rnn = RNNCell(I, H)
    ref_rnn = torch.nn.RNNCell(I, H)
    with torch.no_grad():
        for ours in (lstm, gru, rnn):
            ours.bias.normal_()
        gru.bias_hn.normal_()
        for ours, theirs in ((lstm, ref), (gru, ref_gru), (rnn, ref_rnn)):
            theirs.weight_ih.copy_(ours.weight_ih)
            theirs.weight_hh.copy_(ours.weight_hh)
            theirs.bias_ih.copy_(ours.bias)
            theirs.bias_hh.zero_()
        ref_gru.bias_hh[2 * H :].copy_(gru.bias_hn)

    c = torch.randn(B, H)
    h_ref, c_ref = ref(x, (h, c))
    state = lstm(x, LSTMState(h, c))
    torch.testing.assert_close(state.h, h_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(state.c, c_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gru(x, h), ref_gru(x, h), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(rnn(x, h), ref_rnn(x, h), rtol=1e-5, atol=1e-6)


def test_parameter_counts_match_keras():
    def count(m):
        return sum(p.numel() for p in m.parameters())

    I, H = 8, 256
    assert count(LSTMCell(I, H)) == 4 * H * (I + H + 1) == 271_360
    assert count(LSTMCell(H, H)) == 525_312
    assert count(GRUCell(I, H)) == 3 * H * (I + H) + 4 * H
    assert count(RNNCell(I, H)) == H * (I + H + 1)


def test_initialisation():
    """Keras's defaults: forget-gate bias block at forget_bias, other biases zero, orthogonal
    recurrent kernel, Glorot-uniform input kernel."""
    H, I = 16, 10
    cell = LSTMCell(I, H, forget_bias=1.0)
    b = cell.bias.detach()
    assert torch.equal(b[H : 2 * H], torch.ones(H))
    assert torch.equal(torch.cat([b[:H], b[2 * H :]]), torch.zeros(3 * H))
    k = cell.weight_hh.detach().T  # (H, 4H), Keras's recurrent_kernel
    torch.testing.assert_close(k @ k.T, torch.eye(H), atol=1e-5, rtol=0)
    bound = math.sqrt(6 / (I + 4 * H))
    assert cell.weight_ih.abs().max() <= bound
    assert LSTMCell(I, H, forget_bias=0.0).bias.abs().sum() == 0


def test_saturated_inputs_stay_finite():
    """Huge pre-activations saturate every gate; the cell must not overflow to inf or NaN."""
    cell = LSTMCell(3, 4)
    x = torch.full((2, 3), 1e4, requires_grad=True)
    state = LSTMState(torch.zeros(2, 4), torch.zeros(2, 4))
    for _ in range(50):
        state = cell(x, state)
    (state.h.sum() + state.c.sum()).backward()
    assert torch.isfinite(state.h).all() and torch.isfinite(state.c).all()
    assert state.h.abs().max() <= 1.0
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_cell_sizes_validated(bad):
    with pytest.raises(ValueError, match="expected hidden_size to be a positive int"):
        LSTMCell(3, bad)
