"""Shared test setup. One torch thread: the tests use tiny tensors, where a second thread only
adds synchronisation (and, on a busy shared machine, spin-waiting that slows runs many-fold)."""

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)
# rnnlab train/evaluate/predict flush subnormal floats to zero for the process (rnnlab.denormals);
# in-process command tests would leave that on for every later test. test_denormals.py sets it.
os.environ.setdefault("RNNLAB_FLUSH_DENORMALS", "0")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """The full datasets beside the repository (``../shared/data``); skips when absent."""
    if not (SHARED_DATA / "mnist").is_dir():
        pytest.skip(f"full data not found at {SHARED_DATA}")
    return SHARED_DATA
