"""Checked types for the command lines' numeric flags (argparse ``type=``).

Every numeric flag of every ``rnnlab`` command goes through one of these, so a value out of
range or of the wrong type is refused at the boundary with the expected form and the value
given (``argument --port: expected a port in 0..65535, got '99999'``, exit status 2), never
wrapped (a port taken modulo 65536), never a traceback (a seed too large for the generator).
They live beside :mod:`rnnlab.files` rather than in :mod:`rnnlab.cli` because the tools'
own parsers (serve, inspect, export, bench) sit on floors that may not import the cli.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

__all__ = [
    "MAX_SEED",
    "float_range",
    "int_range",
    "nonnegative_int",
    "port",
    "positive_float",
    "positive_int",
    "probability",
    "seed",
    "set_threads",
    "threads",
]

MAX_SEED = 2**63 - 1  # what torch.Generator.manual_seed and the API's seed field take


def int_range(low: int, high: int | None = None, what: str = "an int") -> Callable[[str], int]:
    """A type accepting the decimal ints ``low..high`` (no upper bound when ``high`` is None)."""
    span = f">= {low}" if high is None else f"in {low}..{high}"

    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what} {span}, got {text!r}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {what} {span}, got {text!r}")
        return value

    parse.__name__ = what  # argparse names the type in some messages
    return parse


def float_range(
    low: float, high: float | None = None, *, low_open: bool = True, what: str = "a number"
) -> Callable[[str], float]:
    """A type accepting finite numbers above ``low`` (or from it, ``low_open=False``) up to
    ``high`` inclusive."""
    lower = f"> {low:g}" if low_open else f">= {low:g}"
    span = lower if high is None else f"in {'(' if low_open else '['}{low:g}, {high:g}]"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what} {span}, got {text!r}") from None
        too_low = value <= low if low_open else value < low
        if not math.isfinite(value) or too_low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {what} {span} (finite), got {text!r}")
        return value

    parse.__name__ = what
    return parse


port = int_range(0, 65535, "a port")  # 0: any free port
positive_int = int_range(1, None, "an int")
nonnegative_int = int_range(0, None, "an int")
seed = int_range(0, MAX_SEED, "a seed")
threads = int_range(1, 1024, "a thread count")
positive_float = float_range(0.0, what="a number")
probability = float_range(0.0, 1.0, what="a probability")


def set_threads(count: int | None) -> None:
    """``torch.set_num_threads(count)`` when a ``--threads`` was given (checked by
    :data:`threads`)."""
    if count is None:
        return
    import torch

    torch.set_num_threads(count)
