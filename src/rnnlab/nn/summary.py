"""A Keras-style model summary: one row per layer with its output shape and parameter count.

``summary(model, (20,), dtype=torch.long)`` returns a :class:`ModelSummary`; ``str()`` of it is
the table: Keras 3's ``model.summary()`` columns and footer, in plain ASCII::

    Model: "Sequential"
    ______________________________________________________________________
     Layer (type)                   Output Shape                  Param #
    ======================================================================
     0 (Embedding)                  (None, 20, 8)                   8,000
     1 (LSTM)                       (None, 20, 256)               271,360
     ...
    ======================================================================
     Total params: 805,186 (3.07 MB)
     Trainable params: 805,186 (3.07 MB)
     Non-trainable params: 0 (0.00 B)
    ______________________________________________________________________

Rows. A row is a leaf module (no children), an rnnlab ``RNN``/``LSTM``/``GRU`` or a
``Recurrent`` wrapper (one row each, never their inner cells; a ``Recurrent`` shows the type of
the layer it wraps, e.g. ``LSTM``), in definition order, named by its path in the model. Types
are torch's class names: ``nn.Linear`` shows as ``Linear`` (Keras's ``Dense``), so the name
points at the class in the code. A container that holds parameters of its own (not in a child)
gets a row for those. The parameter column counts a row's parameters (a parameter shared by two
rows shows in both, but counts once in the totals). Buffers (e.g. BatchNorm's running
statistics) are not parameters and are not counted.

Output shapes come from running the model once on a dummy input (zeros of ``input_shape`` with
a batch of 2, or ``input_data``) in eval mode under ``torch.no_grad()``, with forward hooks; the
batch dimension shows as ``None``. Where a module returns a tuple, the column shows its first
tensor (an rnnlab layer's ``output``, not its state). ``?`` marks a module that was not run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from rnnlab.nn.blocks import Recurrent
from rnnlab.nn.layers import RecurrentLayer

__all__ = ["SummaryRow", "ModelSummary", "summary", "print_summary"]

_HEADERS = ("Layer (type)", "Output Shape", "Param #")
_MIN_WIDTHS = (31, 24, 13)  # Keras 3's column widths


@dataclass(frozen=True)
class SummaryRow:
    """One row: ``name`` the module's path in the model ("" for the model itself), ``type`` its
    class name, ``output_shape`` e.g. ``"(None, 20, 256)"``, ``params`` its parameter count."""

    name: str
    type: str
    output_shape: str
    params: int

    @property
    def label(self) -> str:
        return f"{self.name} ({self.type})" if self.name else self.type


@dataclass(frozen=True)
class ModelSummary:
    """What :func:`summary` found; ``str()`` gives the table. Byte counts are what the
    parameters occupy in their own dtypes (shown as Keras does, in 1024-based units)."""

    model_name: str
    rows: tuple[SummaryRow, ...]
    total_params: int
    trainable_params: int
    non_trainable_params: int
    total_bytes: int
    trainable_bytes: int
    non_trainable_bytes: int

    def __str__(self) -> str:
        cells = [(row.label, row.output_shape, f"{row.params:,}") for row in self.rows]
        widths = [
            max(minimum, len(header) + 2, *(len(c[i]) + 2 for c in cells))
            for i, (header, minimum) in enumerate(zip(_HEADERS, _MIN_WIDTHS, strict=True))
        ]

        def line(label: str, shape: str, params: str) -> str:
            return f" {label:<{widths[0]}}{shape:<{widths[1]}}{params:>{widths[2]}}"

        rule = sum(widths) + 2
        footer = [
            ("Total params", self.total_params, self.total_bytes),
            ("Trainable params", self.trainable_params, self.trainable_bytes),
            ("Non-trainable params", self.non_trainable_params, self.non_trainable_bytes),
        ]
        return "\n".join(
            [f'Model: "{self.model_name}"', "_" * rule, line(*_HEADERS), "=" * rule]
            + [line(*c) for c in cells]
            + ["=" * rule]
            + [f" {what}: {count:,} ({_readable_bytes(size)})" for what, count, size in footer]
            + ["_" * rule]
        )


def summary(
    model: nn.Module,
    input_shape: Sequence[int] | None = None,
    *,
    input_data: Tensor | Sequence[Tensor] | None = None,
    dtype: torch.dtype | None = None,
) -> ModelSummary:
    """Summarise ``model`` as Keras's ``model.summary()`` does (see the module docstring).

    Args:
        model: any torch module.
        input_shape: one input's shape without the batch dimension, e.g. ``(20,)`` for 20 token
            ids; the model runs once on zeros of shape ``(2, *input_shape)``. Without it (and
            without ``input_data``) the model is not run and output shapes show as ``?``.
        input_data: the input itself instead (a tensor, or a sequence of tensors passed as
            positional arguments), batch first.
        dtype: dtype of the dummy input: ``torch.long`` for token ids (an ``nn.Embedding``
            first); by default the model's first floating-point parameter's dtype.

    Never prints; :func:`print_summary` does.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"summary expected a torch.nn.Module, got {type(model).__name__}")
    inputs = _inputs(model, input_shape, input_data, dtype)
    modules = _row_modules(model)
    outputs: dict[str, str] = {}
    if inputs is not None:
        _run(model, modules, inputs, outputs)
    rows = tuple(
        SummaryRow(name, _type_name(m), outputs.get(name, "?"), _count(m, own_only))
        for name, m, own_only in modules
    )
    params = list(model.parameters())  # each shared parameter once
    trainable = [p for p in params if p.requires_grad]
    frozen = [p for p in params if not p.requires_grad]
    return ModelSummary(
        type(model).__name__,
        rows,
        sum(p.numel() for p in params),
        sum(p.numel() for p in trainable),
        sum(p.numel() for p in frozen),
        sum(p.numel() * p.element_size() for p in params),
        sum(p.numel() * p.element_size() for p in trainable),
        sum(p.numel() * p.element_size() for p in frozen),
    )


def print_summary(
    model: nn.Module,
    input_shape: Sequence[int] | None = None,
    *,
    input_data: Tensor | Sequence[Tensor] | None = None,
    dtype: torch.dtype | None = None,
    print_fn: Callable[[str], object] = print,
) -> ModelSummary:
    """:func:`summary`, then ``print_fn`` (default ``print``) of its table; returns the summary."""
    result = summary(model, input_shape, input_data=input_data, dtype=dtype)
    print_fn(str(result))
    return result


def _inputs(
    model: nn.Module,
    input_shape: Sequence[int] | None,
    input_data: Tensor | Sequence[Tensor] | None,
    dtype: torch.dtype | None,
) -> tuple[Tensor, ...] | None:
    """The positional arguments of the one forward call, or None if there is none to make."""
    if input_data is not None:
        if input_shape is not None or dtype is not None:
            raise ValueError("summary expected input_data alone, got input_shape or dtype too")
        data = (input_data,) if isinstance(input_data, Tensor) else tuple(input_data)
        if not data or not all(isinstance(t, Tensor) for t in data):
            got = [type(t).__name__ for t in data]
            raise TypeError(f"summary expected input_data to be tensors, got {got}")
        return data
    if input_shape is None:
        return None
    shape = tuple(input_shape) if isinstance(input_shape, Sequence) else ()
    if not shape or not all(type(n) is int and n > 0 for n in shape):
        raise ValueError(
            "summary expected input_shape to be a tuple of positive ints without the batch "
            f"dimension, e.g. (20,), got {input_shape!r}"
        )
    params = list(model.parameters())
    floating = [p for p in params if p.is_floating_point()]
    if dtype is None:
        dtype = floating[0].dtype if floating else torch.get_default_dtype()
    device = params[0].device if params else torch.device("cpu")
    return (torch.zeros((2, *shape), dtype=dtype, device=device),)


def _row_modules(model: nn.Module) -> list[tuple[str, nn.Module, bool]]:
    """(path, module, own_only) per row, in definition order; ``own_only`` for a container
    whose row counts only the parameters it holds directly."""
    rows: list[tuple[str, nn.Module, bool]] = []
    seen: set[int] = set()

    def visit(name: str, module: nn.Module) -> None:
        if id(module) in seen:  # a module used twice is one row
            return
        seen.add(id(module))
        children = list(module.named_children())
        if not children or isinstance(module, (RecurrentLayer, Recurrent)):
            rows.append((name, module, False))
            return
        if any(True for _ in module.parameters(recurse=False)):
            rows.append((name, module, True))
        for child_name, child in children:
            visit(f"{name}.{child_name}" if name else child_name, child)

    visit("", model)
    return rows


def _run(
    model: nn.Module,
    modules: list[tuple[str, nn.Module, bool]],
    inputs: tuple[Tensor, ...],
    outputs: dict[str, str],
) -> None:
    """One forward pass in eval mode, recording each row's first output shape; the modules'
    train/eval modes are restored afterwards and the hooks removed."""

    def record(name: str) -> Callable:
        def hook(module: nn.Module, args: object, output: object) -> None:
            outputs.setdefault(name, _shape(output))

        return hook

    modes = {m: m.training for m in model.modules()}
    handles = [m.register_forward_hook(record(name)) for name, m, _ in modules]
    try:
        model.eval()
        with torch.no_grad():
            model(*inputs)
    finally:
        for handle in handles:
            handle.remove()
        for m, training in modes.items():
            m.training = training


def _shape(output: object) -> str:
    """``(None, 20, 256)`` for a tensor, batch first; the first tensor of a tuple/list/dict."""
    if isinstance(output, Tensor):
        return str((None, *output.shape[1:])) if output.dim() else "()"
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (tuple, list)):
        for item in output:
            shape = _shape(item)
            if shape != "?":
                return shape
    return "?"


def _type_name(module: nn.Module) -> str:
    return type(module.layer if isinstance(module, Recurrent) else module).__name__


def _count(module: nn.Module, own_only: bool) -> int:
    return sum(p.numel() for p in module.parameters(recurse=not own_only))


def _readable_bytes(size: float) -> str:
    """Keras's rendering of a memory size: ``3.07 MB``, in 1024-based units."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024:
            return f"{size:.2f} {unit}"
        size /= 1024
    return f"{size:.2f} PB"
