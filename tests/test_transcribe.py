"""The CTC and speech kinds on the upper floors: `rnnlab transcribe` and `predict --wav`, the
serve API, inspect's posteriogram, ONNX export with onnxruntime parity, and bad inputs (each a
clear error, nothing written into the run directory)."""

import base64
import json
import shutil

import numpy as np
import pytest
import soundfile
import torch

from rnnlab.cli.main import main
from rnnlab.data import sample_dir
from rnnlab.data.strings import LINE_HEIGHT
from rnnlab.runs import train

WAVS = sample_dir() / "fsdd"
TINY = ["train.epochs=1", "run.log_every=1000", "run.checkpoint_every=1000"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A spoken CTC run, a written one and a speech classifier, each trained briefly."""
    root = tmp_path_factory.mktemp("runs")
    torch.manual_seed(0)
    train("digits-ctc-sample", root / "spoken", overrides=[*TINY, "data.strings=64"])
    train("mnist-lines-sample", root / "written", overrides=[*TINY, "data.strings=32"])
    train("digits-speech-sample", root / "speech", overrides=TINY)
    return root


def listing(run):
    return sorted(p.relative_to(run).as_posix() for p in run.rglob("*"))


def test_transcribe_wav_files_and_a_folder(runs, tmp_path, capsys):
    folder = tmp_path / "wavs"
    folder.mkdir()
    for name in ("3_george_0.wav", "8_jackson_0.wav"):
        shutil.copy(WAVS / name, folder / name)
    run = runs / "spoken"
    before = listing(run)
    args = ["transcribe", str(run), "--wav", str(folder), str(WAVS / "1_george_5.wav")]
    assert main([*args, "--json", "--probabilities", "--beam", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    results = [json.loads(line) for line in lines]
    assert [r["input"].rsplit("/", 1)[1] for r in results] == [
        "3_george_0.wav",
        "8_jackson_0.wav",
        "1_george_5.wav",
    ]
    for r in results:
        p = np.asarray(r["frame_probabilities"])  # (T, S)
        assert p.shape == (r["frames"], 11) and np.allclose(p.sum(1), 1, atol=1e-3)
        assert len(r["alignment"]) == r["frames"] and set(r["transcript"]) <= set("0123456789")
    assert main(args) == 0
    plain = capsys.readouterr().out.splitlines()
    assert len(plain) == 3 and plain[0].endswith("3_george_0.wav")
    assert listing(run) == before  # transcribing writes nothing into the run


def test_bad_files_are_reported_and_the_others_answered(runs, tmp_path, capsys):
    empty, text, stereo = tmp_path / "empty.wav", tmp_path / "text.wav", tmp_path / "st.wav"
    empty.write_bytes(b"")
    text.write_text("hello, not audio")
    samples, rate = soundfile.read(str(WAVS / "5_george_0.wav"))
    soundfile.write(str(stereo), np.stack([samples, samples], 1), 44100)  # and another rate
    code = main(["transcribe", str(runs / "spoken"), "--wav", str(empty), str(text), str(stereo)])
    out = capsys.readouterr()
    assert code == 1
    assert "got an empty file" in out.err and "expected a WAV" in out.err
    assert "stereo mixed down" in out.err and "resampled" in out.err
    assert out.out.strip().endswith("st.wav")


def test_a_run_that_is_not_a_transcription_run(runs, capsys):
    wav = str(WAVS / "2_george_0.wav")
    assert main(["transcribe", str(runs / "speech"), "--wav", wav]) == 2
    err = capsys.readouterr().err
    assert "got a 'speech' run (use `rnnlab predict`)" in err
    assert main(["predict", str(runs / "speech"), "--wav", wav, wav]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].split("\t")[0] in list("0123456789")
    assert main(["transcribe", str(runs / "spoken"), "--image", wav]) == 2
    assert "--image expected an image model, got an audio model (use --wav)" in (
        capsys.readouterr().err
    )


def test_transcribe_line_images(runs, tmp_path, capsys):
    import matplotlib.image

    line = np.zeros((LINE_HEIGHT, 90))
    line[4:30, 10:14] = 1.0  # a stroke: something like a 1
    matplotlib.image.imsave(tmp_path / "line.png", line, cmap="gray", vmin=0, vmax=1)
    matplotlib.image.imsave(tmp_path / "short.png", line[:20], cmap="gray", vmin=0, vmax=1)
    code = main(["transcribe", str(runs / "written"), "--image", str(tmp_path), "--json"])
    captured = capsys.readouterr()
    assert code == 1
    assert "expected a grey line image 32 pixels high" in captured.err
    assert "got shape (20, 90)" in captured.err
    (result,) = [json.loads(x) for x in captured.out.splitlines() if '"transcript"' in x]
    assert result["frames"] == 90 and result["inverted"] is False


def test_onnx_export_matches_rnnlab_on_real_frames(runs, tmp_path):
    from rnnlab.export import export_run
    from rnnlab.export.runner import load_onnx
    from rnnlab.runs import load_run

    for name in ("spoken", "written"):
        result = export_run(runs / name, out=tmp_path / f"{name}.onnx")
        onnx_model = load_onnx(result.path)
        _, model, _ = load_run(runs / name)
        x = torch.randn(3, 50, model.input_size)
        lengths = torch.tensor([50, 31, 7])
        with torch.no_grad():
            want = model(x, lengths).numpy()  # (B, T, S)
        got = onnx_model(x.numpy(), lengths.numpy())
        assert got.shape == want.shape
        for b, n in enumerate(lengths.tolist()):
            np.testing.assert_allclose(got[b, :n], want[b, :n], atol=1e-4)


def test_speech_runs_export_as_classifiers_of_unpadded_recordings(runs, tmp_path):
    from rnnlab.export import export_run
    from rnnlab.export.runner import load_onnx
    from rnnlab.runs import load_run

    onnx_model = load_onnx(export_run(runs / "speech", out=tmp_path / "speech.onnx").path)
    _, model, _ = load_run(runs / "speech")
    x = torch.randn(2, 37, 40)  # (B, T, F): recordings of one length, no padding
    with torch.no_grad():
        want = model(x).numpy()  # (B, C)
    np.testing.assert_allclose(onnx_model(x.numpy()), want, atol=1e-4)


def test_inspect_draws_the_posteriogram_and_alignment(runs, tmp_path, capsys):
    out = tmp_path / "inspect"
    wav = str(WAVS / "4_jackson_0.wav")
    assert main(["inspect", str(runs / "spoken"), "--wav", wav, "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["inspect.json", "posteriogram.png"]
    summary = json.loads((out / "inspect.json").read_text())
    assert np.asarray(summary["posteriogram"]).shape == (summary["frames"], 11)
    assert (out / "posteriogram.png").read_bytes()[:4] == b"\x89PNG"
    assert "alignment:" in capsys.readouterr().out
    bad = tmp_path / "bad"
    assert main(["inspect", str(runs / "spoken"), "--image", wav, "--out", str(bad)]) == 2
    assert not bad.exists()  # nothing half-written


def test_inspect_draws_a_spoken_digit_frame_by_frame(runs, tmp_path, capsys):
    """A speech classifier's inspect: gates, and P(digit) had the recording ended after each
    frame, whose last row is the model's own prediction for the whole recording."""
    from rnnlab.inspect import inspect_run
    from rnnlab.runs import load_run
    from rnnlab.tasks import get_task

    wav = WAVS / "4_jackson_0.wav"
    out = tmp_path / "inspect"
    assert main(["inspect", str(runs / "speech"), "--wav", str(wav), "--out", str(out)]) == 0
    assert {"gates.png", "prediction.png", "inspect.json"} <= {p.name for p in out.iterdir()}
    assert (out / "prediction.png").read_bytes()[:4] == b"\x89PNG"
    assert "prediction" in capsys.readouterr().out
    config, model, _ = load_run(runs / "speech")
    task = get_task(config)
    example = task.example(wav, {})
    probabilities = task.prefix_probabilities(model.eval(), example, chunk=7)  # (T, C)
    with torch.no_grad():
        whole = torch.softmax(model(*example.inputs), -1)[0].numpy()  # (C,)
    np.testing.assert_allclose(probabilities[-1], whole, atol=1e-5)
    np.testing.assert_allclose(probabilities.sum(1), 1.0, atol=1e-5)
    summary = json.loads((out / "inspect.json").read_text())
    np.testing.assert_allclose(summary["prediction"]["probabilities"], whole, atol=1e-5)
    tested = inspect_run(runs / "speech", tmp_path / "test0", index=0).summary
    assert tested["input"]["test_index"] == 0 and 0 <= tested["input"]["target"] <= 9
    bad = tmp_path / "bad"
    assert main(["inspect", str(runs / "speech"), "--text", "four", "--out", str(bad)]) == 2
    assert "a spoken-digit model expected --wav FILE or --index N, got --text" in (
        capsys.readouterr().err
    )
    assert not bad.exists()  # nothing half-written


def test_serve_transcribes_uploads_within_the_cap(runs):
    from fastapi.testclient import TestClient

    from rnnlab.predict import predict_each
    from rnnlab.serve.app import create_app
    from rnnlab.serve.ctc import MAX_WAV_BYTES
    from rnnlab.serve.models import load_served_run

    served = [load_served_run(runs / "spoken", "spoken"), load_served_run(runs / "speech", "sp")]
    client = TestClient(create_app(served))
    assert client.get("/transcribe").status_code == 200
    wav = WAVS / "6_george_0.wav"
    body = {"wav": base64.b64encode(wav.read_bytes()).decode()}
    answer = client.post("/api/runs/spoken/transcribe", json=body)
    assert answer.status_code == 200, answer.text
    data = answer.json()
    (cli,) = predict_each(runs / "spoken", [wav], verb="transcribe")
    assert data["transcript"] == cli["transcript"] and data["alignment"] == cli["alignment"]
    assert np.asarray(data["posteriogram"]).shape == (cli["frames"], 11)
    speech = client.post("/api/runs/sp/transcribe", json=body).json()
    assert speech["transcript"] in list("0123456789") and len(speech["posteriogram"]) == 1
    big = {"wav": base64.b64encode(b"RIFF" + bytes(MAX_WAV_BYTES)).decode()}
    assert client.post("/api/runs/spoken/transcribe", json=big).status_code in (413, 422)
    silent = {"wav": base64.b64encode(_silence()).decode()}
    answer = client.post("/api/runs/spoken/transcribe", json=silent)
    assert answer.status_code == 422 and "silence" in answer.text
    answer = client.post("/api/runs/spoken/transcribe", json={"image": [[0.0] * 5] * 32})
    assert answer.status_code == 422 and "reads audio" in answer.text


def _silence() -> bytes:
    import io

    buffer = io.BytesIO()
    soundfile.write(buffer, np.zeros(4000, np.int16), 8000, format="WAV")
    return buffer.getvalue()


def test_a_run_that_cannot_load_its_data_leaves_no_run_directory(tmp_path):
    from rnnlab.data.errors import DataError

    with pytest.raises(DataError, match="expected speakers among"):
        train("digits-ctc-sample", tmp_path / "run", overrides=["data.speakers=nobody"])
    assert not (tmp_path / "run").exists()


def test_transcribe_reads_the_int8_model(runs, tmp_path, capsys):
    run = shutil.copytree(runs / "spoken", tmp_path / "spoken")
    args = ["transcribe", str(run), "--wav", str(WAVS / "3_george_0.wav"), "--json"]
    assert main([*args, "--checkpoint", "int8"]) == 2
    assert "make it with `rnnlab quantize" in capsys.readouterr().err
    assert main(["quantize", str(run), "--no-measure"]) == 0
    capsys.readouterr()
    scores = {}
    for tag in ("best", "int8"):
        assert main([*args, "--checkpoint", tag]) == 0
        scores[tag] = json.loads(capsys.readouterr().out)["log_prob"]
    assert scores["int8"] == pytest.approx(scores["best"], rel=0.05)
