"""LanguageModel.steps, the one decoding loop: each step against a full forward pass over the
same prefix (state, probabilities, top alternatives), its gates against the reference loop on
the whole sequence, generate() as its tokens, teacher forcing, and seeded determinism."""

from __future__ import annotations

import pytest
import torch

from rnnlab.nn.cells import LSTMState
from rnnlab.nn.language_model import GenerationStep, LanguageModel

CELLS = ("lstm", "gru", "rnn")


def tiny(cell: str = "lstm", **kwargs) -> LanguageModel:
    torch.manual_seed(0)
    defaults = dict(vocab_size=13, embedding_dim=6, hidden_size=8, num_layers=2, cell=cell)
    return LanguageModel(**{**defaults, **kwargs}).double()


def assert_states_close(a, b) -> None:
    assert type(a) is type(b)
    for x, y in zip(
        a if isinstance(a, LSTMState) else (a,),
        b if isinstance(b, LSTMState) else (b,),
        strict=True,
    ):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("cell", CELLS)
def test_each_step_equals_a_full_forward_over_its_prefix(cell):
    model = tiny(cell)
    prompt = [3, 1, 4, 1, 5]
    steps = list(model.steps(prompt, 6, temperature=1.3, seed=2, top=4))
    assert all(isinstance(s, GenerationStep) and s.gates is None for s in steps)
    tokens = [s.token for s in steps]
    with torch.no_grad():
        for k, step in enumerate(steps):
            prefix = torch.tensor([prompt + tokens[:k]])  # what step k was drawn after
            logits, _ = model(prefix)  # (1, P + k, V)
            probs = torch.softmax(logits[0, -1], -1)  # (V,), temperature 1
            assert step.probability == pytest.approx(float(probs[step.token]), abs=1e-5)
            best = torch.topk(probs, 4)
            assert [i for i, _ in step.top] == best.indices.tolist()
            torch.testing.assert_close(
                torch.tensor([p for _, p in step.top], dtype=torch.float64),
                best.values,
                atol=1e-5,
                rtol=0,
            )
            _, after = model(torch.tensor([prompt + tokens[: k + 1]]))  # the state after it
            assert_states_close(step.state, after)


@pytest.mark.parametrize("cell", CELLS)
def test_generate_is_the_tokens_of_steps_and_a_seed_repeats_them(cell):
    model = tiny(cell)
    args = ([2, 7], 15, 0.9, 6, 0.95)
    tokens = [s.token for s in model.steps(*args, seed=4)]
    assert list(model.generate(*args, seed=4)) == tokens
    assert [s.token for s in model.steps(*args, seed=4)] == tokens  # deterministic
    again = list(model.steps(*args, seed=torch.Generator().manual_seed(4)))  # a generator, as is
    assert [s.token for s in again] == tokens
    assert [s.probability for s in again] == [s.probability for s in model.steps(*args, seed=4)]
    assert [s.token for s in model.steps(*args, seed=5)] != tokens


@pytest.mark.parametrize("cell", CELLS)
def test_recorded_gates_per_step_equal_the_reference_loop_on_the_whole_sequence(cell):
    model = tiny(cell)
    prompt = [4, 4, 2]
    steps = list(model.steps(prompt, 7, seed=1, record_gates=True))
    tokens = [s.token for s in steps]
    assert tokens == list(model.generate(prompt, 7, seed=1))  # recording changes no draw
    with torch.no_grad():
        x = model.embedding(torch.tensor([prompt + tokens]))  # (1, T, E)
        _, _, trace = model.rnn(x, return_gates=True)  # per layer, per direction (1, T, H)
    assert len(steps[0].gates) == len(trace) == 2
    for layer, layer_trace in enumerate(trace):
        assert set(steps[0].gates[layer]) == set(layer_trace[0])
        for name, expected in layer_trace[0].items():
            got = torch.stack([s.gates[layer][name] for s in steps])  # (7, H)
            torch.testing.assert_close(got, expected[0, len(prompt) :], rtol=1e-5, atol=1e-7)
    assert model.rnn.backend == "auto"  # routed per call, nothing set on the layer


def test_forced_steps_read_the_given_text_and_score_it():
    model = tiny("lstm")
    text = [5, 0, 12, 3, 3, 9]
    steps = list(model.steps([1], len(text), forced=text, top=0))
    assert [s.token for s in steps] == text and all(s.top == () for s in steps)
    scores = model.score(text, context=[1])  # log p of each token given the text before it
    torch.testing.assert_close(
        torch.tensor([s.probability for s in steps], dtype=torch.float64).log(),
        scores,
        rtol=1e-5,
        atol=1e-7,
    )
    # an empty prompt starts from the zero state, whose prediction is the decoder's bias
    first = next(model.steps([], 1, forced=[7], top=13))
    torch.testing.assert_close(
        torch.tensor(dict(first.top)[7], dtype=torch.float64),
        torch.softmax(model.decoder.bias.detach(), -1)[7],
    )
    with pytest.raises(ValueError, match="at most max_new_tokens=2 forced ids, got 3"):
        model.steps([1], 2, forced=[1, 2, 3])
    with pytest.raises(ValueError, match="top >= 0"):
        model.steps([1], 2, top=-1)


def test_steps_leave_grad_mode_and_training_mode_as_they_were_between_steps():
    model = tiny("lstm", dropout=0.5).train()
    steps = model.steps([1, 2], 3, seed=0)
    next(steps)
    assert torch.is_grad_enabled() and model.training  # nothing held across the yield
    assert len(list(steps)) == 2 and model.training


def test_a_tiny_temperature_draws_the_likeliest_token_not_nan():
    """Found by the fuzz suite: logits / 3e-247 overflowed to inf and softmax gave NaN."""
    from rnnlab.nn.sampling import sample_next

    logits = torch.tensor([1.0, 3.0, 2.0, float("-inf")])
    assert sample_next(logits, 3e-247) == 1
    assert sample_next(logits, 1e-300, top_k=2) == 1
    assert sample_next(logits, 1e-300, top_p=0.9) == 1
