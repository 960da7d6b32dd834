"""The error type of :mod:`rnnlab.data`, and its warning."""

from __future__ import annotations


class DataError(ValueError):
    """A dataset file or directory is missing, corrupt, unwritable or could not be downloaded.

    The message always names the file (or directory or URL), what was expected and what was
    found, e.g. ``"/data/mnist/train-labels-idx1-ubyte.gz: expected sha256 65a5..., got 1f3c..."``.
    It subclasses :class:`ValueError` so callers that already catch bad-value errors keep working.
    """


class DataWarning(UserWarning):
    """The data can be used but is likely not what the user meant (e.g. a vocabulary so small
    that most training tokens are ``<unk>``); ``rnnlab train`` prints it as one line."""
