"""The ``rnnlab`` command line; :func:`main` is the console entry point."""

from rnnlab.cli.main import PLUGIN_VERBS, build_parser, main

__all__ = ["PLUGIN_VERBS", "build_parser", "main"]
