"""``rnnlab serve`` as a process: it prints its URL, answers, stops cleanly on Ctrl-C, refuses
what it cannot serve, and holds a bounded load of 32 concurrent loopback clients with zero
errors (its p50/p99 latency printed)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from rnnlab.cli import main as rnnlab_main
from rnnlab.serve.cli import host_warning, run_names
from serve_runs import REVIEW, make_runs, start_server, stop_server

CLIENTS, PER_CLIENT = 32, 12  # 384 requests, then the test stops by itself


@pytest.fixture(scope="module")
def run_dirs(tmp_path_factory):
    return make_runs(tmp_path_factory.mktemp("serve"))


def test_serves_then_stops_cleanly_on_ctrl_c(run_dirs):
    process, url = start_server(*map(str, run_dirs))
    try:
        assert url.startswith("http://127.0.0.1:")
        runs = httpx.get(url + "api/runs", timeout=30).json()["runs"]
        assert [(r["name"], r["kind"]) for r in runs] == [
            ("reviews", "text"),
            ("digits", "image"),
            ("chars", "lm"),
        ]
        answer = httpx.post(url + "api/runs/0/classify", json={"text": REVIEW}, timeout=30)
        assert answer.status_code == 200 and answer.json()["label_name"] in ("negative", "positive")
        other_host = httpx.get(url + "api/runs", headers={"host": "rebind.example"}, timeout=30)
        assert other_host.status_code == 400  # DNS rebinding: a loopback server answers loopback
    finally:
        code, out, err = stop_server(process)
    assert code == 0, err
    assert "rnnlab serve: stopped" in out
    assert "Traceback" not in err and "warning" not in err


def test_load_of_32_concurrent_clients_has_no_errors(run_dirs, capsys):
    process, url = start_server(*map(str, run_dirs))
    assert url.startswith("http://127.0.0.1:")  # loopback only
    image = np.zeros((28, 28))
    image[5:23, 12:16] = 1.0
    requests = [
        ("api/runs/reviews/classify", {"text": REVIEW}),
        ("api/runs/reviews/trace", {"text": REVIEW}),
        ("api/runs/digits/classify", {"image": image.tolist()}),
        ("api/runs/digits/trace", {"image": image.tolist()}),
        ("api/runs/chars/generate", {"prompt": "the film", "max_tokens": 20}),
    ]
    start = threading.Barrier(CLIENTS)

    def client(k: int) -> list[tuple[float, int | str]]:
        out = []
        with httpx.Client(base_url=url, timeout=60) as session:
            start.wait()
            for i in range(PER_CLIENT):
                path, body = requests[(k + i) % len(requests)]
                began = time.perf_counter()
                try:
                    response = session.post(path, json=body)
                    status: int | str = response.status_code
                    if path.endswith("generate") and "event: done" not in response.text:
                        status = "no done event"
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                out.append((time.perf_counter() - began, status))
        return out

    try:
        began = time.perf_counter()
        with ThreadPoolExecutor(CLIENTS) as pool:
            results = [r for rs in pool.map(client, range(CLIENTS)) for r in rs]
        wall = time.perf_counter() - began
    finally:
        code, _, err = stop_server(process)
    latencies = np.array([t for t, _ in results]) * 1000  # ms
    errors = [s for _, s in results if s != 200]
    p50, p99 = np.percentile(latencies, [50, 99])
    with capsys.disabled():
        print(
            f"\nserve load: {len(results)} requests from {CLIENTS} clients in {wall:.1f} s, "
            f"p50 {p50:.0f} ms, p99 {p99:.0f} ms, max {latencies.max():.0f} ms, "
            f"errors {len(errors)}"
        )
    assert len(results) == CLIENTS * PER_CLIENT
    assert errors == []
    assert code == 0, err


def test_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert rnnlab_main(["serve", str(tmp_path / "missing")]) == 2
    assert "expected an rnnlab run directory" in capsys.readouterr().err


def test_refuses_a_bad_timeout(run_dirs, capsys):
    with pytest.raises(SystemExit) as stop:
        rnnlab_main(["serve", str(run_dirs[0]), "--timeout", "0"])
    assert stop.value.code == 2
    assert "--timeout: expected a number > 0 (finite), got '0'" in capsys.readouterr().err


def test_only_loopback_hosts_go_without_a_warning():
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert host_warning(host) is None
    for host in ("0.0.0.0", "192.168.1.5", "::", "example.org"):
        assert "warning: listening on" in host_warning(host)


def test_run_names_are_url_safe_distinct_and_never_indices():
    names = run_names(["runs/imdb", "other/imdb", "x/../a b%2f", "7", "runs/imdb/"])
    assert names == ["imdb", "imdb-2", "a-b-2f", "run-7", "imdb-3"]
