"""The ASGI application of ``rnnlab serve``: pages, static files and the JSON API over the runs
named on the command line.

Endpoints (``RUN`` is a served run's index, 0 first, or its name; anything else is 404)::

    GET  /                         index page: the served runs and their pages
    GET  /text /digit /lm /runs    the pages (plain HTML, scripts and styles under /static)
    GET  /openapi.json             this API's OpenAPI schema
    GET  /api/health               {"status": "ok"}
    GET  /api/runs                 {"runs": [each run's description]}
    GET  /api/runs/RUN             description, status, config, report
    GET  /api/runs/RUN/metrics     metrics.jsonl records from line ?after=N on
    POST /api/runs/RUN/classify    prediction after every token or row
    POST /api/runs/RUN/trace       classify + the gates of one layer/direction
    POST /api/runs/RUN/generate    language models: tokens streamed as server-sent events
    POST /api/runs/RUN/score       language models: per-token log-probabilities

Model work runs in worker threads (the event loop keeps answering other requests) under a time
limit; a request past it gets 408. Errors are JSON: ``{"detail": "..."}``, or for a request
field ``{"detail": [{"loc": ["body", FIELD], "msg": ..., "type": ...}]}`` (FastAPI's form).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Sequence
from functools import partial
from importlib import resources
from typing import Any

import anyio
from fastapi import FastAPI, HTTPException, Query
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.middleware.trustedhost import TrustedHostMiddleware

from rnnlab import __version__
from rnnlab.serve.guards import BodyLimit, SecurityHeaders
from rnnlab.serve.models import InputError, ServedRun, UnsupportedError
from rnnlab.serve.runinfo import metrics_since, run_overview
from rnnlab.serve.schemas import (
    MAX_BODY_BYTES,
    ClassifyRequest,
    GenerateRequest,
    ScoreRequest,
    TooLargeError,
    TraceRequest,
    check_text,
    decode_image,
)

__all__ = ["PAGES", "create_app"]

PAGES = ("text", "digit", "lm", "runs")
_END = object()


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

    def lookup(run: str) -> ServedRun:
        served = by_key.get(run)
        if served is None:
            raise HTTPException(
                404,
                f"expected a served run: an index 0..{len(runs) - 1} or one of {names}, "
                f"got {run[:80]!r}",
            )
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

    def inputs(served: ServedRun, body: ClassifyRequest) -> dict[str, Any]:
        given = [k for k in ("text", "image", "png") if getattr(body, k) is not None]
        if len(given) != 1:
            field = "text" if served.kind == "text" else "image"
            raise InputError(
                given[1] if len(given) > 1 else field,
                f"expected exactly one of 'text', 'image' or 'png', got "
                f"{', '.join(repr(g) for g in given) or 'none'}",
            )
        if body.text is not None:
            check_text("text", body.text)
        return {"text": body.text, "image": decode_image(body), "invert": body.invert}

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

    @app.post("/api/runs/{run}/classify", tags=["api"])
    async def classify(run: str, body: ClassifyRequest) -> dict[str, Any]:
        """The prediction and, per real step (``steps``: words or image rows), the class
        probabilities had the input ended there (``step_probabilities``)."""
        served = lookup(run)
        return await work(served.classify, **inputs(served, body))

    @app.post("/api/runs/{run}/trace", tags=["api"])
    async def trace(run: str, body: TraceRequest) -> dict[str, Any]:
        """Classify, plus every gate of ``layer`` in ``direction`` per real step (``gates``:
        name -> steps x units), each unit's ``activity`` and ``top_units``."""
        served = lookup(run)
        return await work(
            served.trace, **inputs(served, body), layer=body.layer, direction=body.direction
        )

    @app.post("/api/runs/{run}/generate", tags=["api"])
    async def generate(run: str, body: GenerateRequest) -> StreamingResponse:
        """Language models: a stream of server-sent events, ``event: token`` with
        ``{"token", "id", "probability", "top", "value"}`` per generated token (``top``: the 5
        likeliest tokens; ``value``: the chosen unit's c or h after it), then ``event: done``.
        Bad settings answer 4xx before the stream starts; other runs answer 400."""
        served = lookup(run)
        check_text("prompt", body.prompt)
        tokens = await work(
            served.generate,
            body.prompt,
            body.max_tokens,
            body.temperature,
            body.top_k,
            body.unit,
            layer=body.layer,
            state=body.state,
            seed=body.seed,
            every_unit=body.every_unit,
        )
        first = await work(next, tokens, _END)  # errors before the stream starts are 4xx

        async def events() -> AsyncIterator[str]:
            item, count = first, 0
            while item is not _END:
                count += 1
                yield f"event: token\ndata: {json.dumps(item)}\n\n"
                try:
                    item = await work(next, tokens, _END)
                except HTTPException as exc:
                    yield f"event: error\ndata: {json.dumps({'detail': exc.detail})}\n\n"
                    return
            yield f"event: done\ndata: {json.dumps({'tokens': count})}\n\n"

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"cache-control": "no-cache"}
        )

    @app.post("/api/runs/{run}/score", tags=["api"])
    async def score(run: str, body: ScoreRequest) -> dict[str, Any]:
        """Language models: per-token log-probabilities of ``text``, the mean loss and bpc or
        perplexity (``figure`` says which). Other runs answer 400."""
        served = lookup(run)
        check_text("text", body.text)
        return await work(served.score, body.text)

    # -- pages ----------------------------------------------------------------------------------

    static = static_dir()

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(str(static / "index.html"))

    def page(name: str):
        async def serve_page() -> FileResponse:
            return FileResponse(str(static / f"{name}.html"))

        return serve_page

    for name in PAGES:
        app.add_api_route(f"/{name}", page(name), methods=["GET"], include_in_schema=False)
    app.mount("/static", StaticFiles(directory=str(static)), name="static")

    app.add_middleware(SecurityHeaders)
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    if allowed_hosts is not None:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))
    return app
