"""rnnlab.nn.summary against Keras's own model.summary() and parameter counts.

Shape legend: B batch, T time, I input features, H hidden units.
"""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

import rnnlab
from rnnlab import LSTM, Recurrent, print_summary, summary

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def imdb_model() -> nn.Sequential:
    """The imdb-seed preset's sentiment model, built from rnnlab parts."""
    return nn.Sequential(
        nn.Embedding(1000, 8),
        Recurrent(LSTM(8, 256), return_sequences=True),
        nn.Dropout(0.5),
        Recurrent(LSTM(256, 256)),
        nn.Dropout(0.5),
        nn.Linear(256, 2),
    )


def footer(table: str) -> list[str]:
    return [line.strip() for line in table.splitlines() if "params:" in line]


def test_lstm_parameter_counts_match_keras() -> None:
    assert sum(p.numel() for p in LSTM(8, 256).parameters()) == 271_360
    assert sum(p.numel() for p in LSTM(256, 256).parameters()) == 525_312


def test_imdb_model_summary() -> None:
    model = imdb_model().train()
    result = summary(model, (20,), dtype=torch.long)
    assert model.training and all(m.training for m in model.modules())  # modes restored
    assert [(r.name, r.type, r.output_shape, r.params) for r in result.rows] == [
        ("0", "Embedding", "(None, 20, 8)", 8_000),
        ("1", "LSTM", "(None, 20, 256)", 271_360),
        ("2", "Dropout", "(None, 20, 256)", 0),
        ("3", "LSTM", "(None, 256)", 525_312),
        ("4", "Dropout", "(None, 256)", 0),
        ("5", "Linear", "(None, 2)", 514),
    ]
    assert (result.total_params, result.trainable_params, result.non_trainable_params) == (
        805_186,
        805_186,
        0,
    )
    table = str(result)
    for shown in ("8,000", "271,360", "525,312", "514", "(None, 20, 256)", "1 (LSTM)"):
        assert shown in table
    assert footer(table) == [
        "Total params: 805,186 (3.07 MB)",
        "Trainable params: 805,186 (3.07 MB)",
        "Non-trainable params: 0 (0.00 B)",
    ]


def test_imdb_model_matches_keras() -> None:
    """Per-layer counts and the footer lines against Keras running the same architecture."""
    os.environ["KERAS_BACKEND"] = "torch"
    keras = pytest.importorskip("keras")
    L = keras.layers
    theirs = keras.Sequential(
        [
            keras.Input((20,), dtype="int32"),
            L.Embedding(1000, 8),
            L.LSTM(256, return_sequences=True),
            L.Dropout(0.5),
            L.LSTM(256),
            L.Dropout(0.5),
            L.Dense(2),
        ]
    )
    lines: list[str] = []
    theirs.summary(print_fn=lambda line, line_break=False: lines.append(line))
    ours = summary(imdb_model(), (20,), dtype=torch.long)
    assert [r.params for r in ours.rows] == [layer.count_params() for layer in theirs.layers]
    assert ours.total_params == theirs.count_params()
    assert footer(str(ours)) == footer("\n".join(lines))


def test_non_trainable_parameters_and_input_data() -> None:
    model = imdb_model()
    model[0].weight.requires_grad_(False)
    tokens = torch.randint(0, 1000, (3, 7))  # (B, T)
    result = summary(model, input_data=tokens)
    assert (result.trainable_params, result.non_trainable_params) == (797_186, 8_000)
    assert result.rows[1].output_shape == "(None, 7, 256)"
    assert "Non-trainable params: 8,000 (31.25 KB)" in str(result)


def test_rows_of_bare_layers_containers_and_unrun_models() -> None:
    class Head(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = rnnlab.GRU(4, 3, bidirectional=True)
            self.scale = nn.Parameter(torch.ones(6))  # held by the container itself
            self.act = nn.Tanh()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            output, _ = self.rnn(x)  # (B, T, 2H)
            return self.act(output * self.scale)

    model = Head()
    rows = summary(model, (5, 4)).rows
    GRU_params = 2 * (3 * 3 * (4 + 3) + 4 * 3)
    assert [(r.label, r.output_shape, r.params) for r in rows] == [
        ("Head", "(None, 5, 6)", 6),
        ("rnn (GRU)", "(None, 5, 6)", GRU_params),
        ("act (Tanh)", "(None, 5, 6)", 0),
    ]
    assert summary(model).total_params == GRU_params + 6
    assert {r.output_shape for r in summary(model).rows} == {"?"}


def test_print_summary_prints_through_print_fn() -> None:
    printed: list[str] = []
    result = print_summary(LSTM(2, 3), (4, 2), print_fn=printed.append)
    assert printed == [str(result)]
    assert result.rows[0].label == "LSTM" and result.rows[0].output_shape == "(None, 4, 3)"


def test_summary_validates_its_arguments() -> None:
    with pytest.raises(TypeError, match=r"expected a torch.nn.Module, got str"):
        summary("model")
    with pytest.raises(ValueError, match=r"expected input_shape to be .*, got \(0, 3\)"):
        summary(LSTM(2, 3), (0, 3))
    with pytest.raises(ValueError, match=r"expected input_data alone"):
        summary(LSTM(2, 3), (4, 2), input_data=torch.zeros(1, 4, 2))
    with pytest.raises(TypeError, match=r"expected input_data to be tensors, got \['list'\]"):
        summary(LSTM(2, 3), input_data=[[1.0]])
