"""The bench command runs end to end and writes the records the issue specifies."""

from __future__ import annotations

import json

import pytest
import torch

from rnnlab.bench import main, run_benchmarks
from rnnlab.bench.workloads import WORKLOADS, build_model, make_batch


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


def test_roofline_counts_each_product_at_its_own_rate() -> None:
    """Workload A (one LSTM layer, B 128, T 28, I 28 -> projected 128, H 128): one input product
    of (3584, 128) x (128, 512) and 28 recurrent ones of (128, 128) x (128, 512) per forward; a
    training step three times that. With rates of 100 and 10 GFLOP/s the roofline is their
    sum of FLOPs over rates, by hand."""
    from rnnlab.bench.roofline import gemm_shapes, rate_key, roofline_seconds
    from rnnlab.bench.workloads import WORKLOADS

    w = WORKLOADS["A"]
    shapes = gemm_shapes(w)
    assert shapes == {
        "A L0 input G4": ((128 * 28, 128, 512), 1),
        "A L0 step G4": ((128, 128, 512), 28),
    }
    gemm = {
        "A L0 input G4": {"mkl_gflops": 100.0, "onednn_gflops": 50.0},
        "A L0 step G4": {"mkl_gflops": 4.0, "onednn_gflops": 10.0, "onednn_bf16_gflops": 40.0},
    }
    want = 2 * 3584 * 128 * 512 / 100e9 + 28 * 2 * 128 * 128 * 512 / 10e9
    assert roofline_seconds(shapes, gemm, "fp32", train=False) == pytest.approx(want)
    assert roofline_seconds(shapes, gemm, "fp32", train=True) == pytest.approx(3 * want)
    assert roofline_seconds(shapes, gemm, rate_key("rnnlab-bf16"), train=True) is None  # unmeasured
    assert rate_key("torch-int8") == "int8_dynamic_gflops" and rate_key("torch-gru") == "fp32"
    assert set(gemm_shapes(w, gates=3, recurrent=False)) == {"A L0 input G3"}
    bidirectional = gemm_shapes(WORKLOADS["D"])
    assert all(calls % 2 == 0 for _, calls in bidirectional.values())  # both directions


def test_bench_report_prints_each_rows_share_of_its_roofline(capsys) -> None:
    argv = ["--workloads", "A", "--impls", "rnnlab,torch,torch-gru", "--modes", "infer"]
    assert main([*argv, "--quick"]) == 0
    out = capsys.readouterr().out
    assert "%roof" in out and "roofline of a infer step" in out
    line = next(s for s in out.splitlines() if s.startswith("  roofline of a infer step"))
    assert "for rnnlab, torch" in line and "for torch-gru" in line  # GRU: its own, 3 gates


def test_bench_threads_flag_sets_torch_threads(tmp_path, capsys, monkeypatch) -> None:
    import torch

    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the flag sets it for the probes; restored after
    out = tmp_path / "b.json"
    argv = ["--workloads", "A", "--impls", "torch", "--modes", "infer", "--quick", "--threads"]
    try:
        assert main([*argv, "1", "--json", str(out)]) == 0
        assert json.loads(out.read_text())["environment"]["threads"] == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(SystemExit):
        main([*argv, "0"])
    assert "expected a thread count" in capsys.readouterr().err


def test_workload_a_rnnlab_model_folds_its_linear_and_matches_it_run_first():
    """Workload A's rnnlab model takes its front Linear into the LSTM's input weights; its
    logits and gradients are those of the Linear run first."""
    torch.manual_seed(0)
    w = WORKLOADS["A"]
    model = build_model(w, "rnnlab")
    x, y = make_batch(w)
    logits = model(x)
    logits.square().sum().backward()
    folded = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    _, state = model.layers[0].rnn(model.dense(x))  # the Linear first, then the layer
    plain = model.head(state.h[-1])
    plain.square().sum().backward()
    assert torch.allclose(logits, plain, rtol=1e-5, atol=1e-5)
    for a, b in zip(folded, (p.grad for p in model.parameters()), strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)


def test_unfolded_row_runs_the_linear_first_with_the_same_result():
    torch.manual_seed(0)
    w = WORKLOADS["A"]
    folded, unfolded = build_model(w, "rnnlab"), build_model(w, "rnnlab-unfolded")
    unfolded.load_state_dict(folded.state_dict())
    calls = []
    unfolded.dense.register_forward_hook(lambda *a: calls.append(1))
    folded.dense.register_forward_hook(lambda *a: calls.append(2))
    x, _ = make_batch(w)
    assert torch.allclose(folded(x), unfolded(x), rtol=1e-5, atol=1e-5)
    assert calls == [1]  # only the unfolded model ran its Linear


def test_gemm_peak_samples_are_about_2_gflop_and_at_most_a_thousand_calls() -> None:
    """A sample of the GEMM peaks times about 2 GFLOP of back-to-back calls, but never more
    than MAX_CALLS of them: a tiny product would otherwise take half a million calls."""
    from rnnlab.bench.suite import MAX_CALLS, calls_per_sample, gemm_peaks

    assert calls_per_sample(2.0 * 2048**3) == 1  # one call is 17 GFLOP
    assert calls_per_sample(2.0 * 32 * 128 * 512) == 476  # workload E's step, as before
    assert calls_per_sample(2.0 * 2 * 16 * 64) == MAX_CALLS == 1000  # was 488,281
    peaks = gemm_peaks({"tiny": (2, 16, 64)}, repeats=1)["tiny"]
    assert peaks["shape"] == [2, 16, 64] and peaks["mkl_gflops"] > 0
