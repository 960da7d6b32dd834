"""The recurrent layers of 2024: minGRU and minLSTM (Feng et al. 2024), xLSTM's sLSTM and mLSTM
(Beck et al. 2024), each a stack of its cells over time, batch first, with the interface of
:class:`rnnlab.nn.LSTM` (``forward(x, state=None, lengths=None, mask=None, padding="post",
return_gates=False, backend=None, precision=None) -> (output, state)``).

Shape legend: B batch, T time, I input features, H hidden units, D directions, L layers,
NH heads, DH = H / NH units per head.

What runs each layer is :func:`rnnlab.nn.backends.scan_layer`'s business (its docstring is the
routing table); these classes only say how a state is made, split and stacked.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rnnlab.nn.backends import Backend, Precision
from rnnlab.nn.layers import Bf16Precision, RecurrentLayer
from rnnlab.nn.mincells import MinCell, MinGRUCell, MinLSTMCell
from rnnlab.nn.xlstm import MLSTMCell, MLSTMState, SLSTMCell, SLSTMState

__all__ = ["MinGRU", "MinLSTM", "SLSTM", "MLSTM"]


class _MinLayer(Bf16Precision, RecurrentLayer):
    """What MinGRU and MinLSTM share: a ``precision`` of their own (bf16 input GEMM)."""

    cell_type: type[MinCell]

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        backend: Backend = "auto",
        precision: Precision = "fp32",
    ) -> None:
        super().__init__(
            input_size,
            hidden_size,
            num_layers=num_layers,
            bidirectional=bidirectional,
            dropout=dropout,
            backend=backend,
        )
        self.precision = precision


class MinGRU(_MinLayer):
    """minGRU layer (stack of :class:`rnnlab.nn.mincells.MinGRUCell`; Feng et al. 2024), batch
    first.

    ``MinGRU(input_size, hidden_size, num_layers=1, bidirectional=False, dropout=0.0,
    backend="auto", precision="fp32")``; ``forward`` as :class:`RNN`'s, state h_n (L*D, B, H).
    2H(I + 1) parameters per direction.

    Backends: ``"reference"`` steps the cell; ``"compiled"`` (what ``"auto"`` takes where the
    extension builds) computes one GEMM for every step's gates, then runs the time loop in C++
    (:func:`rnnlab.nn.backends.compiled.mingru`); ``"fused"`` (and ``"auto"`` without the
    extension) is the parallel path (:mod:`rnnlab.nn.backends.parallel`: the same GEMM, then a
    scan in torch ops), all on the same parameters; the reference loop runs for
    ``return_gates=True``. There is no torch kernel (asking for one raises).
    ``precision="bf16"`` (or ``torch.autocast``) gives the GEMM bf16 operands; the scan stays
    float32. A padded step leaves the state unchanged (a = 1, b = 0 in the scan).
    """

    cell_type = MinGRUCell


class MinLSTM(_MinLayer):
    """minLSTM layer (stack of :class:`rnnlab.nn.mincells.MinLSTMCell`; Feng et al. 2024),
    batch first: as :class:`MinGRU`, with 3H(I + 1) parameters per direction. Its state is h
    alone, (L*D, B, H): minLSTM has no separate cell state."""

    cell_type = MinLSTMCell


class SLSTM(RecurrentLayer):
    """sLSTM layer (stack of :class:`rnnlab.nn.xlstm.SLSTMCell`; Beck et al. 2024), batch first.

    ``SLSTM(input_size, hidden_size, num_layers=1, bidirectional=False, dropout=0.0,
    backend="auto", num_heads=1, forget_gate="sigmoid", forget_bias=1.0)``; ``forward`` as
    :class:`LSTM`'s, with state an :class:`~rnnlab.nn.xlstm.SLSTMState` (h, c, n, m), each
    (L*D, B, H); all zeros (the default) is the state before any step.

    Backends: ``"reference"`` steps the cell; ``"auto"`` and ``"fused"`` run
    :func:`rnnlab.nn.backends.slstm.slstm` (one GEMM for every step's input projection, then
    the cell's own recurrent product and pointwise equations per step, on the same parameters);
    the reference loop runs for ``return_gates=True``. No compiled, torch or bf16 path.
    """

    cell_type = SLSTMCell
    state_type = SLSTMState

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        backend: Backend = "auto",
        num_heads: int = 1,
        forget_gate: str = "sigmoid",
        forget_bias: float = 1.0,
    ) -> None:
        super().__init__(
            input_size,
            hidden_size,
            num_layers=num_layers,
            bidirectional=bidirectional,
            dropout=dropout,
            backend=backend,
            num_heads=num_heads,
            forget_gate=forget_gate,
            forget_bias=forget_bias,
        )
        self.num_heads, self.forget_gate = num_heads, forget_gate

    def _zero_state(self, x: Tensor) -> SLSTMState:
        h = super()._zero_state(x)  # (L*D, B, H)
        return SLSTMState(h, *(torch.zeros_like(h) for _ in range(3)))


class MLSTM(RecurrentLayer):
    """mLSTM layer (stack of :class:`rnnlab.nn.xlstm.MLSTMCell`; Beck et al. 2024), batch first.

    ``MLSTM(input_size, hidden_size, num_layers=1, bidirectional=False, dropout=0.0,
    backend="auto", num_heads=1, forget_bias=1.0)``; ``forward`` as :class:`LSTM`'s, with
    state an :class:`~rnnlab.nn.xlstm.MLSTMState` (h (L*D, B, H), C (L*D, B, NH, DH, DH),
    n (L*D, B, NH, DH), m (L*D, B, NH)); all zeros (the default) is the state before any step.

    Backends: ``"reference"`` steps the cell (the recurrent form); ``"auto"`` and ``"fused"``
    run the parallel form (:func:`rnnlab.nn.backends.mlstm.mlstm`: all steps at once, on the
    same parameters); the reference loop runs for ``return_gates=True``. No compiled, torch or
    bf16 path.
    """

    cell_type = MLSTMCell
    state_type = MLSTMState

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        backend: Backend = "auto",
        num_heads: int = 1,
        forget_bias: float = 1.0,
    ) -> None:
        super().__init__(
            input_size,
            hidden_size,
            num_layers=num_layers,
            bidirectional=bidirectional,
            dropout=dropout,
            backend=backend,
            num_heads=num_heads,
            forget_bias=forget_bias,
        )
        self.num_heads = num_heads

    def _state_shapes(self, B: int) -> dict[str, tuple[int, ...]]:
        LD, H, NH = self.num_layers * self.num_directions, self.hidden_size, self.num_heads
        DH = H // NH
        return {"h": (LD, B, H), "C": (LD, B, NH, DH, DH), "n": (LD, B, NH, DH), "m": (LD, B, NH)}

    def _zero_state(self, x: Tensor) -> MLSTMState:
        shapes = self._state_shapes(x.shape[0])
        return MLSTMState(*(x.new_zeros(shape) for shape in shapes.values()))
