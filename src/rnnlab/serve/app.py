"""The ASGI application of ``rnnlab serve``: pages, static files and the JSON API over the runs
named on the command line.

Endpoints (``RUN`` is a served run's index, 0 first, or its name; anything else is 404)::

    GET  /                         index page: the served runs and their pages
    GET  /PAGE                     each served kind's page (/text, /digit, /lm) and /runs
    GET  /openapi.json             this API's OpenAPI schema
    GET  /api/health               {"status": "ok"}
    GET  /api/runs                 {"runs": [each run's description]}
    GET  /api/runs/RUN             description, status, config, report
    GET  /api/runs/RUN/metrics     metrics.jsonl records from line ?after=N on
    POST /api/runs/RUN/ANALYSIS    each kind's analyses, mounted by its ServedRun class:
                                   classify, trace (classifiers: rnnlab.serve.classifier),
                                   generate, score (language models: rnnlab.serve.lm);
                                   a run asked for an analysis its kind lacks answers 400

Model work runs in worker threads (the event loop keeps answering other requests) under a time
limit; a request past it gets 408. Errors are JSON: ``{"detail": "..."}``, or for a request
field ``{"detail": [{"loc": ["body", FIELD], "msg": ..., "type": ...}]}`` (FastAPI's form).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from importlib import resources
from typing import Any

import anyio
from fastapi import FastAPI, HTTPException, Query
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.middleware.trustedhost import TrustedHostMiddleware

from rnnlab import __version__
from rnnlab.serve.guards import BodyLimit, SecurityHeaders
from rnnlab.serve.models import (
    InputError,
    ServedRun,
    UnsupportedError,
    check_analysis,
    served_classes,
)
from rnnlab.serve.runinfo import metrics_since, run_overview
from rnnlab.serve.schemas import MAX_BODY_BYTES, TooLargeError

__all__ = ["create_app"]


def static_dir():
    return resources.files("rnnlab.serve") / "static"


def _field_error(status: int, field: str, message: str) -> JSONResponse:
    return JSONResponse(
        {"detail": [{"loc": ["body", field], "msg": message, "type": "value_error"}]},
        status_code=status,
    )


def _validation_error(request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 without echoing the input back (it may be 100 kB of text)."""
    errors = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    return JSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)


def create_app(
    runs: Sequence[ServedRun],
    *,
    timeout: float = 10.0,
    allowed_hosts: Sequence[str] | None = None,
) -> FastAPI:
    """The application serving ``runs`` (each loaded once, see
    :func:`rnnlab.serve.models.load_served_run`). ``timeout`` (seconds) bounds each request's
    model work; ``allowed_hosts`` (e.g. ``["127.0.0.1", "localhost"]``) refuses requests for
    any other Host header, which stops DNS-rebinding pages from reaching a loopback server."""
    if not runs:
        raise ValueError("create_app expected at least one run, got none")
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise ValueError(f"create_app expected distinct run names, got {names}")
    kinds = served_classes()  # every kind's routes, so a wrong kind of run answers 400, not 404
    pages = [*dict.fromkeys(cls.page for cls in kinds if cls.page), "runs"]
    by_key: dict[str, ServedRun] = {}
    for index, run in enumerate(runs):
        by_key[str(index)] = run
        by_key[run.name] = run

    app = FastAPI(
        title="rnnlab serve",
        version=__version__,
        description="Watch a trained rnnlab model think: predictions after every step and "
        "the gates behind them. Image inputs: `image` as 28 rows of numbers in [0, 1], or "
        "`png` as a base64 28x28 PNG.",
        docs_url=None,  # the interactive docs load their scripts from a CDN: not offline
        redoc_url=None,
    )
    app.add_exception_handler(RequestValidationError, _validation_error)

    @app.exception_handler(InputError)
    async def _input_error(request, exc: InputError) -> JSONResponse:
        return _field_error(413 if isinstance(exc, TooLargeError) else 422, exc.field, str(exc))

    @app.exception_handler(UnsupportedError)
    async def _unsupported(request, exc: UnsupportedError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    def lookup(run: str, analysis: str | None = None) -> ServedRun:
        served = by_key.get(run)
        if served is None:
            raise HTTPException(
                404,
                f"expected a served run: an index 0..{len(runs) - 1} or one of {names}, "
                f"got {run[:80]!r}",
            )
        if analysis is not None:
            check_analysis(served, analysis)
        return served

    async def work(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` in a worker thread, at most ``timeout`` seconds."""
        try:
            with anyio.fail_after(timeout):
                return await anyio.to_thread.run_sync(
                    partial(fn, *args, **kwargs), abandon_on_cancel=True
                )
        except TimeoutError:
            raise HTTPException(
                408, f"expected the model to answer within {timeout:g} s, got no answer in time"
            ) from None

    # -- API ------------------------------------------------------------------------------------

    @app.get("/api/health", tags=["api"])
    async def health() -> dict[str, str]:
        """Answers at once, also while models work."""
        return {"status": "ok"}

    @app.get("/api/runs", tags=["api"])
    async def list_runs() -> dict[str, Any]:
        """The served runs, in command-line order: index, name, kind ("text", "image" or
        "lm"), cell, layers, directions, hidden sizes, class names."""
        return {"runs": [{"index": k, **r.describe()} for k, r in enumerate(runs)]}

    @app.get("/api/runs/{run}", tags=["api"])
    async def run_details(run: str) -> dict[str, Any]:
        """A run's description, status ("running", "finished", ...), config and report."""
        served = lookup(run)
        overview = await anyio.to_thread.run_sync(run_overview, served.run_dir)
        return {"index": names.index(served.name), **served.describe(), **overview}

    @app.get("/api/runs/{run}/metrics", tags=["api"])
    async def run_metrics(run: str, after: int = Query(0, ge=0)) -> dict[str, Any]:
        """Records of the run's metrics.jsonl from line ``after`` on, and ``next``, the line to
        ask from next time (poll it while the run trains)."""
        served = lookup(run)
        return await anyio.to_thread.run_sync(metrics_since, served.run_dir, after)

    mounted = set()  # kinds that share their routes (text and image classifiers) mount them once
    for cls in kinds:  # each kind's analyses (classify, trace, generate, score, ...)
        if cls.add_routes.__func__ not in mounted:
            mounted.add(cls.add_routes.__func__)
            cls.add_routes(app, lookup, work)

    # -- pages ----------------------------------------------------------------------------------

    static = static_dir()

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(str(static / "index.html"))

    def page(name: str):
        async def serve_page() -> FileResponse:
            return FileResponse(str(static / f"{name}.html"))

        return serve_page

    for name in pages:
        app.add_api_route(f"/{name}", page(name), methods=["GET"], include_in_schema=False)
    app.mount("/static", StaticFiles(directory=str(static)), name="static")

    app.add_middleware(SecurityHeaders)
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    if allowed_hosts is not None:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))
    return app
