"""Copy recurrent layers between rnnlab and Keras 3 (``LSTM``, ``GRU``, ``SimpleRNN``).

Shape legend: B batch, T time, I input features, H hidden units, D directions, L layers.

Keras stores each kernel transposed, (I, G*H) and (H, G*H). Its LSTM gate order i, f, c, o is
rnnlab's i, f, g, o; its GRU order is z, r, h, which is reordered into rnnlab's r, z, n. rnnlab's
GRU is the torch/cuDNN one, Keras's ``reset_after=True``, whose bias is (2, 3H): an input bias
and a recurrent bias. Keras training-time options with no rnnlab counterpart (``dropout`` and
``recurrent_dropout`` inside the layer, ``stateful``, ``unroll``) do not change the weights or
the inference output and are not carried over.

Keras is an optional dependency, imported by the functions here only. They work on any Keras 3
backend; the tests compare outputs on the torch backend (``KERAS_BACKEND=torch``).
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any, TypeVar

import torch
from torch import Tensor

from rnnlab.nn.cells import Cell, GRUCell, LSTMCell, RNNCell
from rnnlab.nn.interop.torch_modules import load_cell
from rnnlab.nn.layers import RecurrentLayer
from rnnlab.nn.variant_gru import VariantGRUCell

__all__ = ["from_keras", "to_keras"]

Layer = TypeVar("Layer", bound=RecurrentLayer)

_KERAS_NAMES = {LSTMCell: "LSTM", GRUCell: "GRU", RNNCell: "SimpleRNN"}


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
    layer = cls(
        input_size, H, num_layers=len(stack), bidirectional=D == 2, dropout=dropout, backend=backend
    )
    layer = layer.to(dtype=kernels[0][0][0].dtype)
    for cell, weights in zip(layer.cells, [w for ws in kernels for w in ws], strict=True):
        load_cell(cell, *_keras_to_torch_layout(cell, *weights))
    return layer


def to_keras(layer: RecurrentLayer, return_sequences: bool = False) -> Any:
    """Keras 3 layers with ``layer``'s weights, computing what it computes (inference).

    Each rnnlab layer of the stack becomes a Keras ``LSTM``, ``GRU`` (``reset_after=True``, the
    torch/cuDNN convention rnnlab follows) or ``SimpleRNN`` (for RNN), wrapped in
    ``Bidirectional(..., merge_mode="concat")`` when ``layer`` is bidirectional, built for
    (B, T, I) input in the weights' dtype (float32 or float64). A one-layer ``layer`` gives that
    Keras layer; a stack gives a list of them, every one but the last returning sequences, with
    ``Dropout(layer.dropout)`` between consecutive ones when ``layer.dropout`` is set: pass the
    list to ``keras.Sequential`` or call the layers in turn. ``from_keras`` reads any of these
    back, weights bit for bit.

    ``return_sequences`` is the last Keras layer's: True gives rnnlab's output (B, T, D*H),
    False (Keras's default) ``final_hidden(state, D)`` (B, D*H), as
    ``Recurrent(layer, return_sequences)`` does.

    Weights: Keras ``kernel = weight_ih.T`` (I, G*H), ``recurrent_kernel = weight_hh.T``
    (H, G*H), ``bias = bias``; for GRU the gate blocks are reordered to Keras's z, r, h and the
    bias is (2, 3H): the input bias ``bias`` and the recurrent bias ``[0, 0, bias_hn]``.
    """
    import keras  # optional dependency, only needed here

    name = f"{type(layer).__name__}.to_keras"
    dtype = layer.cells[0].weight_ih.dtype
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"{name} expected float32 or float64 weights, got {dtype}")
    dtype_name = str(dtype).removeprefix("torch.")
    kind = getattr(keras.layers, _KERAS_NAMES[type(layer).cell_type])
    options = {"reset_after": True} if type(layer).cell_type is GRUCell else {}
    variant = dict(getattr(layer, "variant_options", {}))
    if "recurrent_dropout" in variant:  # Keras's own option, with the same semantics
        options["recurrent_dropout"] = variant.pop("recurrent_dropout")
    if variant:
        raise ValueError(
            f"{name} expected a layer that Keras's {kind.__name__} can express "
            f"(recurrent_dropout at most), got one with {', '.join(sorted(variant))}"
        )
    D, L = layer.num_directions, layer.num_layers
    stack = []
    for n in range(L):
        sequences = return_sequences or n < L - 1
        item = kind(layer.hidden_size, return_sequences=sequences, dtype=dtype_name, **options)
        if D == 2:
            item = keras.layers.Bidirectional(item, merge_mode="concat", dtype=dtype_name)
        item.build((None, None, layer.cell(n).input_size))  # (B, T, I)
        for direction, keras_layer in enumerate(_directions(item)):
            keras_layer.set_weights(_torch_to_keras_layout(layer.cell(n, direction)))
        if n > 0 and layer.dropout:
            stack.append(keras.layers.Dropout(layer.dropout, dtype=dtype_name))
        stack.append(item)
    return stack[0] if L == 1 else stack


def _torch_to_keras_layout(cell: Cell) -> list:
    """``cell``'s weights as Keras stores them: [kernel, recurrent_kernel, bias] (numpy)."""
    w_ih, w_hh, bias = (p.detach().cpu() for p in (cell.weight_ih, cell.weight_hh, cell.bias))
    if isinstance(cell, (GRUCell, VariantGRUCell)):  # rnnlab stacks r, z, n; Keras z, r, h
        zeros = torch.zeros_like(bias[: 2 * cell.hidden_size])  # (2H,) r and z
        recurrent_bias = torch.cat([zeros, cell.bias_hn.detach().cpu()])  # (3H,)
        w_ih, w_hh = _swap_first_blocks(w_ih), _swap_first_blocks(w_hh)
        bias = torch.stack([_swap_first_blocks(bias), _swap_first_blocks(recurrent_bias)])
    return [w_ih.T.numpy(), w_hh.T.numpy(), bias.numpy()]


def _swap_first_blocks(w: Tensor) -> Tensor:
    """Swap the first two of three row blocks: r, z, n <-> z, r, n (its own inverse)."""
    a, b, c = w.chunk(3, dim=0)
    return torch.cat([b, a, c])


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
    cell: Cell, kernel: Tensor, recurrent: Tensor, bias: Tensor | None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Keras (kernel, recurrent_kernel, bias) -> torch (w_ih, w_hh, b_ih, b_hh), rnnlab order."""
    w_ih, w_hh = kernel.T, recurrent.T  # (G*H, I), (G*H, H)
    GH = w_ih.shape[0]
    if bias is None:
        bias = kernel.new_zeros(2, GH) if isinstance(cell, GRUCell) else kernel.new_zeros(GH)
    if not isinstance(cell, GRUCell):
        return w_ih, w_hh, bias, torch.zeros_like(bias)
    b_ih, b_hh = bias  # (3H,) each: Keras's input and recurrent biases
    rzn = _swap_first_blocks  # Keras stacks z, r, h; rnnlab r, z, n
    return rzn(w_ih), rzn(w_hh), rzn(b_ih), rzn(b_hh)
