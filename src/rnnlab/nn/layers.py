"""Batch-first recurrent layers: stacks of cells over time, in one or two directions.

Shape legend: B batch, T time, I input features, H hidden units, D directions, L layers.

Each layer holds one cell per (layer, direction) in ``self.cells`` (index ``layer * D +
direction``; direction 0 reads forwards, 1 backwards). This module validates the input, builds
the step mask, carries the state between layers and applies dropout between them; what runs
each layer (the reference loop, the pure-torch fused path or the compiled kernels, all on the
very same parameters) is decided by :func:`rnnlab.nn.backends.scan_layer`, whose docstring is
the routing table.

The conversions ``from_torch``, ``to_torch``, ``from_keras`` and ``to_keras`` are methods of
every layer, attached by :mod:`rnnlab.nn.interop` (which imports this module; this module never
imports it). Importing anything from ``rnnlab.nn`` runs ``rnnlab/nn/__init__.py``, which
imports interop, so the methods are always there.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from rnnlab.nn import backends
from rnnlab.nn.backends import BACKENDS, Backend, Precision
from rnnlab.nn.cells import Cell, GRUCell, LSTMCell, LSTMState, RNNCell
from rnnlab.nn.dropout import dropout
from rnnlab.nn.fold import fold_input
from rnnlab.nn.mincells import MinCell
from rnnlab.nn.validation import check_input, check_state, make_mask
from rnnlab.nn.variant_gru import GRU_VARIANT_OPTIONS, VariantGRUCell
from rnnlab.nn.variants import VARIANT_OPTIONS, CellNoise, VariantLSTMCell, layer_noise
from rnnlab.nn.xlstm import MLSTMCell, SLSTMCell

__all__ = ["RNN", "LSTM", "GRU", "BACKENDS", "Bf16Precision", "RecurrentLayer"]


class RecurrentLayer(nn.Module):
    """The base class of rnnlab's recurrent layers (RNN, LSTM, GRU): construction,
    validation, masking, stacking and the backend a call routes to.

    Subclasses set ``cell_type`` and say how a state is made and split (``_zero_state``,
    ``_cell_state``, ``_stack_states``). Code outside :mod:`rnnlab.nn` that needs "any rnnlab
    recurrent layer" (inspect, export, the classifiers) tests against this class.
    """

    cell_type: type[Cell] | type[MinCell] | type[SLSTMCell] | type[MLSTMCell]
    state_type: type | None = None  # a named tuple of states other than LSTMState (xLSTM's)
    precision: Precision = "fp32"  # LSTM, MinGRU and MinLSTM have a bf16 mode

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        backend: Backend = "auto",
        variants: tuple[type, dict[str, object]] | None = None,
        **cell_kwargs: float | int | str,
    ) -> None:
        super().__init__()
        # variants (LSTM, GRU): (the variant cell, each variant option's "off" value); the
        # options in cell_kwargs that are on make the layer build that cell instead
        self.variant_options: dict[str, object] = {}
        if variants is not None:
            variant_cell, off = variants
            options = {k: cell_kwargs.pop(k) for k in off}
            self.variant_options = {k: v for k, v in options.items() if v != off[k]}
            if self.variant_options:
                self.cell_type = variant_cell
                cell_kwargs.update(self.variant_options)
        name = type(self).__name__
        if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f"{name} expected num_layers to be a positive int, got {num_layers!r}")
        if not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"{name} expected dropout in [0, 1), got {dropout!r}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bidirectional = bool(bidirectional)
        self.num_directions = 2 if bidirectional else 1
        self.dropout = float(dropout)
        self.backend = backend
        D = self.num_directions
        self.output_size = int(cell_kwargs.get("proj_size") or hidden_size)  # R: P if projected
        sizes = [input_size] + [D * self.output_size] * (num_layers - 1)  # each layer's input
        # built in this order (layer by layer, forwards then backwards): it decides which
        # random numbers each cell's initialisation draws, so seeded runs stay reproducible
        self.cells = nn.ModuleList(
            self.cell_type(size, hidden_size, **cell_kwargs) for size in sizes for _ in range(D)
        )

    @property
    def backend(self) -> Backend:
        return self._backend

    @backend.setter
    def backend(self, value: Backend) -> None:
        if value not in BACKENDS:
            raise ValueError(f"{type(self).__name__} expected backend in {BACKENDS}, got {value!r}")
        self._backend = value

    def cell(self, layer: int, direction: int = 0) -> Cell | MinCell:
        """The cell of ``layer`` (0-based) and ``direction`` (0 forwards, 1 backwards)."""
        return self.cells[layer * self.num_directions + direction]

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}"
        if self.bidirectional:
            s += ", bidirectional=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        s += f", backend={self.backend!r}" + self._mode_repr()
        return s + "".join(f", {k}={v!r}" for k, v in self.variant_options.items())

    def _mode_repr(self) -> str:
        """A subclass's own settings in :meth:`extra_repr`, before the variant options."""
        return ""

    def zero_state(self, batch_size: int) -> Tensor | tuple:
        """The state before any step for ``batch_size`` sequences, in the parameters' dtype and
        device: (L*D, B, H) zeros, or the layer's named tuple of them (LSTMState, SLSTMState,
        MLSTMState), as ``forward`` makes when given ``state=None``."""
        like = self.cells[0].weight_ih
        return self._zero_state(like.new_zeros(batch_size, 1, self.input_size))

    # -- state helpers: LSTM and the xLSTM layers make their own zero state ---------------------
    def _state_shapes(self, B: int) -> dict[str, tuple[int, ...]] | None:
        """Each field's shape of a ``state_type`` state (None: (L*D, B, H) for every field)."""
        return None

    def _zero_state(self, x: Tensor) -> Tensor | LSTMState:
        LD, B, H = self.num_layers * self.num_directions, x.shape[0], self.hidden_size
        return x.new_zeros(LD, B, H)

    def _cell_state(self, state: Tensor | tuple, k: int) -> Tensor | tuple:
        """Layer-direction ``k`` of a stacked state: every field of a named tuple indexed."""
        if isinstance(state, tuple):  # LSTMState, SLSTMState, MLSTMState
            return type(state)(*(field[k] for field in state))
        return state[k]

    def _stack_states(self, states: list) -> Tensor | tuple:
        """The inverse of :meth:`_cell_state`: each field stacked over layer-directions."""
        if isinstance(states[0], tuple):
            return type(states[0])(*(torch.stack(f) for f in zip(*states, strict=True)))
        return torch.stack(states)

    # -- forward --------------------------------------------------------------------------------
    def resolve_backend(
        self, return_gates: bool = False, x: Tensor | None = None, backend: Backend | None = None
    ) -> Literal["compiled", "fused", "reference", "torch"]:
        """The backend a call on ``x`` (default: a CPU tensor of the parameters' dtype) with
        ``backend`` (None: the layer's own) would use: see
        :func:`rnnlab.nn.backends.resolve_backend` and the routing table of
        :func:`rnnlab.nn.backends.scan_layer`. A forced backend that cannot run the call
        raises, naming the cause and the fix."""
        if x is None:
            x = self.cells[0].weight_ih
        backend = self.backend if backend is None else backend
        return backends.resolve_backend(self.cells[0], x, backend, return_gates=return_gates)

    def forward(
        self,
        x: Tensor,
        state: Tensor | LSTMState | None = None,
        lengths: Tensor | None = None,
        mask: Tensor | None = None,
        padding: Literal["post", "pre"] = "post",
        return_gates: bool = False,
        backend: Backend | None = None,
        precision: Precision | None = None,
        noise: list[CellNoise | None] | None = None,
        input_projection: tuple[Tensor, Tensor | None] | None = None,
    ):
        """Run the stack over a batch of sequences.

        Args:
            x: (B, T, I) floating-point input, batch first.
            state: initial state, (L*D, B, H) (an ``LSTMState`` of two such for LSTM); zeros if
                None. Index ``layer * D + direction``, as torch.
            lengths: (B,) integer number of real steps per sequence, 1..T. Padded steps neither
                change the state nor produce output (their output is zero), so the final state
                is each sequence's state at its own last real step, and the backward direction
                starts at that step.
            mask: (B, T) bool, True at real steps; an alternative to ``lengths``.
            padding: where ``lengths`` puts the padding: ``"post"`` (real steps first, torch's
                packed convention) or ``"pre"`` (padding first, the default of Keras's
                ``pad_sequences``).
            return_gates: also return, per layer and direction, every step's gates. They come
                from the reference loop on the same parameters in float32, whatever the layer's
                ``backend`` and ``precision`` (the first row of the routing table).
            backend: this call's backend (see :data:`rnnlab.nn.backends.Backend`); None uses the
                layer's own. Options travel with the call: nothing on the layer changes.
            precision: this call's precision, ``"fp32"`` or ``"bf16"`` (LSTM's compiled
                kernels, MinGRU's and MinLSTM's parallel path); None uses the layer's own.
            noise: an LSTM or GRU with ``recurrent_dropout`` or ``zoneout``: one
                :class:`~rnnlab.nn.variants.CellNoise` (or None) per layer and direction, index
                ``layer * D + direction``, used instead of the masks the layer would draw in
                training (and applied in eval mode too); e.g. a test's or Keras's masks. None:
                fresh masks in training (the cell's ``sample_noise``), none in eval.
            input_projection: ``(weight (I, K), bias (I,) or None)`` of a Linear(K, I) with no
                activation before the layer; x is then (B, T, K). Folded into the first
                layer's input weights (:mod:`rnnlab.nn.fold`): the same outputs and gradients as
                running the Linear first, with fewer FLOPs.

        Returns:
            ``(output, state)``: output (B, T, D*H), the last layer's hidden states (both
            directions concatenated); state the final state, shaped as the ``state`` argument.
            With ``return_gates=True``, ``(output, state, gates)`` where ``gates[layer][direction]``
            maps a name (LSTM: i, f, g, o, c, h; GRU: r, z, n, h; RNN: h; MinGRU: z, h_tilde, h;
            MinLSTM: f, i, h_tilde, h) to a (B, T, H) tensor, zero at padded steps.
        """
        name = type(self).__name__
        cells = list(self.cells)
        if input_projection is None:
            check_input(name, x, self.input_size)
        else:  # checks x and the projection, then folds it (or applies it)
            x, cells = fold_input(name, cells, self.num_directions, x, input_projection)
        x = backends.autocast_input(x, cells[0])
        B, T, _ = x.shape
        state = self._zero_state(x) if state is None else state
        D = self.num_directions
        LD, H = self.num_layers * D, self.hidden_size
        shapes = self._state_shapes(B)
        state = check_state(
            name,
            state,
            x,
            LD,
            H,
            pair=issubclass(self.cell_type, (LSTMCell, VariantLSTMCell)),
            state_type=LSTMState if shapes and self.state_type is None else self.state_type,
            shapes=shapes,
        )
        step_mask = make_mask(name, lengths, mask, padding, B, T, x.device)  # (B, T) bool or None

        call = {
            "backend": self.backend if backend is None else backend,
            "precision": self.precision if precision is None else precision,
            "return_gates": return_gates,
        }
        states = [self._cell_state(state, k) for k in range(LD)]  # per layer and direction
        if not return_gates and noise is None:  # the whole stack in one call of torch's op?
            between = bool(self.dropout and self.training and self.num_layers > 1)
            args = (cells, self.num_layers, x, state, states, step_mask)
            whole = backends.scan_stack(*args, between=between, **call)
            if whole is not None:
                return whole

        finals, trace = [], []
        layer_input = x  # (B, T, I) then (B, T, D*H)
        for layer in range(self.num_layers):
            ks = range(layer * D, (layer + 1) * D)  # this layer's cells: forwards, backwards
            scan = backends.scan_layer(
                [cells[k] for k in ks],
                layer_input,
                [states[k] for k in ks],
                step_mask,
                **call,
                noise=layer_noise(name, noise, self.cells, ks, self.training, (B, T), x),
            )
            layer_input = scan.output  # (B, T, D*H)
            finals += scan.finals
            trace.append(scan.gates)
            if self.dropout and self.training and layer < self.num_layers - 1:
                layer_input = dropout(layer_input, self.dropout, training=True)
        final_state = self._stack_states(finals)
        if return_gates:
            return layer_input, final_state, trace
        return layer_input, final_state


class RNN(RecurrentLayer):
    """Vanilla RNN layer (stack of :class:`rnnlab.nn.cells.RNNCell`), batch first.

    ``RNN(input_size, hidden_size, num_layers=1, bidirectional=False, dropout=0.0,
    backend="auto")``; ``forward(x, state=None, lengths=None, mask=None, padding="post",
    return_gates=False, backend=None, precision=None) -> (output, h_n)``, h_n (L*D, B, H). See
    :meth:`forward` for the shapes.

    Backends: ``"reference"`` loops over the cell; ``"fused"`` runs
    :func:`rnnlab.nn.backends.fused.rnn` (one GEMM for every step's input projection,
    hand-written backpropagation through time); ``"torch"`` runs ``torch.rnn_tanh`` (oneDNN,
    cuDNN) on the same parameters, unpadded batches only; ``"auto"`` uses the fused path
    except when ``return_gates=True``. The vanilla RNN has no compiled kernel
    (``backend="compiled"`` raises). The fused path's backward cannot itself be differentiated:
    use ``"reference"`` for double backward. The routing table is
    :func:`rnnlab.nn.backends.scan_layer`'s docstring.
    """

    cell_type = RNNCell


class GRU(RecurrentLayer):
    """GRU layer (stack of :class:`rnnlab.nn.cells.GRUCell`, torch/cuDNN convention), batch first.

    Same arguments and returns as :class:`RNN`; state h_n (L*D, B, H). Backends as
    :class:`LSTM`'s: ``"auto"`` takes the compiled C++ kernels (:mod:`rnnlab.nn.backends._ext`)
    where they can run, else the pure-torch ``"fused"`` path, and the reference loop for
    ``return_gates``; ``"torch"`` runs ``torch.gru`` on the same parameters (``bias_hn`` as
    torch's ``b_hn``, zeros for its ``b_hr`` and ``b_hz``); no bf16 mode.

    Keyword-only variants (:mod:`rnnlab.nn.variant_gru`, equations there): ``layer_norm``
    (Ba et al. 2016), ``recurrent_dropout`` (Keras's, one mask per sequence on h_{t-1}) and
    ``zoneout`` (Krueger et al. 2017, one rate). Any of them builds
    :class:`~rnnlab.nn.variant_gru.VariantGRUCell` s, run by the reference loop, the fused
    path and their own compiled kernel (``_ext/gru_variant.cpp``, which ``"auto"`` takes).
    ``torch`` runs a variant only without LayerNorm and without masks (in eval mode).
    """

    cell_type = GRUCell

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        backend: Backend = "auto",
        *,
        layer_norm: bool = False,
        recurrent_dropout: float = 0.0,
        zoneout: float = 0.0,
    ) -> None:
        super().__init__(
            input_size,
            hidden_size,
            num_layers=num_layers,
            bidirectional=bidirectional,
            dropout=dropout,
            backend=backend,
            variants=(VariantGRUCell, GRU_VARIANT_OPTIONS),
            layer_norm=layer_norm,
            recurrent_dropout=recurrent_dropout,
            zoneout=zoneout,
        )


class Bf16Precision:
    """The ``precision`` of a layer whose GEMMs can take bf16 operands (LSTM, minGRU, minLSTM):
    "fp32" or "bf16", checked when set and shown in the layer's repr."""

    _precision: Precision

    @property
    def precision(self) -> Precision:
        return self._precision

    @precision.setter
    def precision(self, value: Precision) -> None:
        if value not in ("fp32", "bf16"):
            name = type(self).__name__
            raise ValueError(f"{name} expected precision 'fp32' or 'bf16', got {value!r}")
        self._precision = value

    def _mode_repr(self) -> str:
        return ", precision='bf16'" if self.precision == "bf16" else ""


class LSTM(Bf16Precision, RecurrentLayer):
    """LSTM layer (stack of :class:`rnnlab.nn.cells.LSTMCell`), batch first.

    ``LSTM(input_size, hidden_size, num_layers=1, bidirectional=False, dropout=0.0,
    forget_bias=1.0, backend="auto", precision="fp32")``; ``forward(x, state=None, lengths=None,
    mask=None, padding="post", return_gates=False, backend=None, precision=None) -> (output,
    LSTMState(h, c))``, h and c each
    (L*D, B, H). ``dropout`` applies to the outputs of every layer but the last, in training.

    An LSTM from I to H units has 4H(I + H + 1) parameters per direction: ``LSTM(8, 256)`` has
    271,360 and ``LSTM(256, 256)`` 525,312, as in Keras.

    Backends: ``"reference"`` loops over :class:`~rnnlab.nn.cells.LSTMCell`; ``"fused"`` runs
    :func:`rnnlab.nn.backends.fused.lstm` (one GEMM for every step's input projection, one
    recurrent GEMM per step, hand-written backpropagation through time whose weight gradients
    are single GEMMs over all steps); ``"compiled"`` runs the same algorithm with each time loop
    in C++ (:mod:`rnnlab.nn.backends.compiled`: float32/float64 on an AVX-512 CPU, built on
    first use); ``"torch"`` runs ``torch.lstm`` (oneDNN on the CPU, cuDNN on CUDA) on the same
    parameters with torch's second bias zero, for unpadded batches; the reference loop runs
    whenever ``return_gates=True`` (only it records gates), whatever the backend; ``"auto"``
    otherwise picks ``"compiled"`` where it can run, else ``"fused"``. Which compiled kernel runs
    (training, inference, both directions at once) is in the routing table of
    :func:`rnnlab.nn.backends.scan_layer`. The fast backwards are not themselves
    differentiable: use ``"reference"`` for double backward (e.g. gradient penalties).

    ``precision="bf16"`` (or running under ``torch.autocast("cpu", dtype=torch.bfloat16)``)
    runs the compiled kernels' GEMMs on bf16 operands (avx512_bf16) while the parameters, the
    gates, the cell state c and the outputs stay float32
    (:func:`rnnlab.nn.backends.dispatch.use_bf16`); forcing it where the compiled kernels
    cannot run raises. ``return_gates=True`` records the gates of the float32 reference loop.
    ``backend`` and ``precision`` given to :meth:`forward` apply to that call only.
    """

    cell_type = LSTMCell

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        forget_bias: float = 1.0,
        backend: Backend = "auto",
        precision: Precision = "fp32",
        *,
        proj_size: int = 0,
        layer_norm: bool = False,
        peepholes: bool = False,
        recurrent_dropout: float = 0.0,
        zoneout: float | tuple[float, float] = 0.0,
    ) -> None:
        super().__init__(
            input_size,
            hidden_size,
            num_layers=num_layers,
            bidirectional=bidirectional,
            dropout=dropout,
            backend=backend,
            variants=(VariantLSTMCell, VARIANT_OPTIONS),
            forget_bias=forget_bias,
            proj_size=proj_size,
            layer_norm=layer_norm,
            peepholes=peepholes,
            recurrent_dropout=recurrent_dropout,
            zoneout=zoneout,
        )
        self.forget_bias = float(forget_bias)
        self.proj_size = self.output_size if proj_size else 0
        self.precision = precision

    def _state_shapes(self, B: int) -> dict[str, tuple[int, ...]] | None:
        if not self.proj_size:
            return None
        LD = self.num_layers * self.num_directions
        return {"h": (LD, B, self.proj_size), "c": (LD, B, self.hidden_size)}

    def _zero_state(self, x: Tensor) -> LSTMState:
        c = super()._zero_state(x)  # (L*D, B, H)
        h = c[..., : self.output_size].clone() if self.proj_size else torch.zeros_like(c)
        return LSTMState(h, c)
