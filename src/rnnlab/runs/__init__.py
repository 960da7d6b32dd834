"""Runs on disk: train a configuration into a run directory (:func:`train`), resume it
(:func:`resume`), load it back (:func:`load_run`). :mod:`~rnnlab.runs.layout` describes the
directory; :mod:`~rnnlab.runs.session` trains; :mod:`~rnnlab.runs.load` reads a trained run;
:class:`Report` is its report.json."""

from rnnlab.runs.layout import RunError, RunWarning, default_run_dir, read_config, run_data_dir
from rnnlab.runs.load import load_run, load_run_data
from rnnlab.runs.report import Report
from rnnlab.runs.resume import resume
from rnnlab.runs.session import train

__all__ = [
    "Report",
    "RunError",
    "RunWarning",
    "default_run_dir",
    "load_run",
    "load_run_data",
    "read_config",
    "resume",
    "run_data_dir",
    "train",
]
