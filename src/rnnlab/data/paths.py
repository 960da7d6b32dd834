"""Where datasets and caches live (files are written there through :mod:`rnnlab.files`).

Resolution rule (the same for every loader):

* The cache root is the ``cache_dir`` argument if given, else the environment variable
  ``RNNLAB_DATA``, else ``~/.cache/rnnlab``. Dataset ``<name>`` lives in ``<root>/<name>/``
  (``mnist``, ``imdb``); derived caches (the encoded IMDB corpus) also go there.
* An explicit ``data_dir`` may be either a root holding ``<name>/`` or the folder that holds the
  dataset's files itself (e.g. ``/srv/data/mnist``). It is taken as the dataset folder when it
  directly contains at least one of the dataset's files, otherwise ``<data_dir>/<name>/`` is
  used. An explicit ``data_dir`` must exist (a typo should not silently trigger a download
  elsewhere); it may be read-only as long as no file has to be downloaded into it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from rnnlab.data.errors import DataError

ENV_VAR = "RNNLAB_DATA"


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The cache root: ``cache_dir`` > ``$RNNLAB_DATA`` > ``~/.cache/rnnlab`` (not created)."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "rnnlab"


def sample_dir() -> Path:
    """The folder of the real data sample shipped inside the package."""
    return Path(__file__).resolve().parent / "sample"


def resolve_dataset_dir(
    name: str, data_dir: str | os.PathLike[str] | None, markers: Sequence[str]
) -> Path:
    """The folder that holds (or will receive) dataset ``name``; see the module docstring.

    ``markers`` are the file names that identify the dataset's folder.
    """
    if data_dir is None:
        return cache_root() / name
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        found = "a file" if path.exists() else "nothing there"
        raise DataError(f"data_dir {path}: expected an existing directory, got {found}")
    if any((path / marker).is_file() for marker in markers):
        return path
    return path / name


def ensure_writable_dir(path: Path) -> Path:
    """Create ``path`` if needed and check that files can be written there, or raise DataError."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise DataError(
            f"cache directory {path}: expected a writable directory, got {type(exc).__name__}: "
            f"{exc} (set ${ENV_VAR} or pass data_dir/cache_dir to use another place)"
        ) from exc
    return path
