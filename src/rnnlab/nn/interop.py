"""Copy recurrent layers between rnnlab, ``torch.nn`` and Keras 3, weights and all.

Shape legend: B batch, T time, I input features, H hidden units, D directions, L layers.

The public entry points are the layer methods ``LSTM.from_torch(m)``, ``lstm.to_torch()`` and
``LSTM.from_keras(layer)`` (likewise ``GRU`` and ``RNN``); they call the functions here.

Biases. rnnlab keeps one bias per gate, torch two (``b_ih`` and ``b_hh``), which only ever
appear as a sum, so ``bias = b_ih + b_hh``. The exception is the GRU candidate, whose recurrent
bias sits inside the reset gate's product: rnnlab's ``GRUCell`` keeps it apart as ``bias_hn``,
so ``bias = b_ih + [b_hr, b_hz, 0]`` and ``bias_hn = b_hn``. ``to_torch`` writes ``b_ih = bias``
and ``b_hh = 0`` (GRU: ``b_hh = [0, 0, bias_hn]``). A torch module built with ``bias=False``
becomes an rnnlab layer whose (trainable) biases start at zero.

Time layout. rnnlab layers are batch first. ``from_torch`` accepts ``batch_first=False``
modules too: the weights do not depend on the layout, but the converted layer then expects
(B, T, I) input, so transpose time-major input with ``x.transpose(0, 1)``. ``to_torch`` returns
a ``batch_first=True`` module.

Keras stores each kernel transposed, (I, G*H) and (H, G*H). Its LSTM gate order i, f, c, o is
rnnlab's i, f, g, o; its GRU order is z, r, h, which is reordered into rnnlab's r, z, n. Keras
training-time options with no rnnlab counterpart (``dropout`` and ``recurrent_dropout`` inside
the layer, ``stateful``, ``unroll``) do not change the weights or the inference output and are
not carried over.
"""

from __future__ import annotations

from itertools import pairwise
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from torch import Tensor, nn

from rnnlab.nn.cells import GRUCell, LSTMCell, RNNCell, _Cell

if TYPE_CHECKING:
    from rnnlab.nn.layers import _RecurrentLayer

__all__ = ["from_torch", "to_torch", "from_keras"]

Layer = TypeVar("Layer", bound="_RecurrentLayer")

_TORCH_TYPES: dict[type[_Cell], type[nn.RNNBase]] = {
    LSTMCell: nn.LSTM,
    GRUCell: nn.GRU,
    RNNCell: nn.RNN,
}
_KERAS_NAMES = {LSTMCell: "LSTM", GRUCell: "GRU", RNNCell: "SimpleRNN"}


# -- torch ------------------------------------------------------------------------------------
def from_torch(cls: type[Layer], module: nn.RNNBase, backend: str = "auto") -> Layer:
    """An rnnlab ``cls`` (RNN, LSTM or GRU) that computes what ``module`` computes, on the
    module's device and dtype, in the module's train/eval mode. See the module docstring for
    biases and the time layout. Raises TypeError for the wrong module type and ValueError for
    what rnnlab cannot express (``proj_size > 0``, a ``relu`` RNN)."""
    name = f"{cls.__name__}.from_torch"
    torch_type = _TORCH_TYPES[cls.cell_type]
    if not isinstance(module, torch_type):
        raise TypeError(
            f"{name} expected a torch.nn.{torch_type.__name__}, got {type(module).__name__}"
        )
    if getattr(module, "proj_size", 0) > 0:
        raise ValueError(
            f"{name} expected proj_size=0 (rnnlab LSTMs have no projection), "
            f"got proj_size={module.proj_size}"
        )
    if getattr(module, "nonlinearity", "tanh") != "tanh":
        raise ValueError(
            f"{name} expected nonlinearity='tanh' (rnnlab's RNN is tanh only), "
            f"got {module.nonlinearity!r}"
        )
    ref = module.weight_ih_l0
    layer = cls(
        module.input_size,
        module.hidden_size,
        num_layers=module.num_layers,
        bidirectional=module.bidirectional,
        dropout=module.dropout,
        backend=backend,
    ).to(device=ref.device, dtype=ref.dtype)
    for k, cell in enumerate(layer.cells):
        suffix = _torch_suffix(k, layer.num_directions)
        w_ih = getattr(module, f"weight_ih{suffix}")  # (G*H, I)
        w_hh = getattr(module, f"weight_hh{suffix}")  # (G*H, H)
        zeros = torch.zeros_like(cell.bias)
        b_ih = getattr(module, f"bias_ih{suffix}") if module.bias else zeros  # (G*H,)
        b_hh = getattr(module, f"bias_hh{suffix}") if module.bias else zeros  # (G*H,)
        _load_cell(cell, w_ih, w_hh, b_ih, b_hh)
    return layer.train(module.training)


def to_torch(layer: _RecurrentLayer) -> nn.RNNBase:
    """A ``batch_first=True`` torch.nn.LSTM / GRU / RNN (tanh) with ``layer``'s weights, device,
    dtype and train/eval mode: ``b_ih = bias``, ``b_hh = 0`` (GRU: ``[0, 0, bias_hn]``)."""
    ref = layer.cells[0].weight_ih
    module = _TORCH_TYPES[type(layer).cell_type](
        layer.input_size,
        layer.hidden_size,
        num_layers=layer.num_layers,
        bias=True,
        batch_first=True,
        # torch warns about dropout on a single layer, where both libraries ignore it
        dropout=layer.dropout if layer.num_layers > 1 else 0.0,
        bidirectional=layer.bidirectional,
        device=ref.device,
        dtype=ref.dtype,
    )
    with torch.no_grad():
        for k, cell in enumerate(layer.cells):
            suffix = _torch_suffix(k, layer.num_directions)
            getattr(module, f"weight_ih{suffix}").copy_(cell.weight_ih)
            getattr(module, f"weight_hh{suffix}").copy_(cell.weight_hh)
            getattr(module, f"bias_ih{suffix}").copy_(cell.bias)
            b_hh = getattr(module, f"bias_hh{suffix}")  # (G*H,)
            b_hh.zero_()
            if isinstance(cell, GRUCell):
                b_hh[2 * cell.hidden_size :].copy_(cell.bias_hn)
    return module.train(layer.training)


def _torch_suffix(k: int, num_directions: int) -> str:
    """torch's parameter suffix for cell ``k = layer * D + direction``: ``_l1_reverse``."""
    layer, direction = divmod(k, num_directions)
    return f"_l{layer}" + ("_reverse" if direction else "")


def _load_cell(cell: _Cell, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor, b_hh: Tensor) -> None:
    """Copy torch-layout weights (rows in rnnlab's gate order, two biases) into ``cell``."""
    H = cell.hidden_size
    with torch.no_grad():
        cell.weight_ih.copy_(w_ih)
        cell.weight_hh.copy_(w_hh)
        if isinstance(cell, GRUCell):
            cell.bias.copy_(b_ih)
            cell.bias[: 2 * H] += b_hh[: 2 * H]  # r and z: the two biases only ever add
            cell.bias_hn.copy_(b_hh[2 * H :])  # n: stays inside r * (W_hn h + b_hn)
        else:
            cell.bias.copy_(b_ih + b_hh)


# -- Keras --------------------------------------------------------------------------------------
def from_keras(cls: type[Layer], source: Any, backend: str = "auto") -> Layer:
    """An rnnlab ``cls`` with the weights of built Keras 3 layers (``LSTM``, ``GRU`` or
    ``SimpleRNN`` for rnnlab's LSTM, GRU, RNN), on the CPU in the Keras weights' dtype.

    ``source`` is one such layer, a ``Bidirectional`` of one (``merge_mode="concat"``), a list
    of them (a stack; ``Dropout`` layers may sit between them), or a Keras model, from which the
    consecutive run of recurrent layers is taken (layers before and after it, such as an
    Embedding or a Dense head, are not converted). Every layer of a stack must have the same
    units and direction count, and all but the last ``return_sequences=True``. Dropout between
    the layers becomes the rnnlab layer's ``dropout`` and must be the same between every pair.

    The Keras output is the rnnlab output with ``return_sequences=True`` and
    ``final_hidden(state, D)`` without (``Recurrent(layer, return_sequences)`` does the choice).

    Raises TypeError for a source that is not one of the above and ValueError for what rnnlab
    cannot express: another activation, ``go_backwards`` outside Bidirectional, a GRU with
    ``reset_after=False``, an unbuilt layer, or a stack whose layers do not chain.
    """
    import keras  # optional dependency, only needed here

    name = f"{cls.__name__}.from_keras"
    kind = _KERAS_NAMES[cls.cell_type]
    stack, dropout = _keras_stack(name, keras, source, getattr(keras.layers, kind))
    for item in stack:
        if getattr(item, "merge_mode", "concat") != "concat":
            raise ValueError(
                f"{name} expected a Bidirectional with merge_mode='concat' (rnnlab concatenates "
                f"the two directions), got merge_mode={item.merge_mode!r} in {item.name}"
            )
    directions = [_directions(item) for item in stack]  # [layer][direction] -> Keras layer
    for layers in directions:
        for direction, keras_layer in enumerate(layers):
            _check_keras_layer(name, keras, keras_layer, reverse=direction == 1)
    kernels = [[_keras_weights(keras, lay) for lay in layers] for layers in directions]
    _check_stack(name, stack, directions, [per_layer[0][0] for per_layer in kernels])
    H, D = directions[0][0].units, len(directions[0])
    input_size = kernels[0][0][0].shape[0]
    layer = cls(input_size, H, len(stack), D == 2, dropout, backend=backend)
    layer = layer.to(dtype=kernels[0][0][0].dtype)
    for cell, weights in zip(layer.cells, [w for ws in kernels for w in ws], strict=True):
        _load_cell(cell, *_keras_to_torch_layout(cell, *weights))
    return layer


def _keras_stack(name: str, keras: Any, source: Any, kind: type) -> tuple[list, float]:
    """The recurrent layers of ``source`` (each ``kind`` or Bidirectional(``kind``)) in order,
    and the dropout rate between them."""

    def recurrent(item: Any) -> bool:
        is_bidirectional = isinstance(item, keras.layers.Bidirectional)
        return isinstance(item.forward_layer if is_bidirectional else item, kind)

    expected = f"a Keras {kind.__name__}, Bidirectional({kind.__name__}), a list of them or a model"
    from_model = isinstance(source, keras.Model)
    if from_model:
        items = list(source.layers)
    elif isinstance(source, (list, tuple)):
        items = list(source)
    else:
        items = [source]
    for item in items:
        if not isinstance(item, keras.layers.Layer):
            raise TypeError(f"{name} expected {expected}, got {type(item).__name__}")
    found = [i for i, item in enumerate(items) if recurrent(item)]
    if not found:
        if not from_model and len(items) == 1:
            raise TypeError(f"{name} expected {expected}, got {type(items[0]).__name__}")
        got = [type(item).__name__ for item in items]
        raise ValueError(f"{name} expected at least one {kind.__name__} layer, got {got}")
    if not from_model and (found[0] != 0 or found[-1] != len(items) - 1):
        raise ValueError(
            f"{name} expected a list that starts and ends with a {kind.__name__} layer, "
            f"got {[type(item).__name__ for item in items]}"
        )
    run = items[found[0] : found[-1] + 1]
    if from_model and not isinstance(source, keras.Sequential):
        _check_chained(name, run)
    rates = []  # dropout between consecutive recurrent layers
    for a, b in pairwise(found):
        between = items[a + 1 : b]
        if any(not isinstance(item, keras.layers.Dropout) for item in between) or len(between) > 1:
            got = [type(item).__name__ for item in between]
            raise ValueError(
                f"{name} expected nothing or one Dropout between stacked layers, got {got} "
                f"between {items[a].name} and {items[b].name}"
            )
        rates.append(float(between[0].rate) if between else 0.0)
    if len(set(rates)) > 1:
        raise ValueError(
            f"{name} expected the same dropout between every pair of stacked layers (rnnlab "
            f"applies one rate after every layer but the last), got {rates}"
        )
    return [items[i] for i in found], (rates[0] if rates else 0.0)


def _check_chained(name: str, run: list) -> None:
    """In a functional model, each layer of the run must read the previous one's output."""
    for earlier, later in pairwise(run):
        try:
            chained = later.input is earlier.output
        except (AttributeError, ValueError) as e:  # a shared layer has no single input
            raise ValueError(f"{name} cannot tell what {later.name} reads: {e}") from e
        if not chained:
            raise ValueError(
                f"{name} expected {later.name} to read the output of {earlier.name}, "
                "got another input; pass the stacked layers as a list"
            )


def _check_stack(name: str, stack: list, directions: list, kernels: list[Tensor]) -> None:
    """Stacked layers must chain: equal units and directions, layer n > 0 reading D*H inputs,
    and every layer but the last returning sequences. ``kernels[n]`` is layer n's (I, G*H)."""
    H, D = directions[0][0].units, len(directions[0])
    for n, (item, layers) in enumerate(zip(stack, directions, strict=True)):
        expected_input = kernels[0].shape[0] if n == 0 else D * H
        got = (layers[0].units, len(layers), kernels[n].shape[0])
        if got != (H, D, expected_input):
            raise ValueError(
                f"{name} expected every layer of the stack to have {H} units, {D} direction(s) "
                f"and {expected_input} inputs, got {got[0]} units, {got[1]} direction(s) and "
                f"{got[2]} inputs at layer {n} ({item.name})"
            )
        if n < len(stack) - 1 and not item.return_sequences:
            raise ValueError(
                f"{name} expected return_sequences=True on every layer but the last of a stack, "
                f"got return_sequences=False at layer {n} ({item.name})"
            )


def _directions(item: Any) -> list:
    """[forward] or, for a Bidirectional, [forward, backward]."""
    if hasattr(item, "forward_layer"):
        return [item.forward_layer, item.backward_layer]
    return [item]


def _check_keras_layer(name: str, keras: Any, layer: Any, reverse: bool) -> None:
    """Refuse, naming the setting, what rnnlab's cells do not compute."""
    if not layer.built:
        raise ValueError(
            f"{name} expected a built Keras layer (call it on an input or build the model "
            f"first), got unbuilt {layer.name}"
        )
    if reverse != layer.go_backwards:
        where = "the backward layer of a Bidirectional" if reverse else "any other layer"
        raise ValueError(
            f"{name} expected go_backwards={reverse} for {where}, got go_backwards="
            f"{layer.go_backwards} in {layer.name}; outside Bidirectional, reverse the input "
            "in time instead"
        )
    expected = {"activation": keras.activations.tanh}
    if hasattr(layer, "recurrent_activation"):
        expected["recurrent_activation"] = keras.activations.sigmoid
    for attr, fn in expected.items():
        got = getattr(layer, attr)
        if got is not fn:
            raise ValueError(
                f"{name} expected {attr}={fn.__name__!r}, got "
                f"{getattr(got, '__name__', got)!r} in {layer.name}"
            )
    if getattr(layer, "reset_after", True) is not True:
        raise ValueError(
            f"{name} expected reset_after=True (the torch/cuDNN GRU that rnnlab implements), "
            f"got reset_after={layer.reset_after} in {layer.name}"
        )


def _keras_weights(keras: Any, layer: Any) -> tuple[Tensor, Tensor, Tensor | None]:
    """(kernel (I, G*H), recurrent_kernel (H, G*H), bias or None) as CPU tensors."""
    cell = layer.cell

    def tensor(v: Any) -> Tensor:
        return torch.from_numpy(keras.ops.convert_to_numpy(v).copy())

    bias = tensor(cell.bias) if cell.use_bias else None
    return tensor(cell.kernel), tensor(cell.recurrent_kernel), bias


def _keras_to_torch_layout(
    cell: _Cell, kernel: Tensor, recurrent: Tensor, bias: Tensor | None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Keras (kernel, recurrent_kernel, bias) -> torch (w_ih, w_hh, b_ih, b_hh), rnnlab order."""
    w_ih, w_hh = kernel.T, recurrent.T  # (G*H, I), (G*H, H)
    GH = w_ih.shape[0]
    if bias is None:
        bias = kernel.new_zeros(2, GH) if isinstance(cell, GRUCell) else kernel.new_zeros(GH)
    if not isinstance(cell, GRUCell):
        return w_ih, w_hh, bias, torch.zeros_like(bias)
    b_ih, b_hh = bias  # (3H,) each: Keras's input and recurrent biases

    def rzn(w: Tensor) -> Tensor:  # Keras stacks z, r, h; rnnlab r, z, n
        z, r, n = w.chunk(3, dim=0)
        return torch.cat([r, z, n])

    return rzn(w_ih), rzn(w_hh), rzn(b_ih), rzn(b_hh)
