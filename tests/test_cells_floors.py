"""The 2024 cells behind the upper floors: a language model of an sLSTM or mLSTM (named-tuple
states other than LSTMState) is inspected and served like an LSTM one, and a GRU-like cell with
no cell state refuses colouring by c."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from rnnlab.inspect.language import inspect_language_model
from rnnlab.serve.app import create_app
from rnnlab.serve.models import load_served_run
from serve_runs import LM_SETTINGS, make_run

STATES = {
    "slstm": ["i", "f", "z", "o", "c", "n", "m", "h"],
    "mlstm": ["i", "f", "o", "C_norm", "n_norm", "h"],  # the memory's and normaliser's norms
    "mingru": ["z", "h_tilde", "h"],
}


@pytest.mark.parametrize("cell,has_c", [("slstm", True), ("mlstm", False), ("mingru", False)])
def test_xlstm_language_models_inspect_and_serve(tmp_path, cell, has_c):
    run = make_run(tmp_path / cell, "charlm-sample", [*LM_SETTINGS, f"model.cell={cell}"])
    summary = inspect_language_model(run, tmp_path / "inspect", text="The movie was good.")
    assert summary["steps"] == len("The movie was good.") and summary["cell"] == cell
    assert (tmp_path / "inspect" / "tokens.html").is_file()
    assert (tmp_path / "inspect" / "states.png").read_bytes()[:4] == b"\x89PNG"
    assert summary["states"] == STATES[cell]
    # the units come from h (or c), not from mLSTM's per-head gates, which have one column
    assert sorted(summary["units"]) == list(range(10))  # all of H = 10, top 16
    served = load_served_run(run, cell)
    client = TestClient(create_app([served]))
    body = {"prompt": "the", "max_tokens": 4, "seed": 1, "unit": 0}
    with client.stream("POST", f"/api/runs/{cell}/generate", json=body) as response:
        assert response.status_code == 200
        events = "".join(response.iter_text()).strip().split("\n\n")
    tokens = [json.loads(e.split("\n")[1][6:]) for e in events[:-1]]
    assert len(tokens) == 4 and all(isinstance(t["value"], float) for t in tokens)
    by_c = client.post(f"/api/runs/{cell}/generate", json={**body, "state": "c"})
    assert (by_c.status_code == 200) == has_c
