"""One progress bar (tqdm, on stderr) for a command's long work: scoring and evaluation.

The library reports progress through a callback (``progress(done, total)``) and never prints;
the bar appears only on a terminal and only after a second, so short work stays silent."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["progress_bar"]


@contextmanager
def progress_bar(desc: str, unit: str) -> Iterator[Callable[[int, int], None]]:
    """A ``progress(done, total)`` callback drawing one bar; closed when the block ends."""
    from tqdm import tqdm

    bars: list[tqdm] = []

    def update(done: int, total: int) -> None:
        if not bars:
            bars.append(
                tqdm(
                    total=total,
                    desc=desc,
                    unit=unit,
                    unit_scale=True,
                    file=sys.stderr,
                    leave=False,
                    dynamic_ncols=True,
                    delay=1.0,  # seconds: short work shows no bar
                    disable=None,  # only on a terminal
                )
            )
        bars[0].update(done - bars[0].n)

    try:
        yield update
    finally:
        for bar in bars:
            bar.close()
