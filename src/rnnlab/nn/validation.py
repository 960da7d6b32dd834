"""Checks at the public boundary. Each error names what was expected and what came."""

from __future__ import annotations

import torch
from torch import Tensor

from rnnlab.nn.cells import LSTMState


def check_input(name: str, x: object, input_size: int) -> None:
    """x must be a floating-point (B, T, I) tensor with I == input_size and T >= 1."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} expected input to be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} expected a floating-point input, got dtype {x.dtype}")
    if x.dim() != 3 or x.shape[-1] != input_size:
        raise ValueError(
            f"{name} expected input of shape (B, T, {input_size}), got {tuple(x.shape)}"
        )
    if x.shape[1] == 0:
        raise ValueError(f"{name} expected at least one time step, got shape {tuple(x.shape)}")


def _check_state_tensor(
    name: str, what: str, s: object, x: Tensor, LD: int, H: int, shape: tuple | None = None
) -> None:
    expected = (LD, x.shape[0], H) if shape is None else tuple(shape)
    if not isinstance(s, Tensor):
        raise TypeError(f"{name} expected {what} to be a torch.Tensor, got {type(s).__name__}")
    if tuple(s.shape) != expected:
        raise ValueError(f"{name} expected {what} of shape {expected}, got {tuple(s.shape)}")
    if s.dtype != x.dtype:
        raise TypeError(f"{name} expected {what} of dtype {x.dtype} (the input's), got {s.dtype}")


def check_state(
    name: str,
    state: object,
    x: Tensor,
    LD: int,
    H: int,
    pair: bool,
    state_type: type | None = None,
    shapes: dict[str, tuple[int, ...]] | None = None,
) -> Tensor | tuple:
    """Validate an initial state, (L*D, B, H) or a pair of them for LSTM (or, given a named
    tuple ``state_type`` such as ``SLSTMState``, one tensor per field, each of its shape in
    ``shapes`` or (L*D, B, H)); returns it
    normalised (a plain ``(h, c)`` tuple becomes an :class:`LSTMState`)."""
    if state_type is not None:
        fields = state_type._fields
        if not isinstance(state, tuple) or len(state) != len(fields):
            raise TypeError(
                f"{name} expected state to be a {state_type.__name__}{fields} of tensors, "
                f"got {type(state).__name__}"
            )
        for field, s in zip(fields, state, strict=True):
            shape = None if shapes is None else shapes[field]
            _check_state_tensor(name, f"state.{field}", s, x, LD, H, shape)
        return state_type(*state)
    if pair:
        if not isinstance(state, tuple) or len(state) != 2:
            raise TypeError(
                f"{name} expected state to be an LSTMState(h, c) or a pair of tensors, "
                f"got {type(state).__name__}"
            )
        _check_state_tensor(name, "state.h", state[0], x, LD, H)
        _check_state_tensor(name, "state.c", state[1], x, LD, H)
        return LSTMState(*state)
    _check_state_tensor(name, "state", state, x, LD, H)
    return state


def make_mask(
    name: str,
    lengths: Tensor | None,
    mask: Tensor | None,
    padding: str,
    B: int,
    T: int,
    device: torch.device,
) -> Tensor | None:
    """A (B, T) bool mask, True at real steps, from ``lengths`` or ``mask``; None if neither
    is given (or every step is real, so the unmasked path can run)."""
    if padding not in ("post", "pre"):
        raise ValueError(f"{name} expected padding 'post' or 'pre', got {padding!r}")
    if lengths is not None and mask is not None:
        raise ValueError(f"{name} expected lengths or mask, not both")
    if mask is not None:
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool or tuple(mask.shape) != (B, T):
            got = (
                f"{mask.dtype} tensor of shape {tuple(mask.shape)}"
                if isinstance(mask, Tensor)
                else type(mask).__name__
            )
            raise ValueError(
                f"{name} expected mask to be a bool tensor of shape {(B, T)}, got {got}"
            )
        if torch.compiler.is_compiling():  # no branch on values in a graph: the mask is used
            return mask.to(device)
        return None if bool(mask.all()) else mask.to(device)
    if lengths is None:
        return None
    if not isinstance(lengths, Tensor):
        lengths = torch.as_tensor(lengths)
    if lengths.dtype.is_floating_point or lengths.dtype == torch.bool or lengths.is_complex():
        raise TypeError(f"{name} expected integer lengths, got dtype {lengths.dtype}")
    if tuple(lengths.shape) != (B,):
        raise ValueError(f"{name} expected lengths of shape ({B},), got {tuple(lengths.shape)}")
    if torch.compiler.is_compiling():
        # Under torch.compile the values cannot decide anything without a graph break: the
        # range is checked when the graph runs, and the mask is always used (the masked kernels
        # give the unmasked result when every length is T).
        in_range = ((lengths >= 1) & (lengths <= T)).all()
        torch._assert_async(in_range, f"{name} expected every length in [1, {T}]")
    else:
        lo, hi = int(lengths.min()), int(lengths.max())
        if lo < 1 or hi > T:
            raise ValueError(
                f"{name} expected every length in [1, {T}], got values in [{lo}, {hi}]"
            )
        if lo == T:
            return None
    steps = torch.arange(T, device=device)  # (T,)
    lengths = lengths.to(device)[:, None]  # (B, 1)
    return steps < lengths if padding == "post" else steps >= T - lengths  # (B, T)
