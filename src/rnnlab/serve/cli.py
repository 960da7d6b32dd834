"""``rnnlab serve RUN_DIR [RUN_DIR ...]``: load each run once and serve its pages and API on
uvicorn until Ctrl-C."""

from __future__ import annotations

import argparse
import ipaddress
import re
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from rnnlab import argtypes

__all__ = ["allowed_hosts", "build_parser", "host_warning", "main", "run_names"]

LOOPBACK_NAMES = ("localhost",)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rnnlab serve",
        description="Serve trained runs in the browser: a text classifier's prediction and "
        "gates as you type, a digit classifier's as you draw, every run's learning curve. "
        "Only the runs named here are served.",
    )
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="a trained run directory")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1, this machine only; any other address "
        "lets other machines reach the server)",
    )
    p.add_argument(
        "--port", type=argtypes.port, default=8000, help="port (default 8000; 0 any free one)"
    )
    p.add_argument("--checkpoint", choices=["best", "last"], default="best")
    p.add_argument(
        "--timeout",
        type=argtypes.positive_float,
        default=10.0,
        metavar="SECONDS",
        help="most seconds one request's model work may take (default 10)",
    )
    p.add_argument(
        "--threads", type=argtypes.threads, help="torch CPU threads (default: torch's choice)"
    )
    p.add_argument(
        "--log-level",
        choices=["critical", "error", "warning", "info", "debug"],
        default="warning",
        help="uvicorn's log level (default warning; info logs each request)",
    )
    return p


def run_names(run_dirs: Sequence[str]) -> list[str]:
    """A URL-safe name per run directory: its folder name ([A-Za-z0-9._-] kept), with ``-2``,
    ``-3``, ... appended to repeats, never a bare number (numbers address runs by index)."""
    names: list[str] = []
    for run_dir in run_dirs:
        base = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(run_dir).resolve().name).strip("-.") or "run"
        if base.isdigit():
            base = f"run-{base}"
        name, k = base, 2
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    return names


def _is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_warning(host: str) -> str | None:
    """The warning printed when ``host`` is not a loopback address, else None."""
    if _is_loopback(host):
        return None
    return (
        f"rnnlab serve: warning: listening on {host}, not 127.0.0.1: other machines that can "
        "reach this one can use the server (it has no authentication)"
    )


def allowed_hosts(host: str, bound: str) -> list[str] | None:
    """The Host headers a server listening on ``host`` (bound to the address ``bound``)
    answers: on an IPv4 loopback address only the loopback names (so no DNS-rebinding page
    reaches it); on any other address (``0.0.0.0``, a LAN address, IPv6) None, every Host,
    since other machines name it however their network does (the README says so)."""
    if _is_loopback(host) and ":" not in bound:
        return ["127.0.0.1", "localhost", host]
    return None


def _bind(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    if ":" in host:
        host = f"[{host}]"
    if host in ("0.0.0.0", "[::]"):
        host = socket.gethostname()
    return f"http://{host}:{port}/"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        import uvicorn

        from rnnlab.serve.app import create_app
    except ModuleNotFoundError as exc:
        print(
            f"rnnlab serve: error: expected the web server packages installed, got no module "
            f"{exc.name!r}: pip install 'rnnlab[serve]'",
            file=sys.stderr,
        )
        return 2
    from rnnlab.checkpoint import CheckpointError
    from rnnlab.config import ConfigError
    from rnnlab.inspect.trace import InspectError
    from rnnlab.runs import RunError
    from rnnlab.serve.models import load_served_run
    from rnnlab.tasks import PredictError

    argtypes.set_threads(args.threads)
    try:
        runs = [
            load_served_run(run_dir, name, args.checkpoint)
            for run_dir, name in zip(args.run_dirs, run_names(args.run_dirs), strict=True)
        ]
    except (RunError, CheckpointError, ConfigError, InspectError, PredictError, OSError) as exc:
        print(f"rnnlab serve: error: {exc}", file=sys.stderr)
        return 2
    warning = host_warning(args.host)
    if warning:
        print(warning, file=sys.stderr)
    try:
        sock = _bind(args.host, args.port)
    except OSError as exc:
        print(
            f"rnnlab serve: error: expected to listen on {args.host}:{args.port}, got {exc}",
            file=sys.stderr,
        )
        return 2
    app = create_app(
        runs, timeout=args.timeout, allowed_hosts=allowed_hosts(args.host, sock.getsockname()[0])
    )
    url = _url(sock)
    for k, run in enumerate(runs):
        print(f"  [{k}] {run.name}: {run.kind} {run.config.model.cell} from {run.run_dir}")
    print(f"rnnlab serve: {url} (Ctrl-C stops)", flush=True)
    config = uvicorn.Config(
        app, log_level=args.log_level, access_log=args.log_level in ("info", "debug")
    )
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass  # uvicorn shut down gracefully, then passed the Ctrl-C on
    finally:
        sock.close()
    print("rnnlab serve: stopped", flush=True)
    return 0
