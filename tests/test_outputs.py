"""Issue 25, item 1: no command overwrites a file unless told to (``--force``), and none writes
inside a run's ``checkpoints/``, not even with ``--force`` (a checkpoint's sha256 is checked
before every use: one overwritten file loses the run). One test per command taking an output
path: ``export --out``, ``inspect --out``, ``train --out``, ``bench --json``."""

from __future__ import annotations

import pytest

from rnnlab.cli import main
from rnnlab.files import OutputRefusedError, check_output
from serve_runs import LM_SETTINGS, make_run


@pytest.fixture
def lm_run(tmp_path):
    run = make_run(tmp_path / "chars", "charlm-sample", LM_SETTINGS)
    (run / "README.md").write_text("my notes\n")
    return run


def _checkpoint(run):
    return next((run / "checkpoints").glob("last-*.safetensors"))


def test_export_refuses_a_checkpoint_and_existing_files(lm_run, capsys):
    pytest.importorskip("onnx")
    tensors = _checkpoint(lm_run)
    before = tensors.read_bytes()
    for extra in ([], ["--force"]):
        assert main(["export", str(lm_run), "--out", str(tensors), *extra]) == 2
        assert "expected a place outside a run's checkpoints/" in capsys.readouterr().err
    assert tensors.read_bytes() == before
    readme = lm_run / "README.md"
    assert main(["export", str(lm_run), "--out", str(readme)]) == 2
    assert "expected a new file, got an existing file (add --force" in capsys.readouterr().err
    assert readme.read_text() == "my notes\n" and not (lm_run / "README.md.json").exists()
    # a sidecar in the way is refused too, before anything is written
    (lm_run / "m.onnx.json").write_text("{}")
    assert main(["export", str(lm_run), "--out", str(lm_run / "m.onnx")]) == 2
    assert not (lm_run / "m.onnx").exists()
    assert main(["export", str(lm_run), "--out", str(lm_run / "m.onnx"), "--force"]) == 0
    # the default file: written once, then refused, then replaced with --force
    assert main(["export", str(lm_run)]) == 0
    assert main(["export", str(lm_run)]) == 2
    assert main(["export", str(lm_run), "--force"]) == 0


def test_inspect_refuses_checkpoints_and_replaces_its_output_only_with_force(lm_run, capsys):
    args = ["inspect", str(lm_run), "--text", "the cat sat.", "--top", "2"]
    for extra in ([], ["--force"]):
        assert main([*args, "--out", str(lm_run / "checkpoints" / "x"), *extra]) == 2
        assert "outside a run's checkpoints/" in capsys.readouterr().err
    assert not (lm_run / "checkpoints" / "x").exists()
    out = lm_run / "looks"
    assert main([*args, "--out", str(out)]) == 0
    first = (out / "inspect.json").read_bytes()
    assert main([*args, "--out", str(out), "--units", "0"]) == 2
    assert "got an earlier inspect output (add --force" in capsys.readouterr().err
    assert (out / "inspect.json").read_bytes() == first
    assert main([*args, "--out", str(out), "--units", "0", "--force"]) == 0
    assert (out / "inspect.json").read_bytes() != first


def test_train_refuses_an_out_inside_checkpoints(lm_run, capsys):
    out = lm_run / "checkpoints" / "again"
    assert main(["train", "charlm-sample", "--out", str(out), "--no-progress"]) == 2
    assert "expected a directory outside a run's checkpoints/" in capsys.readouterr().err
    assert not out.exists()


def test_bench_json_refuses_an_existing_file_before_benchmarking(lm_run, tmp_path, capsys):
    from rnnlab.bench.cli import main as bench

    existing = tmp_path / "bench.json"
    existing.write_text("earlier results")
    assert bench(["--quick", "--json", str(existing)]) == 2
    assert "--json" in (err := capsys.readouterr().err) and "got an existing file" in err
    assert existing.read_text() == "earlier results"
    inside = lm_run / "checkpoints" / "bench.json"
    assert bench(["--quick", "--json", str(inside), "--force"]) == 2
    assert "outside a run's checkpoints/" in capsys.readouterr().err


def test_check_output_names_the_rule(tmp_path):
    check_output(tmp_path / "new.txt")  # a new file: fine
    (tmp_path / "old.txt").write_text("x")
    with pytest.raises(OutputRefusedError, match="expected a new file, got an existing file"):
        check_output(tmp_path / "old.txt")
    check_output(tmp_path / "old.txt", force=True)
    # a folder named checkpoints that belongs to no run is an ordinary folder
    check_output(tmp_path / "checkpoints" / "f.txt")


def test_the_projects_refuse_earlier_results_and_checkpoints(lm_run, tmp_path):
    from projects.common import prepare
    from projects.context.cli import build_parser as context
    from projects.long_range.cli import build_parser as long_range

    done = tmp_path / "results"
    done.mkdir()
    (done / "results.json").write_text("{}")
    with pytest.raises(OutputRefusedError, match="without earlier results, got .*add --force"):
        prepare(done, 1)
    prepare(done, 1, force=True)
    with pytest.raises(OutputRefusedError, match="outside a run's checkpoints/"):
        prepare(lm_run / "checkpoints" / "exp", 1, force=True)
    for parser in (context(), long_range()):
        options = {o: a for a in parser._actions for o in a.option_strings}
        assert "--force" in options
        assert all(a.type not in (int, float) for a in options.values())


def test_every_kinds_inspect_function_takes_force():
    """--force reaches each kind's inspect command: every inspect function the tasks' floors
    lead to replaces an earlier output only when asked (found after the seq2seq and CTC
    inspectors were merged without it)."""
    import inspect as pyinspect

    from rnnlab.inspect import ctc, seq2seq

    for fn in (seq2seq.inspect_seq2seq, ctc.inspect_transcription):
        assert pyinspect.signature(fn).parameters["force"].default is False
        assert "force=args.force" in pyinspect.getsource(pyinspect.getmodule(fn).command)
