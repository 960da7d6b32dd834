"""Looking inside a trained recurrent model: gates, cell states, saturation, predictions.

:func:`inspect_run` (``rnnlab inspect RUN_DIR``) runs a run's model on one review or image with
``return_gates=True`` and writes heatmaps, a per-token HTML page (text) or a row-by-row
prediction figure (images), and Karpathy et al.'s (2015) gate-saturation statistics.

Modules by concern: :mod:`~rnnlab.inspect.trace` (recording gates, statistics),
:mod:`~rnnlab.inspect.inputs` (inputs as the model reads them, predictions per step),
:mod:`~rnnlab.inspect.plots` (PNG figures), :mod:`~rnnlab.inspect.html` (the text page),
:mod:`~rnnlab.inspect.output` (the output folder, written whole), each kind's command
(:mod:`~rnnlab.inspect.classifier`, :mod:`~rnnlab.inspect.language`; the run's task names
it) and :mod:`~rnnlab.inspect.cli` (the arguments).
"""

from rnnlab.inspect.classifier import InspectResult, inspect_run
from rnnlab.inspect.cli import main
from rnnlab.inspect.language import inspect_language_model
from rnnlab.inspect.trace import InspectError, Trace, record_gates, saturation

__all__ = [
    "InspectError",
    "InspectResult",
    "Trace",
    "inspect_language_model",
    "inspect_run",
    "main",
    "record_gates",
    "saturation",
]
