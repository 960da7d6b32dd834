"""Research programs built on rnnlab, kept outside the package (see projects/README.md).

Each is run from a checkout: ``python -m projects.long_range`` and ``python -m projects.context``.
They import rnnlab's public API only.
"""
