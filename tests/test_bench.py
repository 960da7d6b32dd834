"""The bench command runs end to end and writes the records the issue specifies."""

from __future__ import annotations

import json

from rnnlab.bench import main, run_benchmarks


def test_bench_quick_writes_json_records(tmp_path, capsys) -> None:
    out = tmp_path / "bench.json"
    argv = ["--workloads", "A", "--impls", "rnnlab,torch", "--modes", "infer", "--quick"]
    assert main([*argv, "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    records = {(r["workload"], r["impl"], r["mode"]): r for r in report["results"]}
    assert {("A", "rnnlab", "infer"), ("A", "torch", "infer")} <= records.keys()
    for r in records.values():
        assert r["samples_per_second"] > 0 and r["repeats"] >= 1
    assert records[("A", "torch", "infer")]["ratio_vs_torch_lstm"] == 1.0
    assert {"device", "dtype", "threads", "torch"} <= report["environment"].keys()
    assert "2048^3" in report["gemm"]
    assert "Workload A" in capsys.readouterr().out


def test_bench_records_the_allocator_and_writes_json_whole(tmp_path, monkeypatch) -> None:
    """--retain-memory is recorded in the environment; the JSON appears whole (written to a
    temporary name, then renamed), with no temporary file left behind."""
    import rnnlab.bench.cli as bench_cli

    calls = []
    monkeypatch.setattr(bench_cli, "retain_freed_memory", lambda: calls.append(1) or True)
    out = tmp_path / "bench.json"
    argv = ["--workloads", "A", "--impls", "torch", "--modes", "infer", "--quick"]
    assert main([*argv, "--retain-memory", "--json", str(out)]) == 0
    assert calls == [1]
    report = json.loads(out.read_text())
    assert report["environment"]["allocator"].startswith("glibc, freed memory retained")
    assert [p.name for p in tmp_path.iterdir()] == ["bench.json"]
    assert main([*argv, "--json", str(out)]) == 2  # an existing file is kept without --force
    assert main([*argv, "--json", str(out), "--force"]) == 0
    assert json.loads(out.read_text())["environment"]["allocator"] == "default"


def test_benchmarks_folder_runs_the_same_suite(tmp_path) -> None:
    """benchmarks/bench.py re-exports the suite and runs it as rnnlab bench does."""
    import runpy
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench.py"
    names = runpy.run_path(str(script), run_name="bench")
    assert names["run_benchmarks"] is run_benchmarks
    assert set("ABCDE") <= set(names["WORKLOADS"])
    done = subprocess.run(
        [sys.executable, str(script), "--workloads", "Z"], capture_output=True, text=True
    )
    assert done.returncode != 0 and "expected workloads from" in done.stderr + done.stdout


def test_onnxruntime_rows_are_inference_only_and_run_the_exported_model() -> None:
    import numpy as np
    import pytest
    import torch

    pytest.importorskip("onnxruntime")
    from rnnlab.bench.onnx_runner import OnnxRunner, _config
    from rnnlab.bench.workloads import WORKLOADS, make_batch
    from rnnlab.tasks import build_model

    w = WORKLOADS["A"]
    x, _ = make_batch(w)
    runner = OnnxRunner(w, x)
    torch.manual_seed(0)  # the runner's model: the workload as an rnnlab classifier
    with torch.no_grad():
        want = build_model(_config(w)).eval()(x).numpy()
    np.testing.assert_allclose(runner.model(*runner.feeds), want, rtol=0, atol=1e-5)

    report = run_benchmarks(["A"], ("torch", "onnxruntime"), ("train", "infer"), 1, 0.1, False)
    rows = {(r["impl"], r["mode"]) for r in report["results"]}
    assert ("onnxruntime", "infer") in rows and ("onnxruntime", "train") not in rows
    assert report["environment"]["onnxruntime"] is not None
