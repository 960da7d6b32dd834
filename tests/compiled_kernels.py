"""Whether a test may use the compiled kernels, decided when a test asks (never at collection).

In CI (the environment variable ``CI`` set) the extension must build: a test that needs it
fails, naming why it could not. Elsewhere such a test is skipped with the reason, so a machine
without a compiler or AVX-512 still runs the rest of the suite.
"""

from __future__ import annotations

import os
from types import ModuleType

import pytest

from rnnlab.nn.backends import _ext


def require_compiled_kernels() -> ModuleType:
    """The loaded extension module (building it on first use), or a skip/failure naming why."""
    module = _ext.load()
    if module is not None:
        return module
    reason = f"compiled kernels unavailable: {_ext.unavailable_reason()}"
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so the compiled kernels must build and be tested)")
    pytest.skip(reason)
