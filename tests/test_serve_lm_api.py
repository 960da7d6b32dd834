"""The language-model API of ``rnnlab serve`` through the ASGI client, on a tiny real
character language model (an untrained charlm-sample LSTM of 10 units, see serve_runs.py):
generation streamed as server-sent events and agreeing with :meth:`LanguageModel.generate`
token for token, the unit values and top-5 alternatives it streams, scoring agreeing with
``rnnlab score``, and every bad input answered 4xx naming its field."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from rnnlab.generation import score_run
from rnnlab.serve.app import create_app
from rnnlab.serve.models import load_served_run
from rnnlab.serve.schemas import MAX_TEXT_BYTES
from serve_runs import make_runs

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
PROMPT = 'the "plot" was'


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    text_dir, _, lm_dir = make_runs(tmp_path_factory.mktemp("serve"))
    return [load_served_run(text_dir, "reviews"), load_served_run(lm_dir, "chars")]


@pytest.fixture(scope="module")
def client(runs):
    return TestClient(create_app(runs), raise_server_exceptions=True)


def stream(client: TestClient, body: dict) -> list[tuple[str, dict]]:
    """POST /generate and split its server-sent events into (name, data) pairs."""
    with client.stream("POST", "/api/runs/chars/generate", json=body) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        text = "".join(response.iter_text())
    events = []
    for block in text.strip().split("\n\n"):
        name, data = block.split("\n")
        events.append((name.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return events


def field_of(response: httpx.Response) -> list:
    detail = response.json()["detail"]
    assert isinstance(detail, list), detail
    return [tuple(e["loc"]) for e in detail]


def test_language_model_runs_are_listed_with_their_vocabulary(client):
    runs = client.get("/api/runs").json()["runs"]
    lm = runs[1]
    assert (lm["name"], lm["kind"], lm["level"], lm["figure"]) == ("chars", "lm", "char", "bpc")
    assert lm["analyses"] == ["generate", "score"] and lm["hidden_sizes"] == [10]
    assert lm["vocab_size"] == 31 and lm["classes"] == []


def test_generation_streams_the_tokens_language_model_generate_draws(client, runs):
    served = runs[1]
    body = {"prompt": PROMPT, "max_tokens": 12, "temperature": 0.7, "top_k": 8, "seed": 5}
    body |= {"unit": 3, "state": "c"}
    events = stream(client, body)
    assert [name for name, _ in events] == ["token"] * 12 + ["done"]
    assert events[-1][1] == {"tokens": 12}
    tokens = [data for _, data in events[:-1]]
    task, model = served.task, served.model
    prompt = task.start_context() + task.encode(PROMPT)[0].tolist()
    expected = list(model.generate(prompt, 12, 0.7, 8, None, seed=5))
    assert [t["id"] for t in tokens] == expected  # the library's sampling, the same draws
    assert "".join(t["token"] for t in tokens) == "".join(task.piece(i) for i in expected)

    with torch.no_grad():  # the unit's c after each token, and the model's probabilities
        logits, state = model(torch.tensor([prompt]))
        for t in tokens:
            probs = torch.softmax(logits[0, -1].double(), -1)
            assert t["probability"] == pytest.approx(float(probs[t["id"]]), abs=1e-6)
            best = torch.topk(probs, 5).indices.tolist()
            assert [a["token"] for a in t["top"]] == [task.piece(i) for i in best]
            shown = [a["probability"] for a in t["top"]]
            assert shown == sorted(shown, reverse=True)
            logits, state = model(torch.tensor([[t["id"]]]), state)
            assert t["value"] == pytest.approx(float(state.c[0, 0, 3]), abs=1e-5)


def test_the_same_seed_gives_the_same_text_and_h_can_colour(client):
    body = {"prompt": "", "max_tokens": 6, "seed": 11, "state": "h", "unit": 9}
    first, second = stream(client, body), stream(client, body)
    assert first == second
    every = stream(client, {**body, "every_unit": True})
    for (_, plain), (_, full) in zip(first[:-1], every[:-1], strict=True):
        assert len(full["values"]) == 10
        assert full["values"][9] == pytest.approx(plain["value"], abs=1e-4)
        assert "values" not in plain
    assert all(-1 <= data["value"] <= 1 for name, data in first if name == "token")  # tanh
    assert [d["id"] for _, d in stream(client, {**body, "seed": 12})[:-1]] != [
        d["id"] for _, d in first[:-1]
    ]


def test_top_k_one_is_greedy(client):
    events = stream(client, {"prompt": PROMPT, "max_tokens": 5, "top_k": 1, "temperature": 3})
    for _, data in events[:-1]:
        assert data["token"] == data["top"][0]["token"]


def test_score_agrees_with_rnnlab_score(client, runs):
    response = client.post("/api/runs/chars/score", json={"text": PROMPT})
    assert response.status_code == 200, response.text
    got = response.json()
    (expected,) = score_run(runs[1].run_dir, [PROMPT], checkpoint="last")
    assert got["tokens"] == list(PROMPT) and got["figure"] == "bpc"
    np.testing.assert_allclose(got["log_probs"], expected["log_probs"], atol=1e-5)
    assert got["bpc"] == pytest.approx(expected["bpc"]) and got["count"] == len(PROMPT)
    unknown = client.post("/api/runs/1/score", json={"text": "zzz qqq"}).json()
    assert unknown["unknown"] == 6  # z and q are not in the vocabulary


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompt": "a", "unit": 10}, "unit"),  # 10 units: 0..9
        ({"prompt": "a", "unit": -1}, "unit"),
        ({"prompt": "a", "layer": 1}, "layer"),
        ({"prompt": "a", "state": "f"}, "state"),
        ({"prompt": "a", "top_k": -1}, "top_k"),
        ({"prompt": "a", "temperature": 0}, "temperature"),
        ({"prompt": "a", "temperature": "hot"}, "temperature"),
        ({"prompt": "a", "max_tokens": 0}, "max_tokens"),
        ({"prompt": "a", "max_tokens": 1001}, "max_tokens"),
        ({"prompt": "a", "seed": -3}, "seed"),
        ({"prompt": "a\x00b"}, "prompt"),
        ({"prompt": "   "}, "prompt"),
        ({"prompt": 12}, "prompt"),
        ({}, "prompt"),
        ({"prompt": "a", "colour": "red"}, "colour"),
    ],
)
def test_bad_generate_requests_name_the_field(client, body, field):
    response = client.post("/api/runs/chars/generate", json=body)
    assert response.status_code == 422, response.text
    assert ("body", field) in field_of(response)


def test_bad_score_requests_and_oversized_text(client):
    for body, field in (({"text": ""}, "text"), ({"text": None}, "text"), ({}, "text")):
        response = client.post("/api/runs/chars/score", json=body)
        assert response.status_code == 422 and ("body", field) in field_of(response)
    big = "a" * (MAX_TEXT_BYTES + 1)
    for verb, key in (("score", "text"), ("generate", "prompt")):
        response = client.post(f"/api/runs/chars/{verb}", json={key: big})
        assert response.status_code == 413 and ("body", key) in field_of(response)
    for body in ("{bad json", "[1]", ""):
        response = client.post(
            "/api/runs/chars/generate", content=body, headers={"content-type": "application/json"}
        )
        assert 400 <= response.status_code < 500, response.text


def test_classifier_analyses_refuse_language_models(client):
    for verb in ("classify", "trace"):
        response = client.post(f"/api/runs/chars/{verb}", json={"text": PROMPT})
        assert response.status_code == 400
        assert "is a language model" in response.json()["detail"]


def test_a_slow_step_ends_the_stream_with_an_error_event(runs, monkeypatch):
    import time

    from rnnlab.nn import language_model

    real = language_model.sample_next
    calls = []

    def slow(*args, **kwargs):  # the third token takes longer than the time limit
        calls.append(1)
        if len(calls) == 3:
            time.sleep(1.5)
        return real(*args, **kwargs)

    monkeypatch.setattr(language_model, "sample_next", slow)  # LanguageModel.steps draws
    client = TestClient(create_app(runs, timeout=0.5))
    with client.stream(
        "POST", "/api/runs/chars/generate", json={"prompt": "a", "max_tokens": 5}
    ) as response:
        assert response.status_code == 200
        text = "".join(response.iter_text())
    names = [block.split("\n")[0] for block in text.strip().split("\n\n")]
    assert names == ["event: token", "event: token", "event: error"]
    assert "within 0.5 s" in text


def test_a_gru_language_model_colours_by_h_and_refuses_c(tmp_path):
    from serve_runs import LM_SETTINGS, make_run

    run_dir = make_run(tmp_path / "gru", "charlm-sample", [*LM_SETTINGS, "model.cell=gru"])
    served = load_served_run(run_dir, "gru")
    client = TestClient(create_app([served]))
    body = {"prompt": "the", "max_tokens": 4, "unit": 2, "seed": 1}
    with client.stream("POST", "/api/runs/gru/generate", json=body) as response:
        assert response.status_code == 200
        text = "".join(response.iter_text())
    ids = [json.loads(b.split("\n")[1][6:])["id"] for b in text.strip().split("\n\n")[:-1]]
    prompt = served.task.start_context() + served.task.encode("the")[0].tolist()
    assert ids == list(served.model.generate(prompt, 4, seed=1))
    refused = client.post("/api/runs/gru/generate", json={**body, "state": "c"})
    assert refused.status_code == 422 and ("body", "state") in field_of(refused)
    assert "has no cell state c" in refused.text
