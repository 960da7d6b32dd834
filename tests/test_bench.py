"""The bench command runs end to end and writes the records the issue specifies."""

from __future__ import annotations

import json

from rnnlab.bench import main


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
