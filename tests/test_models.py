"""The classifiers: shapes, masking, pooling, gates and the torch comparison backend."""

import pytest
import torch

from rnnlab.config import load_preset
from rnnlab.models import build_model


def _text_config(*extra):
    return load_preset(
        "imdb-seed", ["model.hidden_sizes=[6, 5]", "data.num_words=50", "data.maxlen=9", *extra]
    )


@pytest.mark.parametrize("pooling", ["last", "mean", "max", "meanmax"])
@pytest.mark.parametrize("padding", ["pre", "post"])
def test_masked_text_model_ignores_padding(pooling, padding):
    torch.manual_seed(0)
    config = _text_config(
        "model.mask=true",
        f"model.pooling={pooling}",
        f"data.padding={padding}",
        "model.bidirectional=true",
    )
    model = build_model(config).eval()
    words = torch.randint(1, 50, (3, 4))
    pad = torch.zeros(3, 5, dtype=torch.int64)
    padded = torch.cat([pad, words], 1) if padding == "pre" else torch.cat([words, pad], 1)
    lengths = torch.full((3,), 4)
    short = model(words, lengths)
    assert short.shape == (3, 2)
    torch.testing.assert_close(model(padded, lengths), short, rtol=1e-5, atol=1e-6)


def test_unmasked_text_model_reads_padding_like_keras():
    torch.manual_seed(0)
    model = build_model(_text_config()).eval()
    words = torch.randint(1, 50, (2, 4))
    padded = torch.cat([torch.zeros(2, 3, dtype=torch.int64), words], 1)
    assert not torch.allclose(model(padded, torch.full((2,), 4)), model(words))


def test_sequence_model_shapes_and_errors():
    model = build_model(load_preset("mnist-seed", ["model.bidirectional=true"]))
    assert model(torch.rand(5, 28, 28)).shape == (5, 10)
    with pytest.raises(ValueError, match=r"expected input of shape \(B, T, 28\), got \(5, 28\)"):
        model(torch.rand(5, 28))


def test_return_gates_gives_every_layers_trace():
    torch.manual_seed(0)
    model = build_model(_text_config()).eval()
    ids = torch.randint(0, 50, (2, 9))
    logits, traces = model(ids, return_gates=True)
    torch.testing.assert_close(logits, model(ids))
    assert len(traces) == 2 and traces[1][0][0]["f"].shape == (2, 9, 5)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_torch_backend_matches_rnnlab_with_copied_weights(cell):
    torch.manual_seed(0)
    ours = build_model(
        load_preset("mnist-seed", [f"model.cell={cell}", "model.hidden_sizes=[16]"])
    ).eval()
    theirs = build_model(
        load_preset(
            "mnist-seed", [f"model.cell={cell}", "model.backend=torch", "model.hidden_sizes=[16]"]
        )
    ).eval()
    state = {k: v for k, v in ours.state_dict().items() if "stack" not in k}
    theirs.load_state_dict(state, strict=False)
    cell_ = ours.stack.layers[0].cells[0]
    torch_layer = theirs.stack.layers[0]
    with torch.no_grad():
        torch_layer.weight_ih_l0.copy_(cell_.weight_ih)
        torch_layer.weight_hh_l0.copy_(cell_.weight_hh)
        torch_layer.bias_ih_l0.copy_(cell_.bias)
        torch_layer.bias_hh_l0.zero_()
        if cell == "gru":
            torch_layer.bias_hh_l0[32:].copy_(cell_.bias_hn)
    x = torch.rand(4, 28, 28)
    torch.testing.assert_close(theirs(x), ours(x), rtol=1e-5, atol=1e-5)
