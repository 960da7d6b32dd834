"""The checks of :class:`rnnlab.config.ModelConfig` that read several keys at once: which
cells take bf16 and which take the variant options (kept here so that the dataclass stays a
list of keys).
"""

from __future__ import annotations

from typing import Any

from rnnlab.config_values import ConfigError
from rnnlab.nn.registry import CELL_NAMES
from rnnlab.nn.variant_gru import GRU_VARIANT_OPTIONS
from rnnlab.nn.variants import VARIANT_OPTIONS

# ``m`` below is a rnnlab.config.ModelConfig (not imported: config imports this module)
ModelConfig = Any
__all__ = ["check_model", "variant_options", "CELL_VARIANTS"]

# the cells that have variants, and each one's options with their "off" values
CELL_VARIANTS: dict[str, dict[str, object]] = {"lstm": VARIANT_OPTIONS, "gru": GRU_VARIANT_OPTIONS}


def _set_options(m: ModelConfig) -> dict[str, Any]:
    """Every variant option (of any cell) that is on in ``m``."""
    return {k: getattr(m, k) for k in VARIANT_OPTIONS if getattr(m, k) != VARIANT_OPTIONS[k]}


def variant_options(m: ModelConfig) -> dict[str, Any]:
    """The variant options that are on, as ``m.cell``'s layer takes them ({} for a cell with
    none; :func:`check_model` has refused the options such a cell lacks)."""
    offered = CELL_VARIANTS.get(m.cell, {})
    return {k: v for k, v in _set_options(m).items() if k in offered}


def check_model(m: ModelConfig) -> None:
    """Raise ConfigError naming the key, what it expected and what came."""
    if m.cell not in CELL_NAMES:
        raise ConfigError(f"model.cell: expected one of {CELL_NAMES}, got {m.cell!r}")
    _check_bf16(m)
    if not m.hidden_sizes or min(m.hidden_sizes) < 1:
        raise ConfigError(
            f"model.hidden_sizes: expected a non-empty list of positive ints, "
            f"got {list(m.hidden_sizes)}"
        )
    if m.projection < 0:
        raise ConfigError(f"model.projection: expected >= 0, got {m.projection}")
    for name in ("dropout", "input_dropout", "recurrent_dropout", "zoneout"):
        if not 0.0 <= getattr(m, name) < 1.0:
            raise ConfigError(f"model.{name}: expected in [0, 1), got {getattr(m, name)}")
    _check_variants(m)
    if m.autosize and m.kind != "lm":
        raise ConfigError(
            f"model.autosize: expected model.kind='lm' (it fits a language model's width to its "
            f"corpus), got kind={m.kind!r}"
        )


def _check_bf16(m: ModelConfig) -> None:
    if m.precision != "bf16":
        return
    if m.cell != "lstm":
        raise ConfigError(
            f"model.precision='bf16' expected model.cell='lstm' (only rnnlab.LSTM has a "
            f"bf16 mode; GRU and RNN run float32), got cell={m.cell!r}"
        )
    if m.kind == "seq2seq" and m.decoder_cell != "lstm":
        raise ConfigError(
            f"model.precision='bf16' expected model.decoder_cell='lstm' (only rnnlab.LSTM "
            f"has a bf16 mode), got decoder_cell={m.decoder_cell!r}"
        )
    if m.backend not in ("auto", "compiled"):
        raise ConfigError(
            f"model.precision='bf16' expected model.backend='auto' or 'compiled' (bf16 runs "
            f"on the compiled kernels only), got backend={m.backend!r}"
        )


def _check_variants(m: ModelConfig) -> None:
    on = _set_options(m)
    if not on:
        return
    offered = CELL_VARIANTS.get(m.cell, {})
    refused = [k for k in on if k not in offered]
    if refused:
        names = ", ".join(f"model.{k}" for k in refused)
        cells = " or ".join(
            repr(c) for c, o in CELL_VARIANTS.items() if all(k in o for k in refused)
        )
        raise ConfigError(
            f"{names}: expected model.cell={cells} (the variants are rnnlab.LSTM's and "
            f"rnnlab.GRU's options), got cell={m.cell!r}"
        )
    if m.proj_size < 0 or m.proj_size >= min(m.hidden_sizes):
        raise ConfigError(
            f"model.proj_size: expected 0 (none) or fewer units than every layer "
            f"(model.hidden_sizes={list(m.hidden_sizes)}), got {m.proj_size}"
        )
    if m.proj_size and m.kind == "seq2seq":
        raise ConfigError(
            "model.proj_size: expected 0 for seq2seq (its attention and decoder read the "
            f"encoder's full width), got {m.proj_size}"
        )
