"""int8 inference modules: a trained model's recurrent layers and Linear layers with
dynamically quantized int8 matrix products.

Shape legend: B batch, T time, I input features, H hidden units, D directions, L layers,
N output features, V vocabulary size.

:func:`quantize_model` copies a model and swaps, wherever they sit in it,

* every rnnlab :class:`~rnnlab.nn.RNN`, :class:`~rnnlab.nn.LSTM` and :class:`~rnnlab.nn.GRU`
  for a :class:`QuantizedRecurrent` (same ``forward`` arguments and returns, padding masks,
  both directions and carried state included; the kernels are
  :mod:`rnnlab.nn.backends.quantized`'s), and
* every ``torch.nn.Linear`` (a classifier's head and projection, a language model's decoder)
  for a :class:`QuantizedLinear`.

Everything else stays float32: embeddings (a table lookup, no product), attention scores,
pooling, softmax and the gate arithmetic. A language model's ``forward`` with ``targets``
fuses the decoder and the loss on the float weight (:mod:`rnnlab.nn.decoder_loss`); its int8
copy (:class:`Int8LanguageModel`) takes the logits from the int8 decoder instead, so the loss
measured is the int8 model's. The cells of 2024 (minGRU, minLSTM, sLSTM, mLSTM) have no int8
path: a model holding one is refused, naming it.

The int8 values are buffers (``weight_ih_int8``, ``weight_ih_scale``, ... and
``weight_int8``, ``weight_scale``, ``bias``), so ``state_dict()`` holds the whole int8 model;
:func:`load_int8_state` loads one into a model made by :func:`quantize_model` and packs the
weights for the kernels again. These modules are for inference only: their forward runs under
``torch.no_grad`` and they record no gates.
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
from torch import Tensor, nn

from rnnlab.nn.backends import quantized as kernels
from rnnlab.nn.backends.quantized import Int8Weight, QuantizationError, default_engine
from rnnlab.nn.cells import GRUCell, LSTMCell, LSTMState, RNNCell
from rnnlab.nn.decoder_loss import _softmax_xent_
from rnnlab.nn.language_model import LanguageModel
from rnnlab.nn.layers import RecurrentLayer
from rnnlab.nn.validation import check_input, check_state, make_mask

__all__ = [
    "Int8LanguageModel",
    "QuantizationError",
    "QuantizedLinear",
    "QuantizedRecurrent",
    "default_engine",
    "int8_layers",
    "is_quantized",
    "load_int8_state",
    "quantize_model",
]

_CELLS = {LSTMCell: "lstm", GRUCell: "gru", RNNCell: "rnn"}
_SCANS = {"lstm": kernels.lstm, "gru": kernels.gru, "rnn": kernels.rnn}


class QuantizedLinear(nn.Module):
    """``torch.nn.Linear`` with an int8 weight: ``forward(x (..., K)) -> (..., N)`` through
    ``torch.ops.quantized.linear_dynamic`` (the activation quantized per call, the bias added
    in float32). Buffers ``weight_int8`` (N, K) int8, ``weight_scale`` (N,) and ``bias`` (N,)
    float32 (absent without a bias). ``weight`` is the dequantized weight (N, K), for code that
    asks a layer its device or shape; the product itself never uses it."""

    def __init__(self, linear: nn.Linear, per_channel: bool, engine: str) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.per_channel, self.engine = per_channel, engine
        packed = Int8Weight.quantize(linear.weight, linear.bias, per_channel, engine)
        self.register_buffer("weight_int8", packed.q)
        self.register_buffer("weight_scale", packed.scale)
        if packed.bias is not None:
            self.register_buffer("bias", packed.bias)
        else:
            self.bias = None
        self._int8 = packed

    def repack(self) -> None:
        """Pack the buffers again for the kernel (after a ``load_state_dict``)."""
        self._int8 = Int8Weight.from_int8(
            self.weight_int8, self.weight_scale, self.bias, self.per_channel, self.engine
        )

    @property
    def weight(self) -> Tensor:
        return self._int8.dequantize()  # (N, K) float32

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, int8 {'per-channel' if self.per_channel else ''}"
            f"{'per-tensor' if not self.per_channel else ''}, engine={self.engine!r}"
        )

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.in_features or not x.is_floating_point():
            raise ValueError(
                f"QuantizedLinear expected float input of shape (..., {self.in_features}), got "
                f"{x.dtype} {tuple(x.shape)}"
            )
        with torch.no_grad():
            return self._int8(x.float())  # (..., N)


class _QuantizedCell(nn.Module):
    """One cell's int8 weights: ``weight_ih_int8`` (G*H, I) and ``weight_hh_int8`` (G*H, H)
    with their scales (G*H,), the float32 ``bias`` (G*H,) and, for a GRU, ``bias_hn`` (H,);
    ``weights``, the pair of products the cell's scan takes."""

    def __init__(self, cell: LSTMCell | GRUCell | RNNCell, per_channel: bool, engine: str) -> None:
        super().__init__()
        self.cell_name = _CELLS[type(cell)]
        self.per_channel, self.engine = per_channel, engine
        self.hidden_size = cell.hidden_size
        w_ih = Int8Weight.quantize(cell.weight_ih, None, per_channel, engine)
        w_hh = Int8Weight.quantize(cell.weight_hh, None, per_channel, engine)
        self.register_buffer("weight_ih_int8", w_ih.q)
        self.register_buffer("weight_ih_scale", w_ih.scale)
        self.register_buffer("weight_hh_int8", w_hh.q)
        self.register_buffer("weight_hh_scale", w_hh.scale)
        self.register_buffer("bias", cell.bias.detach().float().clone())
        if isinstance(cell, GRUCell):
            self.register_buffer("bias_hn", cell.bias_hn.detach().float().clone())
        else:
            self.bias_hn = None
        self.repack()

    def repack(self) -> None:
        """Pack the buffers for the kernels: the bias rides with W_ih; a GRU's b_hn rides with
        the n block of W_hh (zeros for r and z), where the reset gate multiplies it; an LSTM's
        pair takes the kernel's form (:func:`rnnlab.nn.backends.quantized.lstm_weights`)."""
        hh_bias = None
        if self.bias_hn is not None:
            H = self.hidden_size
            hh_bias = torch.cat([self.bias_hn.new_zeros(2 * H), self.bias_hn])  # (3H,)
        args = (self.per_channel, self.engine)
        w_ih = Int8Weight.from_int8(self.weight_ih_int8, self.weight_ih_scale, self.bias, *args)
        w_hh = Int8Weight.from_int8(self.weight_hh_int8, self.weight_hh_scale, hh_bias, *args)
        self.weights = (
            kernels.lstm_weights(w_ih, w_hh) if self.cell_name == "lstm" else (w_ih, w_hh)
        )

    def dequantized(self) -> tuple[Tensor, Tensor]:
        """(W_ih (G*H, I), W_hh (G*H, H)) float32: the weights the int8 values stand for."""
        w_ih = self.weight_ih_int8.float() * self.weight_ih_scale[:, None]
        return w_ih, self.weight_hh_int8.float() * self.weight_hh_scale[:, None]


class QuantizedRecurrent(nn.Module):
    """The int8 twin of an rnnlab RNN, LSTM or GRU layer (any number of layers, one or two
    directions), with its ``forward``: ``(x (B, T, I), state=None, lengths=None, mask=None,
    padding="post") -> (output (B, T, D*H), state)``, the state (L*D, B, H) or an
    ``LSTMState`` of two. Padded steps carry the state and output zero, as in the float layer.

    Per layer and direction, :mod:`rnnlab.nn.backends.quantized` runs the input projection of
    all steps as one int8 product and one int8 product h_{t-1} W_hh^T per step, with the gate
    arithmetic in float32. Inference only: dropout never applies, ``return_gates=True`` is
    refused (gates come from the float32 reference loop), and so is a ``backend`` or
    ``precision`` for the call (these layers have one kernel)."""

    def __init__(self, layer: RecurrentLayer, per_channel: bool, engine: str) -> None:
        super().__init__()
        self.cell_name: Literal["lstm", "gru", "rnn"] = _CELLS[type(layer.cells[0])]
        self.input_size, self.hidden_size = layer.input_size, layer.hidden_size
        self.num_layers, self.num_directions = layer.num_layers, layer.num_directions
        self.bidirectional = layer.bidirectional
        self.per_channel, self.engine = per_channel, engine
        self.cells = nn.ModuleList(_QuantizedCell(c, per_channel, engine) for c in layer.cells)

    def extra_repr(self) -> str:
        s = f"{self.cell_name}, {self.input_size}, {self.hidden_size}, "
        s += f"num_layers={self.num_layers}, bidirectional={self.bidirectional}, "
        return s + f"int8 {'per-channel' if self.per_channel else 'per-tensor'}"

    def repack(self) -> None:
        for cell in self.cells:
            cell.repack()

    def zero_state(self, batch_size: int, dtype: torch.dtype = torch.float32) -> Tensor | LSTMState:
        """Zeros (L*D, B, H), or an ``LSTMState`` of two, as the float layer's."""
        LD = self.num_layers * self.num_directions
        h = torch.zeros(LD, batch_size, self.hidden_size, dtype=dtype)
        return LSTMState(h, torch.zeros_like(h)) if self.cell_name == "lstm" else h

    def forward(
        self,
        x: Tensor,
        state: Tensor | LSTMState | None = None,
        lengths: Tensor | None = None,
        mask: Tensor | None = None,
        padding: Literal["post", "pre"] = "post",
        return_gates: bool = False,
        backend: str | None = None,
        precision: str | None = None,
    ):
        name = f"QuantizedRecurrent({self.cell_name})"
        if return_gates:
            raise QuantizationError(
                f"{name} expected return_gates=False, got True: int8 layers record no gates "
                "(they come from the float32 reference loop); use the float model"
            )
        if backend is not None or precision is not None:
            raise QuantizationError(
                f"{name} expected no backend or precision (int8 layers have one kernel), got "
                f"backend={backend!r}, precision={precision!r}"
            )
        check_input(name, x, self.input_size)
        B, T, _ = x.shape
        D, H = self.num_directions, self.hidden_size
        LD = self.num_layers * D
        lstm = self.cell_name == "lstm"
        state = self.zero_state(B, x.dtype) if state is None else state
        state = check_state(name, state, x, LD, H, pair=lstm)
        x = x.float()  # the kernels run in float32, whatever float type comes
        state = LSTMState(state.h.float(), state.c.float()) if lstm else state.float()
        step_mask = make_mask(name, lengths, mask, padding, B, T, x.device)  # (B, T) or None
        scan = _SCANS[self.cell_name]
        finals = []
        layer_input = x  # (B, T, I), then (B, T, D*H)
        with torch.no_grad():
            for layer in range(self.num_layers):
                outs = []
                for d in range(D):
                    k = layer * D + d
                    cell = self.cells[k]
                    s = LSTMState(state.h[k], state.c[k]) if lstm else state[k]  # (B, H)
                    out, final = scan(layer_input, s, step_mask, cell.weights, reverse=d == 1)
                    outs.append(out)  # (B, T, H)
                    finals.append(final)
                layer_input = outs[0] if D == 1 else torch.cat(outs, dim=-1)  # (B, T, D*H)
        if lstm:
            final_state = LSTMState(
                torch.stack([f.h for f in finals]), torch.stack([f.c for f in finals])
            )
        else:
            final_state = torch.stack(finals)  # (L*D, B, H)
        return layer_input, final_state


class Int8LanguageModel(LanguageModel):
    """A :class:`~rnnlab.nn.LanguageModel` whose layers :func:`quantize_model` made int8.

    Only ``forward`` with ``targets`` differs: the float model fuses its decoder into the loss
    on the float weight, which would leave the int8 decoder out; here the loss is the mean
    cross-entropy of the int8 decoder's logits (through the float model's softmax kernel), the
    same quantity. Generation and scoring are the float model's methods, reading the int8
    layers."""

    def forward(
        self, ids: Tensor, state=None, *, targets: Tensor | None = None
    ) -> tuple[Tensor, object]:
        if targets is not None and targets.shape != ids.shape:
            raise ValueError(
                f"LanguageModel expected targets shaped like ids {tuple(ids.shape)}, got "
                f"{tuple(targets.shape)}"
            )
        out, state = self._hidden(ids, state)  # (B, T, H)
        logits = self.decoder(out)  # (B, T, V); eval mode: no dropout
        if targets is None:
            return logits, state
        # the float model's softmax cross-entropy (one compiled pass where the extension
        # runs), on the int8 logits, which it overwrites; the same value as cross_entropy
        N = targets.numel()
        loss_sum, _ = _softmax_xent_(logits.view(N, -1), targets.flatten(), 1.0 / N)
        return loss_sum / N, state


def int8_layers(model: nn.Module) -> list[tuple[str, QuantizedLinear | QuantizedRecurrent]]:
    """``(name, module)`` of every int8 layer in ``model`` (made by :func:`quantize_model`)."""
    kinds = (QuantizedLinear, QuantizedRecurrent)
    return [(name, m) for name, m in model.named_modules() if isinstance(m, kinds)]


def is_quantized(model: nn.Module) -> bool:
    """Whether ``model`` holds int8 layers (made by :func:`quantize_model`)."""
    return bool(int8_layers(model))


def _swap(module: nn.Module, per_channel: bool, engine: str, prefix: str) -> None:
    for name, child in module.named_children():
        where = f"{prefix}{name}"
        if isinstance(child, RecurrentLayer):
            if type(child.cells[0]) not in _CELLS:
                cell = type(child.cells[0]).__name__
                why = (
                    "the variants (LayerNorm, projection, peepholes, recurrent dropout, "
                    "zoneout) have no int8 path"
                    if cell.startswith("Variant")
                    else "the cells of 2024 have no int8 path"
                )
                raise QuantizationError(
                    f"quantize_model expected recurrent layers of plain RNN, LSTM or GRU cells, "
                    f"got {type(child).__name__} at {where} ({cell}: {why})"
                )
            setattr(module, name, QuantizedRecurrent(child, per_channel, engine))
        elif isinstance(child, nn.Linear):
            setattr(module, name, QuantizedLinear(child, per_channel, engine))
        elif isinstance(child, nn.RNNBase):
            raise QuantizationError(
                f"quantize_model expected rnnlab's recurrent layers, got torch.nn."
                f"{type(child).__name__} at {where} (use torch.ao.quantization.quantize_dynamic)"
            )
        else:
            _swap(child, per_channel, engine, where + ".")


def quantize_model(
    model: nn.Module, per_channel: bool = True, engine: str | None = None
) -> nn.Module:
    """An int8 copy of ``model`` in eval mode (the model itself is not changed): its rnnlab
    RNN/LSTM/GRU layers and ``nn.Linear`` layers swapped for :class:`QuantizedRecurrent` and
    :class:`QuantizedLinear` (see the module docstring).

    Args:
        model: a float model, e.g. a trained run's.
        per_channel: one weight scale per output row (True) or per matrix.
        engine: ``"onednn"`` or ``"fbgemm"``; None: :func:`default_engine`.

    Raises:
        QuantizationError: a recurrent layer of another cell, a torch.nn recurrent layer, no
            layer to quantize, or an engine torch does not have.
    """
    engine = engine or default_engine()
    if engine not in kernels.ENGINES:
        raise QuantizationError(
            f"quantize_model expected an engine in {kernels.ENGINES}, got {engine!r}"
        )
    if isinstance(model, (RecurrentLayer, nn.Linear)):
        holder = nn.Module()
        holder.add_module("layer", model)
        return quantize_model(holder, per_channel, engine).layer
    quantized = copy.deepcopy(model).eval()
    _swap(quantized, bool(per_channel), engine, "")
    if not is_quantized(quantized):
        raise QuantizationError(
            f"quantize_model expected a model with rnnlab RNN/LSTM/GRU or nn.Linear layers, got "
            f"{type(model).__name__} with none"
        )
    if type(quantized) is LanguageModel:
        quantized.__class__ = Int8LanguageModel  # the same module, its loss through int8
    return quantized


def load_int8_state(model: nn.Module, tensors: dict[str, Tensor]) -> None:
    """Load an int8 model's ``state_dict()`` into ``model`` (made by :func:`quantize_model`
    from a model of the same architecture), strictly, and pack its weights again."""
    model.load_state_dict(tensors, strict=True)
    for _, module in int8_layers(model):
        module.repack()
