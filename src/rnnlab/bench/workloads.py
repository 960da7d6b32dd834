"""The benchmark workloads (issue 6) and one model per workload and implementation.

Shape legend: B batch, T time, I input features, H hidden units.

    A  batch 128, 28 steps, 28 inputs -> Linear 128 -> LSTM 128 -> Linear 10 (the MNIST model)
    B  batch 512, 20 steps, Embedding(1000, 8) -> LSTM 256 (seq) -> LSTM 256 -> Linear 1 (IMDB)
    C  batch 64, 200 steps, Embedding(20000, 128) -> LSTM 128 -> Linear 1
    D  as C, bidirectional
    E  batch 32, 784 steps, 1 input -> LSTM 128 -> Linear 10 (pixel-by-pixel MNIST)
    F  char LM: batch 64, bptt 128, Embedding(100, 64) -> 2 x LSTM 512 -> Linear 100 (issue 12)
    G  word LM: batch 20, bptt 35, Embedding(10000, 650) -> 2 x LSTM 650 -> Linear 10000 tied
       (Zaremba et al. 2014's medium model); F and G are built by :mod:`rnnlab.bench.lm_models`

Every model is built the same way from a list of recurrent layers, so implementations differ
only in the recurrent layer: rnnlab (a backend), torch.nn.LSTM/GRU, or Keras 3 on torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

import rnnlab
from rnnlab.models.classifiers import folds_projection

__all__ = ["Workload", "WORKLOADS", "TorchModel", "build_model", "make_batch", "lstm_flops"]


@dataclass(frozen=True)
class Workload:
    name: str
    batch: int
    steps: int
    vocab: int | None  # an Embedding(vocab, embed) front end, else float inputs
    inputs: int  # I of the first recurrent layer's input (embedding width or features)
    dense_in: int | None  # a Linear(inputs, dense_in) before the recurrent stack (workload A)
    hidden: tuple[int, ...]  # H of each stacked recurrent layer
    bidirectional: bool
    classes: int  # 1: binary cross-entropy on a logit, else cross-entropy
    language_model: bool = False  # next-token loss at every step, decoder to ``vocab`` (F, G)
    tied: bool = False  # the decoder reuses the embedding matrix (language models)

    def recurrent_shapes(self) -> list[tuple[int, int]]:
        """(I, H) of every recurrent layer, in order."""
        I = self.dense_in or self.inputs
        shapes = []
        D = 2 if self.bidirectional else 1
        for H in self.hidden:
            shapes.append((I, H))
            I = D * H
        return shapes


WORKLOADS = {
    "A": Workload("A", 128, 28, None, 28, 128, (128,), False, 10),
    "B": Workload("B", 512, 20, 1000, 8, None, (256, 256), False, 1),
    "C": Workload("C", 64, 200, 20000, 128, None, (128,), False, 1),
    "D": Workload("D", 64, 200, 20000, 128, None, (128,), True, 1),
    "E": Workload("E", 32, 784, None, 1, None, (128,), False, 10),
    "F": Workload("F", 64, 128, 100, 64, None, (512, 512), False, 100, language_model=True),
    "G": Workload(
        "G", 20, 35, 10000, 650, None, (650, 650), False, 10000, language_model=True, tied=True
    ),
}


def lstm_flops(w: Workload, gates: int = 4, train: bool = True, recurrent: bool = True) -> float:
    """Matrix-product FLOPs of the recurrent layers for one batch: the forward is
    2 B T G H (I + H) per layer and direction; training adds dx, dW_ih, dW_hh and dh_{t-1},
    twice the forward. ``recurrent=False`` for cells whose gates read x_t alone (minGRU,
    minLSTM): 2 B T G H I."""
    D = 2 if w.bidirectional else 1
    fwd = sum(
        2 * w.batch * w.steps * gates * H * (I + (H if recurrent else 0)) * D
        for I, H in w.recurrent_shapes()
    )
    return 3.0 * fwd if train else float(fwd)


class _TorchRecurrent(nn.Module):
    """torch.nn.LSTM/GRU, batch first, returning (sequence, last hidden state (B, D*H))."""

    def __init__(self, cls: type[nn.RNNBase], I: int, H: int, bidirectional: bool) -> None:
        super().__init__()
        self.rnn = cls(I, H, batch_first=True, bidirectional=bidirectional)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        out, state = self.rnn(x)
        h = state[0] if isinstance(state, tuple) else state  # (D, B, H)
        return out, torch.cat(list(h), dim=-1)


class _RnnlabRecurrent(nn.Module):
    def __init__(
        self, cls: type, I: int, H: int, bidirectional: bool, backend: str, **kwargs: str
    ) -> None:
        super().__init__()
        self.rnn = cls(I, H, bidirectional=bidirectional, backend=backend, **kwargs)
        self.fold = True  # takes a front Linear into its input weights; "rnnlab-unfolded": off

    def forward(
        self, x: Tensor, input_projection: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, Tensor]:
        fold = {} if input_projection is None else {"input_projection": input_projection}
        out, state = self.rnn(x, **fold)  # (an int8 copy of the layer takes no projection)
        h = state.h if isinstance(state, tuple) else state  # (D, B, H)
        return out, torch.cat(list(h), dim=-1)


class TorchModel(nn.Module):
    """Front end (Embedding or Linear or nothing) -> recurrent stack -> Linear on the last
    layer's final hidden state. rnnlab's layers take the front Linear (workload A) into their
    input weights, as rnnlab's own classifier does; torch's and Keras's run it first."""

    def __init__(self, w: Workload, make_layer: Callable[[int, int, bool], nn.Module]) -> None:
        super().__init__()
        self.embed = nn.Embedding(w.vocab, w.inputs) if w.vocab else None
        self.dense = nn.Linear(w.inputs, w.dense_in) if w.dense_in else None
        self.layers = nn.ModuleList(
            make_layer(I, H, w.bidirectional) for I, H in w.recurrent_shapes()
        )
        D = 2 if w.bidirectional else 1
        self.head = nn.Linear(D * w.hidden[-1], w.classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.embed(x) if self.embed is not None else x  # (B, T, I)
        layers, last = list(self.layers), x
        first = layers[0]
        if getattr(first, "fold", False) and folds_projection(self.dense, first.rnn, False):
            # rnnlab's layer (not its int8 copy) folds the Linear into its input weights
            x, last = layers.pop(0)(x, (self.dense.weight, self.dense.bias))
        elif self.dense is not None:
            x = self.dense(x)  # (B, T, dense_in)
        for layer in layers:
            x, last = layer(x)
        return self.head(last)  # (B, classes)


def build_model(w: Workload, impl: str) -> nn.Module:
    """A torch module for ``impl``: "rnnlab" (backend auto), "rnnlab-bf16" (backend auto,
    precision bf16: bf16 GEMMs, float32 weights and state), "rnnlab-fused", "rnnlab-reference",
    "rnnlab-unfolded" (auto, with workload A's front Linear run before the layer instead of
    folded into it), "torch", and the GRU variants "rnnlab-gru", "torch-gru"."""
    torch_cls = {"torch": nn.LSTM, "torch-gru": nn.GRU}
    if impl in torch_cls:
        return TorchModel(w, lambda I, H, bi: _TorchRecurrent(torch_cls[impl], I, H, bi))
    backends = {
        "rnnlab": "auto",
        "rnnlab-fused": "fused",
        "rnnlab-reference": "reference",
        "rnnlab-gru": "auto",
    }
    if impl == "rnnlab-bf16":
        return TorchModel(
            w,
            lambda I, H, bi: _RnnlabRecurrent(rnnlab.LSTM, I, H, bi, "auto", precision="bf16"),
        )
    if impl in backends:
        cls = rnnlab.GRU if impl.endswith("gru") else rnnlab.LSTM
        return TorchModel(w, lambda I, H, bi: _RnnlabRecurrent(cls, I, H, bi, backends[impl]))
    if impl == "rnnlab-unfolded":  # backend auto with the front Linear run first, as torch's
        model = TorchModel(w, lambda I, H, bi: _RnnlabRecurrent(rnnlab.LSTM, I, H, bi, "auto"))
        for layer in model.layers:
            layer.fold = False
        return model
    raise ValueError(f"unknown implementation {impl!r}")


def make_batch(w: Workload, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Random inputs (tokens or features) and labels of the workload's shapes."""
    g = torch.Generator().manual_seed(seed)
    if w.vocab:
        x = torch.randint(0, w.vocab, (w.batch, w.steps), generator=g)
    else:
        x = torch.randn(w.batch, w.steps, w.inputs, generator=g)
    if w.classes == 1:
        y = torch.randint(0, 2, (w.batch, 1), generator=g).float()
    else:
        y = torch.randint(0, w.classes, (w.batch,), generator=g)
    return x, y


def loss_fn(w: Workload) -> nn.Module:
    return nn.BCEWithLogitsLoss() if w.classes == 1 else nn.CrossEntropyLoss()
