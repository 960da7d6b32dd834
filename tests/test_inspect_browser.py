"""The inspect token page in a real headless browser (Debian's ``chromium``): it renders the
tokens from a file:// URL with nothing fetched from outside, and its inline script recolours.
Skipped where chromium is not installed (``ci/chromium.sh`` installs it)."""

from __future__ import annotations

import re
import subprocess

import numpy as np
import pytest

from browser import CHROMIUM, HEADLESS_FLAGS
from rnnlab.inspect import inspect_run
from rnnlab.runs import train
from tiny import TINY_IMDB_NO_LOGS as TINY_IMDB

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")

REVIEW = (
    "The first half was slow and the acting was not good, but the last hour was "
    "wonderful and I loved every minute of it."
)


def _chromium(tmp_path, url: str, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / "profile"
    command = [
        CHROMIUM,
        *HEADLESS_FLAGS,
        f"--user-data-dir={profile}",
        *args,
        url,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=90, check=True)


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "imdb"
    train("imdb-sample", run, overrides=TINY_IMDB)
    result = inspect_run(run, tmp_path_factory.mktemp("inspect") / "out", text=REVIEW)
    return result.files["tokens.html"], result.summary["real_steps"]


def test_page_renders_its_tokens(page, tmp_path):
    path, tokens = page
    shot = tmp_path / "shot.png"
    _chromium(tmp_path, path.as_uri(), f"--screenshot={shot}", "--window-size=1000,700")
    import matplotlib.image

    pixels = matplotlib.image.imread(str(shot))[..., :3]  # (H, W, 3) in [0, 1]
    assert pixels.shape[:2] == (700, 1000)
    ink = (pixels < 0.95).any(-1)  # not white
    assert ink.mean() > 0.01  # text and coloured tokens drawn
    coloured = np.ptp(pixels, axis=-1) > 0.15  # red/blue/green backgrounds, not grey text
    assert coloured.sum() > 500

    dom = _chromium(tmp_path, path.as_uri(), "--dump-dom").stdout
    assert len(re.findall(r'class="tok"', dom)) == tokens


def test_inline_script_recolours_by_the_forget_gate(page, tmp_path):
    path, tokens = page
    dom = _chromium(tmp_path, path.as_uri() + "#mode=f", "--dump-dom").stdout
    words = re.findall(r'<span class="w[^"]*" style="background: ?([^";]+)', dom)
    assert len(words) == tokens
    assert all(w.replace(" ", "").startswith("rgba(44,160,44,") for w in words), words[:3]
