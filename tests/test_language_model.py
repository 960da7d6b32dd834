"""LanguageModel: forward / state carry, incremental generation, sampling rules, memorisation."""

from __future__ import annotations

import math

import pytest
import torch

from rnnlab.data.streams import batchify, windows
from rnnlab.data.vocab import Vocabulary
from rnnlab.nn.cells import LSTMState
from rnnlab.nn.language_model import LanguageModel, detach_state, sample_next

CELLS = ("lstm", "gru", "rnn")


def tiny(cell: str = "lstm", **kwargs) -> LanguageModel:
    torch.manual_seed(0)
    defaults = dict(vocab_size=13, embedding_dim=6, hidden_size=8, num_layers=2, cell=cell)
    return LanguageModel(**{**defaults, **kwargs}).double()


@pytest.mark.parametrize("cell", CELLS)
def test_generation_steps_match_full_forward(cell, monkeypatch):
    """Generation runs the prompt once, then one token per call (each drawn token is read, so
    its step can carry the state after it), and the logits it samples from equal a full forward
    pass over the same prefix (1e-5)."""
    model = tiny(cell)
    prompt = [3, 1, 4, 1, 5]
    calls, seen = [], []
    forward = model.forward

    def spy(ids, state=None):
        logits, new_state = forward(ids, state)
        calls.append(tuple(ids.shape))
        seen.append(logits[0, -1].clone())
        return logits, new_state

    monkeypatch.setattr(model, "forward", spy)
    tokens = list(model.generate(prompt, 6, seed=1))
    assert calls == [(1, 5)] + [(1, 1)] * 6  # prompt once, never the prefix again
    monkeypatch.undo()
    full, _ = model(torch.tensor([prompt + tokens[:-1]]))  # (1, 10, V)
    expected = full[0, len(prompt) - 1 :]  # the logits each drawn token came from
    torch.testing.assert_close(torch.stack(seen[:-1]), expected, rtol=1e-5, atol=1e-5)


def test_generation_in_float32_on_the_default_backend_matches_full_forward():
    """The same in float32, the dtype users train in (compiled kernels for the LSTM)."""
    torch.manual_seed(0)
    model = LanguageModel(50, 16, 32, 2)
    prompt = torch.randint(0, 50, (9,))
    tokens = torch.tensor(list(model.generate(prompt, 8, top_k=1)))
    full, _ = model(torch.cat([prompt, tokens[:-1]])[None])  # (1, 16, V)
    assert torch.equal(full[0, 8:].argmax(-1), tokens)
    state, stepped = None, []
    with torch.no_grad():
        logits, state = model(prompt[None])  # (1, 9, V)
        stepped.append(logits[0, -1])
        for token in tokens[:-1]:
            logits, state = model(token.view(1, 1), state)  # (1, 1, V)
            stepped.append(logits[0, -1])
    torch.testing.assert_close(torch.stack(stepped), full[0, 8:].detach(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cell", CELLS)
def test_windowed_stateful_forward_equals_one_pass(cell):
    """Window by window with the state carried (and detached) = one forward over the stream."""
    model = tiny(cell).eval()
    data = batchify(torch.randint(0, 13, (3 * 41,)), 3)  # (3, 41)
    whole, _ = model(data[:, :-1])  # (3, 40, V)
    pieces, state = [], None
    for inputs, _ in windows(data, bptt=7):  # 5 windows of 7 and one of 5
        logits, state = model(inputs, state)
        state = detach_state(state)
        pieces.append(logits)
    torch.testing.assert_close(torch.cat(pieces, dim=1), whole, rtol=1e-5, atol=1e-7)


def test_detach_state_cuts_the_graph():
    h = torch.ones(2, 3, 4, requires_grad=True) * 2
    state = detach_state(LSTMState(h, h + 1))
    assert isinstance(state, LSTMState) and not state.h.requires_grad
    assert not state.c.requires_grad and not detach_state(h).requires_grad


def test_shapes_state_and_tying():
    model = LanguageModel(11, 5, 5, 3, cell="gru", tie_weights=True)
    assert model.decoder.weight is model.embedding.weight
    logits, state = model(torch.zeros(2, 4, dtype=torch.long))
    assert logits.shape == (2, 4, 11) and state.shape == (3, 2, 5)
    assert model.init_state(7).shape == (3, 7, 5)
    lstm_state = LanguageModel(11, 5, 6, 2).init_state(4)
    assert isinstance(lstm_state, LSTMState) and lstm_state.c.shape == (2, 4, 6)
    with pytest.raises(ValueError, match="hidden_size == embedding_dim.*hidden_size=6"):
        LanguageModel(11, 5, 6, tie_weights=True)
    with pytest.raises(ValueError, match=r"ids in \[0, 11\), got values from 0 to 11"):
        model(torch.tensor([[0, 11]]))
    with pytest.raises(ValueError, match=r"shape \(B, T\), got torch.int64 \(4,\)"):
        model(torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="cell in"):
        LanguageModel(11, 5, 5, cell="transformer")


@pytest.mark.parametrize("tied", [False, True])
def test_forward_with_targets_is_the_cross_entropy_of_the_logits(tied):
    # The trainer's path (decoder and softmax fused) against the plain one, in float32 on the
    # default backend, values and every gradient, with a carried state.
    torch.manual_seed(0)
    model = LanguageModel(31, 12, 12, 2, tie_weights=tied)
    ids, targets = torch.randint(0, 31, (3, 7)), torch.randint(0, 31, (3, 7))
    state = model.init_state(3)
    state = LSTMState(state.h + 0.3, state.c - 0.2)
    loss, after = model(ids, state, targets=targets)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    logits, expected_after = model(ids, state)
    expected = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
    expected_grads = torch.autograd.grad(expected, list(model.parameters()))
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(after.h, expected_after.h)
    for a, b in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match=r"targets shaped like ids \(3, 7\), got \(3, 6\)"):
        model(ids, targets=targets[:, 1:])


def test_score_is_the_log_softmax_of_the_forward_pass():
    model = tiny("lstm")
    ids = torch.tensor([2, 7, 1, 8, 2, 8])
    logits, _ = model(ids[None, :-1])  # (1, 5, V)
    expected = torch.log_softmax(logits[0], -1).gather(-1, ids[1:, None]).squeeze(-1)
    torch.testing.assert_close(model.score(ids), expected)
    with_context = model.score(ids[2:], context=ids[:2])  # (4,): tokens 2..5 given 0..1
    torch.testing.assert_close(with_context, expected[1:])
    batch = model.score(torch.stack([ids, ids.flip(0)]))  # (2, 5)
    torch.testing.assert_close(batch[0], expected)
    with pytest.raises(ValueError, match="T >= 2"):
        model.score([4])


def test_score_in_chunks_equals_one_pass(monkeypatch):
    from rnnlab.nn import language_model

    model = tiny("gru")
    ids = torch.randint(0, 13, (40,))
    whole = model.score(ids)
    monkeypatch.setattr(language_model, "SCORE_CHUNK", 6)
    torch.testing.assert_close(model.score(ids), whole)


def test_seeded_sampling_is_reproducible_and_top_k_1_is_greedy():
    model = tiny("lstm")
    a = list(model.generate([1, 2], 20, temperature=1.5, seed=7))
    assert a == list(model.generate([1, 2], 20, temperature=1.5, seed=7))
    assert a != list(model.generate([1, 2], 20, temperature=1.5, seed=8))
    greedy = list(model.generate([1, 2], 12, top_k=1, seed=3))
    assert greedy == list(model.generate([1, 2], 12, top_k=1, seed=4))  # no randomness left
    ids = [1, 2]
    with torch.no_grad():
        for _ in range(12):  # greedy by hand: argmax of a full forward pass
            logits, _ = model(torch.tensor([ids]))
            ids.append(int(logits[0, -1].argmax()))
    assert greedy == ids[2:]


def test_sample_next_filters():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    draws = {
        sample_next(logits, top_p=0.7, generator=torch.Generator().manual_seed(s))
        for s in range(200)
    }
    assert draws == {0, 1}  # 0.5 < 0.7 so token 1 joins; 0.8 >= 0.7 so token 2 does not
    draws = {
        sample_next(logits, top_k=3, generator=torch.Generator().manual_seed(s)) for s in range(200)
    }
    assert draws == {0, 1, 2}
    assert sample_next(logits, temperature=1e-4) == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(temperature=0), "temperature > 0"),
        (dict(temperature=-1.0), "temperature > 0"),
        (dict(top_p=0.0), r"top_p in \(0, 1\]"),
        (dict(top_p=1.5), r"top_p in \(0, 1\]"),
        (dict(top_k=0), "top_k >= 1"),
        (dict(max_new_tokens=10**9), "max_new_tokens <= 100000, got 1000000000"),
        (dict(prompt_ids=[]), "non-empty"),
    ],
)
def test_generate_refuses_bad_settings_before_streaming(kwargs, message):
    model = tiny("lstm")
    args = {"prompt_ids": [1], "max_new_tokens": 3, **kwargs}
    with pytest.raises(ValueError, match=message):
        model.generate(**args)  # raises at the call, not at the first next()


def test_generate_restores_training_mode():
    model = tiny("lstm", dropout=0.5).train()
    assert len(list(model.generate([1], 4, seed=0))) == 4
    assert model.training


def test_tiny_model_memorises_a_text_and_greedy_generation_reproduces_it():
    text = "the clouds are in the sky. i speak fluent french.\n"
    vocab = Vocabulary.build({c: text.count(c) for c in set(text)}, "chars")
    ids = torch.as_tensor(vocab.encode(text).ids)[None]  # (1, T)
    torch.manual_seed(0)
    model = LanguageModel(len(vocab), 16, 64, 1, cell="lstm")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(300):
        logits, _ = model(ids[:, :-1])  # (1, T - 1, V)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids[0, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05, f"loss after 300 steps {loss.item():.3f}"
    out = model.generate(ids[0, :1], len(text) - 1, top_k=1)
    assert vocab.decode(ids[0, :1].tolist() + list(out)) == text
    bits = -model.score(ids[0]).mean().item() / math.log(2)
    assert bits < 0.1


def test_precision_is_a_constructor_argument():
    model = LanguageModel(11, 6, 6, 2, precision="bf16")
    assert model.rnn.precision == "bf16" and LanguageModel(11, 6, 6).rnn.precision == "fp32"
    with pytest.raises(ValueError, match=r"precision 'fp32', or 'bf16' with cell='lstm'.*'gru'"):
        LanguageModel(11, 6, 6, cell="gru", precision="bf16")
    with pytest.raises(
        ValueError, match=r"expected cell in \('rnn', 'lstm', 'gru', .*\), got 'tcn'"
    ):
        LanguageModel(11, 6, 6, cell="tcn")
