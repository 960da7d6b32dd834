"""The ``rnnlab serve`` JSON API through the ASGI test client: what it answers agrees with the
library, and every bad input gets a clear 4xx naming the field, never a 500."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from rnnlab.inspect.inputs import text_example
from rnnlab.inspect.trace import record_gates
from rnnlab.predict import predict_texts
from rnnlab.serve.app import create_app
from rnnlab.serve.classifier import ClassifierRun
from rnnlab.serve.models import load_served_run
from rnnlab.serve.schemas import MAX_BODY_BYTES, MAX_TEXT_BYTES
from serve_runs import REVIEW, make_runs

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    text_dir, image_dir, _ = make_runs(tmp_path_factory.mktemp("serve"))
    return [load_served_run(text_dir, "reviews"), load_served_run(image_dir, "digits")]


@pytest.fixture(scope="module")
def client(runs):
    return TestClient(create_app(runs), raise_server_exceptions=True)


def digit() -> np.ndarray:
    image = np.zeros((28, 28), np.float32)  # (T, I): a vertical stroke, a "1"
    image[4:24, 13:16] = 1.0
    return image


def png_base64(image: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray((image * 255).astype(np.uint8)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def field_of(response: httpx.Response) -> list:
    detail = response.json()["detail"]
    assert isinstance(detail, list), detail
    return [tuple(e["loc"]) for e in detail]


# -- answers ------------------------------------------------------------------------------------


def test_runs_are_listed_by_index_and_name(client):
    runs = client.get("/api/runs").json()["runs"]
    assert [(r["index"], r["name"], r["kind"]) for r in runs] == [
        (0, "reviews", "text"),
        (1, "digits", "image"),
    ]
    assert runs[0]["classes"] == ["negative", "positive"] and runs[0]["directions"] == 2
    assert runs[1]["image_shape"] == [28, 28] and runs[1]["hidden_sizes"] == [12]
    by_index, by_name = client.get("/api/runs/0").json(), client.get("/api/runs/reviews").json()
    assert by_index["name"] == by_name["name"] == "reviews" and by_index == by_name


def test_text_classify_agrees_with_predict(client, runs):
    answer = client.post("/api/runs/reviews/classify", json={"text": REVIEW})
    assert answer.status_code == 200
    got = answer.json()
    expected = predict_texts(runs[0].run_dir, [REVIEW], checkpoint="last")[0]
    assert got["label"] == expected["label"]
    assert got["probabilities"] == pytest.approx(expected["probabilities"], abs=1e-5)
    example = text_example(runs[0].config, runs[0].artifacts["vocab.json"], REVIEW)
    assert got["steps"] == [example.labels[k] for k in np.flatnonzero(example.real)]
    probs = np.array(got["step_probabilities"])  # (n, C)
    assert probs.shape == (len(got["steps"]), 2)
    assert probs[-1] == pytest.approx(got["probabilities"], abs=1e-4)  # the last prefix is all
    assert np.allclose(probs.sum(1), 1, atol=1e-3)


def test_trace_gives_the_recorded_gates(client, runs):
    got = client.post("/api/runs/0/trace", json={"text": REVIEW, "direction": 1}).json()
    example = text_example(runs[0].config, runs[0].artifacts["vocab.json"], REVIEW)
    gates = record_gates(runs[0].model, example.inputs, 0, 1)  # name -> (T, H)
    assert sorted(got["gates"]) == sorted(gates) == ["c", "f", "g", "h", "i", "o"]
    for name, values in gates.items():
        assert np.array(got["gates"][name]) == pytest.approx(values[example.real], abs=1e-4)
    activity = np.array(got["activity"])
    assert activity.shape == (8,) and got["top_units"][0] == int(np.argmax(activity))
    assert sorted(got["top_units"]) == list(range(8))
    assert (got["layer"], got["direction"], got["cell"]) == (0, 1, "lstm")


def test_image_as_array_and_as_png_agree(client):
    image = digit()
    by_array = client.post("/api/runs/digits/trace", json={"image": image.tolist()}).json()
    by_png = client.post("/api/runs/digits/trace", json={"png": png_base64(image)}).json()
    assert by_array["probabilities"] == pytest.approx(by_png["probabilities"], abs=1e-4)
    assert by_array["steps"] == [f"row {k}" for k in range(28)]
    assert np.array(by_array["step_probabilities"]).shape == (28, 10)
    assert np.array(by_array["gates"]["c"]).shape == (28, 12)
    data_url = "data:image/png;base64," + png_base64(image)
    as_url = client.post("/api/runs/digits/classify", json={"png": data_url}).json()
    assert as_url["probabilities"] == pytest.approx(by_array["probabilities"], abs=1e-4)


def test_dark_on_light_images_are_inverted_when_asked(client):
    light = 1.0 - digit()  # black ink on white paper
    auto = client.post("/api/runs/1/classify", json={"image": light.tolist()}).json()
    never = client.post("/api/runs/1/classify", json={"image": light.tolist(), "invert": "never"})
    assert np.array(auto["image"]) == pytest.approx(digit(), abs=1e-3)
    assert np.array(never.json()["image"]) == pytest.approx(light, abs=1e-3)


def test_runs_page_data_follows_metrics_as_they_grow(client, runs):
    info = client.get("/api/runs/reviews").json()
    assert info["status"] == "finished" and info["report"]["steps"] == 3
    assert info["config"]["model"]["hidden_sizes"] == [8]
    first = client.get("/api/runs/reviews/metrics").json()
    assert [r["step"] for r in first["records"]] == [1, 2, 3, 3] and first["next"] == 4
    path = runs[0].run_dir / "metrics.jsonl"
    with open(path, "a", encoding="utf-8") as handle:  # training goes on: one line, one half
        handle.write(json.dumps({"kind": "step", "step": 4, "loss": 0.4}) + '\n{"kind": "st')
    later = client.get("/api/runs/reviews/metrics", params={"after": first["next"]}).json()
    assert [r["step"] for r in later["records"]] == [4] and later["next"] == 5
    beyond = client.get("/api/runs/reviews/metrics", params={"after": 50}).json()
    assert beyond["reset"] and beyond["next"] == 5  # a cut file (resumed run): from the start


def test_pages_and_static_files_are_served_with_a_strict_policy(client):
    for page in ("/", "/text", "/digit", "/lm", "/runs"):
        response = client.get(page)
        assert response.status_code == 200 and "<!DOCTYPE html>" in response.text
        assert "http" not in response.text.replace("/openapi.json", "")  # nothing from outside
        assert "default-src 'self'" in response.headers["content-security-policy"]
    for asset in ("common.js", "text.js", "digit.js", "runs.js", "lm.js", "style.css"):
        assert client.get(f"/static/{asset}").status_code == 200
    schema = client.get("/openapi.json").json()
    paths = schema["paths"]
    for verb in ("classify", "trace", "generate", "score"):
        assert f"/api/runs/{{run}}/{verb}" in paths
    assert "TraceRequest" in schema["components"]["schemas"]
    assert client.get("/docs").status_code == 404  # the interactive docs need a CDN


# -- refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/api/runs/2/classify",
        "/api/runs/nope/trace",
        "/api/runs/..%2F..%2Fetc%2Fpasswd/trace",
        "/api/runs/%2e%2e/classify",
    ],
)
def test_unknown_runs_are_404(client, path):
    response = client.post(path, json={"text": REVIEW})
    assert response.status_code == 404
    assert "expected a served run" in response.json()["detail"] or "Not Found" in response.text


@pytest.mark.parametrize(
    "path",
    [
        "/static/../../../../etc/passwd",
        "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/static/..%2f..%2f..%2fetc%2fpasswd",
        "/api/runs/..%2fdigits/metrics",
        "/etc/passwd",
        "/static/../models.py",
    ],
)
def test_path_traversal_is_404(client, path):
    response = client.get(path)
    assert response.status_code == 404
    assert "root:" not in response.text and "import" not in response.text


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"text": 1}', ("body", "text")),
        ('{"text": "x", "colour": 1}', ("body", "colour")),
        ('{"text": "x", "invert": "sometimes"}', ("body", "invert")),
        ('{"text": "x", "layer": -1}', ("body", "layer")),
        ('{"text": "x", "layer": "one"}', ("body", "layer")),
        ("{}", ("body", "text")),
        ('{"text": "x", "image": [[0]]}', ("body", "image")),
        ('{"text": "   "}', ("body", "text")),
        ('{"text": "zebra quantum"}', ("body", "text")),  # no word the model knows
        ('{"text": "\\ud800\\u0000"}', ("body", "text")),  # a lone surrogate and a NUL
        ('{"image": [[0, 0], [0, 0]]}', ("body", "text")),  # a text model given an image
        ('{"text": "good", "layer": 1}', ("body", "layer")),
        ('{"text": "good", "direction": 2}', ("body", "direction")),
    ],
)
def test_bad_text_requests_name_the_field(client, body, field):
    response = client.post(
        "/api/runs/reviews/trace", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert field in field_of(response)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"image": [[0.5] * 28] * 27}, ("body", "image")),  # 27 rows
        ({"image": [[0.5] * 20] * 28}, ("body", "image")),  # 20 columns
        ({"image": [[0.5] * 28] * 27 + [[0.5] * 3]}, ("body", "image")),  # ragged
        ({"image": [[1.5] * 28] * 28}, ("body", "image")),
        ({"image": [[-0.1] * 28] * 28}, ("body", "image")),
        ({"image": []}, ("body", "image")),
        ({"image": [["a"] * 28] * 28}, ("body", "image", 0, 0)),
        ({"image": 3}, ("body", "image")),
        ({"png": "not base64!"}, ("body", "png")),
        ({"png": base64.b64encode(b"GIF89a....").decode()}, ("body", "png")),
        ({"png": base64.b64encode(b"\x89PNG\r\n\x1a\nbroken").decode()}, ("body", "png")),
        ({"text": "a wonderful film"}, ("body", "image")),  # an image model given text
        ({"image": [[0.0] * 28] * 28, "png": "x"}, ("body", "png")),
    ],
)
def test_bad_image_requests_name_the_field(client, body, field):
    response = client.post("/api/runs/digits/classify", json=body)
    assert response.status_code == 422, response.text
    assert field in field_of(response)


def test_non_finite_pixels_are_refused(client):
    row = "[" + ",".join(["NaN"] * 28) + "]"
    body = '{"image": [' + ",".join([row] * 28) + "]}"
    response = client.post(
        "/api/runs/digits/classify", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422 and ("body", "image") in field_of(response)


def test_wrong_size_png_is_refused_before_decoding(client):
    big = png_base64(np.zeros((2000, 2000), np.float32))
    response = client.post("/api/runs/digits/classify", json={"png": big})
    assert response.status_code in (413, 422) and ("body", "png") in field_of(response)
    small = png_base64(np.zeros((14, 14), np.float32))
    response = client.post("/api/runs/digits/classify", json={"png": small})
    assert response.status_code == 422 and "expected a 28x28 image" in response.text


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        ("{bad json", {"content-type": "application/json"}),
        ("[1, 2]", {"content-type": "application/json"}),
        ('"text"', {"content-type": "application/json"}),
        ("text=hello", {"content-type": "application/x-www-form-urlencoded"}),
        ("", {"content-type": "application/json"}),
        (b"\xff\xfe\x00", {"content-type": "application/json"}),
    ],
)
def test_malformed_bodies_are_4xx_not_500(client, body, headers):
    response = client.post("/api/runs/reviews/classify", content=body, headers=headers)
    assert 400 <= response.status_code < 500, response.text
    assert "detail" in response.json()


def test_oversized_text_and_bodies_are_413(client):
    text = "good " * (MAX_TEXT_BYTES // 5 + 1)  # one word past 100 kB
    response = client.post("/api/runs/reviews/classify", json={"text": text})
    assert response.status_code == 413 and ("body", "text") in field_of(response)
    assert "expected at most 100000 bytes" in response.text
    at_limit = "good " * (MAX_TEXT_BYTES // 5)
    assert client.post("/api/runs/reviews/classify", json={"text": at_limit}).status_code == 200
    huge = json.dumps({"text": "a" * (MAX_BODY_BYTES + 10)})
    response = client.post(
        "/api/runs/reviews/classify", content=huge, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413 and "at most" in response.json()["detail"]

    def chunks():  # no Content-Length: counted as it arrives
        for _ in range(20):
            yield b" " * 100_000

    response = client.post(
        "/api/runs/reviews/classify", content=chunks(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 413


def test_language_model_endpoints_validate_then_refuse_classifiers(client):
    too_long = client.post("/api/runs/0/generate", json={"prompt": "a", "max_tokens": 1001})
    assert too_long.status_code == 422 and ("body", "max_tokens") in field_of(too_long)
    cold = client.post("/api/runs/0/generate", json={"prompt": "a", "temperature": 0})
    assert cold.status_code == 422 and ("body", "temperature") in field_of(cold)
    big = client.post("/api/runs/0/generate", json={"prompt": "a" * (MAX_TEXT_BYTES + 1)})
    assert big.status_code == 413 and ("body", "prompt") in field_of(big)
    for verb, body in (("generate", {"prompt": "the film"}), ("score", {"text": "the film"})):
        response = client.post(f"/api/runs/reviews/{verb}", json=body)
        assert response.status_code == 400
        assert "expects a language model run" in response.json()["detail"]


def test_slow_model_work_gets_408(runs, monkeypatch):
    def slow(self, **kwargs):
        time.sleep(1.0)
        return {}

    monkeypatch.setattr(ClassifierRun, "classify", slow)
    client = TestClient(create_app(runs, timeout=0.1))
    started = time.perf_counter()
    response = client.post("/api/runs/0/classify", json={"text": REVIEW})
    assert response.status_code == 408 and "within 0.1 s" in response.json()["detail"]
    assert time.perf_counter() - started < 0.9  # answered at the limit, not after the work


def test_other_host_headers_are_refused_when_asked(runs):
    client = TestClient(create_app(runs, allowed_hosts=["127.0.0.1", "localhost"]))
    assert client.get("/api/runs", headers={"host": "127.0.0.1:8000"}).status_code == 200
    assert client.get("/api/runs", headers={"host": "evil.example:8000"}).status_code == 400


def test_model_work_does_not_block_the_event_loop(runs, monkeypatch):
    def slow(self, **kwargs):
        time.sleep(1.0)
        return {"done": True}

    monkeypatch.setattr(ClassifierRun, "classify", slow)
    app = create_app(runs)

    async def both() -> tuple[float, float]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            started = time.perf_counter()

            async def timed(request) -> float:
                response = await request
                assert response.status_code == 200
                return time.perf_counter() - started

            work = asyncio.ensure_future(
                timed(client.post("/api/runs/0/classify", json={"text": "good"}))
            )
            await asyncio.sleep(0.1)  # the slow request is now in its worker thread
            health = await timed(client.get("/api/health"))
            return health, await work

    health, work = asyncio.run(both())
    assert health < 0.6 < work  # health answered while the model was still working


def test_create_app_refuses_no_runs_and_repeated_names(runs):
    with pytest.raises(ValueError, match="at least one run"):
        create_app([])
    with pytest.raises(ValueError, match="distinct run names"):
        create_app([runs[0], runs[0]])


def test_generate_streams_each_token_as_a_server_sent_event(runs, monkeypatch):
    def fake(self, prompt, max_tokens, temperature, top_k, unit, **options):  # a stand-in model
        for k in range(max_tokens):
            yield {"token": prompt[k % len(prompt)], "id": k, "probability": 0.5, "value": 0.1}

    # the text run stands in for a language model here: it answers generate with the fake
    monkeypatch.setattr(ClassifierRun, "analyses", (*ClassifierRun.analyses, "generate"))
    monkeypatch.setattr(ClassifierRun, "generate", fake, raising=False)
    client = TestClient(create_app(runs))
    body = {"prompt": "abc", "max_tokens": 4, "temperature": 0.8, "top_k": 5}
    with client.stream("POST", "/api/runs/0/generate", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = "".join(response.iter_text()).strip().split("\n\n")
    names = [e.split("\n")[0] for e in events]
    assert names == ["event: token"] * 4 + ["event: done"]
    tokens = [json.loads(e.split("\n")[1][len("data: ") :])["token"] for e in events[:4]]
    assert tokens == ["a", "b", "c", "a"]
    assert json.loads(events[-1].split("\n")[1][len("data: ") :]) == {"tokens": 4}
