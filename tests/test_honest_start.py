"""Issue 25, item 2: a language model starts where it learned to. Training streams carry the
state across documents, so a run keeps the training tokens before a document boundary
(``start.json``); generation and scoring read the boundary from the state those tokens lead to,
never from the zero state the model did not see in training."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rnnlab.generation import generate_run, load_language_model, score_run
from rnnlab.nn.language_model import LanguageModel
from rnnlab.tasks.lm_start import start_ids, warm_state
from tiny import cli_sets

TEXT = "".join(f"review {k}: the film was {'good' if k % 3 else 'bad'}.\n" for k in range(400))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from rnnlab.cli import main

    root = tmp_path_factory.mktemp("start")
    corpus = root / "reviews.txt"
    corpus.write_text(TEXT)
    settings = [
        f"data.path={corpus}",
        "data.bptt=16",
        "model.embedding_dim=8",
        "model.hidden_sizes=[12]",
        "train.batch_size=8",
        "train.eval_batch_size=2",
        "train.epochs=1",
        "train.time_limit=0",
        "run.log_every=0",
    ]
    argv = ["train", "charlm-sample", "--out", str(root / "run"), "--threads", "1"]
    assert main([*argv, "--no-progress", *cli_sets(*settings)]) == 0
    return root / "run"


def test_start_ids_are_the_tokens_before_the_first_boundary_past_the_warm_up():
    stream = np.array([5, 5, 0, 6, 6, 6, 0, 7, 7, 0, 8])  # 0: the boundary
    # the first boundary at or after position 4 is at 6: the 4 tokens before it
    assert start_ids(stream, 0, length=4) == {"ids": [0, 6, 6, 6], "boundary": 0}
    assert start_ids(stream, 0, length=20)["ids"] == [5, 5, 0, 6, 6, 6, 0, 7, 7]  # short stream
    assert start_ids(stream, None)["ids"] == [] and start_ids(stream, 9)["ids"] == []


def test_a_run_keeps_its_start_and_uses_it(trained):
    saved = json.loads((trained / "start.json").read_text())
    task, model = load_language_model(trained)
    (boundary,) = task.start_context()
    assert saved["boundary"] == boundary and len(saved["ids"]) == 1000
    assert task.start == saved["ids"]
    start = task.start_state(model)
    reread = warm_state(model, saved["ids"])
    assert all(torch.equal(a, b) for a, b in zip(start, reread, strict=True))
    assert float(start.c.abs().mean()) > 0  # a real state, not zeros


def test_steps_from_a_state_equal_steps_after_reading_what_led_there():
    torch.manual_seed(0)
    model = LanguageModel(20, 6, 10, num_layers=2).eval()
    warm, prompt = [3, 4, 5, 6, 7, 1], [1, 2]
    state = warm_state(model, warm)
    ours = list(model.steps(prompt, 6, seed=1, top=3, state=state))
    theirs = list(model.steps(warm + prompt, 6, seed=1, top=3))
    assert [s.token for s in ours] == [s.token for s in theirs]
    for a, b in zip(ours, theirs, strict=True):
        assert a.probability == pytest.approx(b.probability, rel=1e-5)
    text = torch.tensor([[2, 9, 4, 4], [8, 1, 2, 3]])  # two rows from one start state
    scored = model.score(text, [1], state=state)  # (2, 4)
    for row in range(2):
        whole = model.score(torch.tensor([*warm, 1, *text[row].tolist()]))  # (W + 4,)
        torch.testing.assert_close(scored[row], whole[-4:], rtol=1e-5, atol=1e-6)


def test_generate_and_score_start_from_the_runs_state(trained):
    task, model = load_language_model(trained)
    start, context = task.start_state(model), task.start_context()
    (result,) = score_run(trained, ["the film was good."])
    ids = task.encode("the film was good.")[0]
    expected = model.score(torch.as_tensor(ids), context, state=start)
    np.testing.assert_allclose(result["log_probs"], expected.double().numpy(), rtol=1e-5)
    zero = model.score(torch.as_tensor(ids), context)
    assert not torch.allclose(expected, zero)  # the zero state would score it otherwise
    text = "".join(generate_run(trained, "", 40, seed=3).pieces)
    steps = model.steps(context, 40, seed=3, top=0, state=start)
    assert text == "".join(task.piece(s.token) for s in steps)


def test_a_run_without_a_start_reads_from_zeros(tmp_path):
    from serve_runs import LM_SETTINGS, make_run

    run = make_run(tmp_path / "old", "charlm-sample", LM_SETTINGS)  # made before start.json
    task, model = load_language_model(run)
    assert task.start == [] and task.start_state(model) is None
    assert len(list(generate_run(run, "", 5, seed=0).pieces)) == 5
