"""``rnnlab serve``: trained runs in the browser, with a JSON API behind every page.

:func:`rnnlab.serve.app.create_app` builds the ASGI application; every call into the model code
goes through :mod:`rnnlab.serve.models`. Needs the optional dependencies ``rnnlab[serve]``
(FastAPI, uvicorn, Pillow).
"""

from rnnlab.serve.cli import main

__all__ = ["main"]
