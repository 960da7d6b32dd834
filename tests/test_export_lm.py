"""ONNX export of rnnlab.LanguageModel: the state as explicit inputs and outputs, and parity
with the model within 1e-5 through onnxruntime, also when the state is carried to a 2nd call."""

import numpy as np
import pytest
import torch

from rnnlab import LanguageModel
from rnnlab.export import export_model

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


@pytest.mark.parametrize(
    ("cell", "layers", "tie"),
    [
        ("lstm", 2, True),
        ("gru", 1, False),
        ("rnn", 2, False),
        ("mingru", 2, False),  # MatMul, then a Scan of h = a * h + b
        ("minlstm", 2, True),
    ],
)
def test_language_model_onnx_parity(tmp_path, cell, layers, tie):
    torch.manual_seed(0)
    model = LanguageModel(37, 12, 12, layers, cell=cell, tie_weights=tie, dropout=0.3).eval()
    path = tmp_path / "lm.onnx"
    export_model(model, path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    assert names == (["ids", "h0", "c0"] if cell == "lstm" else ["ids", "h0"])
    ids = torch.randint(0, 37, (3, 9))
    state = model.init_state(3)
    feeds = {"ids": ids[:, :5].numpy()}
    zeros = np.zeros((layers, 3, 12), np.float32)
    feeds.update({n: zeros for n in names[1:]})
    with torch.no_grad():
        for part in (ids[:, :5], ids[:, 5:]):  # the second call starts from the first's state
            logits, state = model(part, state)
            feeds["ids"] = part.numpy()
            out = session.run(None, feeds)
            np.testing.assert_allclose(out[0], logits.numpy(), atol=1e-5, rtol=1e-5)
            torch_state = list(state) if cell == "lstm" else [state]
            for got, want in zip(out[1:], torch_state, strict=True):
                np.testing.assert_allclose(got, want.numpy(), atol=1e-5, rtol=1e-5)
            feeds.update(dict(zip(names[1:], out[1:], strict=True)))


def test_one_token_at_a_time_through_onnx_is_generation(tmp_path):
    """The step form: a minLSTM model fed one token per call, its state carried from call to
    call, gives the full forward's logits at every position."""
    torch.manual_seed(1)
    model = LanguageModel(23, 8, 16, 2, cell="minlstm").eval()
    path = tmp_path / "step.onnx"
    export_model(model, path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ids = torch.randint(0, 23, (2, 7))
    with torch.no_grad():
        whole, _ = model(ids)  # (B, T, V)
    h = np.zeros((2, 2, 16), np.float32)
    for t in range(7):
        logits, h = session.run(None, {"ids": ids[:, t : t + 1].numpy(), "h0": h})
        np.testing.assert_allclose(logits[:, 0], whole[:, t].numpy(), atol=1e-5, rtol=1e-5)
