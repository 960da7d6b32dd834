"""A bounded load test of ``rnnlab serve`` (issue 19): C concurrent clients mixing classify on
a text classifier run with generate (streamed) and score on a language-model run.

For each checkout named by ``--src`` (one or more), the script starts
``python -m rnnlab serve LM_RUN CLASSIFIER_RUN --host 127.0.0.1 --port 0`` with that checkout on
PYTHONPATH, waits for ``/api/health``, sends ``--warmup`` requests that are not counted, then
``--requests`` requests (the same seeded plan for every checkout and repeat) from ``--clients``
threads, and stops the server. With ``--repeats R`` and two checkouts the phases interleave
(A B A B ...), so both are measured under the same conditions, and the report gives each one's
median requests/s, its min-max and the ratio to the first checkout.

Every request must answer 200 with a well-formed body (a generate stream must carry
``max_tokens`` token events, then ``done``); anything else is an error, counted and printed.
The exit status is 1 on any error or when ``--time-limit`` stopped the test early. Only
loopback is used: the server listens on 127.0.0.1 and the clients connect there.

The before/after comparison of issue 19 (nothing else running on the machine)::

    PY=/work/main/.venv/bin/python
    $PY benchmarks/serve_load.py --rnnlab-python $PY \\
        --src /work/baseline/src --src "$PWD/src" \\
        --lm-run /tmp/load_runs/charlm --classifier-run /tmp/load_runs/imdb \\
        --clients 32 --requests 1600 --repeats 3 --threads 2 --seed 0 --time-limit 900 \\
        --json benchmarks/serve_load.json | tee benchmarks/serve_load.txt
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

HOST = "127.0.0.1"  # loopback only, never any other address
LM, CLASSIFIER = 0, 1  # the runs' indices: the LM run is named first on the command line
SENTENCES = [
    "This movie was a complete waste of time and the acting was wooden.",
    "I loved every minute of it; the cast is wonderful and the story moves fast.",
    "The plot makes no sense, but the photography is beautiful.",
    "One of the best films I have seen this year, funny and sad at once.",
    "The dialogue is clumsy and the ending drags on far too long.",
    "A quiet, patient film that rewards you for paying attention.",
    "I wanted to like it, yet the characters never came alive for me.",
    "The soundtrack alone is worth the price of the ticket.",
    "Terrible special effects, a lazy script and no suspense at all.",
    "My whole family enjoyed it, and we talked about it for days.",
]
PROBE = (
    "import json, platform, torch, rnnlab;"
    "print(json.dumps({'python': platform.python_version(), 'torch': torch.__version__,"
    " 'torch_threads_default': torch.get_num_threads(), 'rnnlab': rnnlab.__version__,"
    " 'rnnlab_file': rnnlab.__file__}))"
)
PROMPTS = ["The movie ", "I think ", "This film was ", "The acting ", "Overall, "]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rnnlab-python", default=sys.executable, help="python that runs the server")
    p.add_argument("--src", action="append", required=True, help="a checkout's src (repeatable)")
    p.add_argument("--lm-run", required=True, help="a trained language-model run directory")
    p.add_argument("--classifier-run", required=True, help="a trained text classifier run")
    p.add_argument("--clients", type=int, default=32, help="concurrent clients (default 32)")
    p.add_argument("--requests", type=int, default=1600, help="requests per phase, total")
    p.add_argument("--warmup", type=int, default=64, help="uncounted requests before each phase")
    p.add_argument("--repeats", type=int, default=1, help="phases per checkout (interleaved)")
    p.add_argument("--mix", default="classify=2,generate=1,score=1", help="each kind's share")
    p.add_argument("--max-tokens", type=int, default=20, help="tokens per generate request")
    p.add_argument("--seed", type=int, default=0, help="seeds the request plan")
    p.add_argument("--threads", type=int, help="the server's torch threads (default torch's)")
    p.add_argument("--server-timeout", type=float, help="the server's --timeout (default its)")
    p.add_argument("--time-limit", type=float, default=300.0, help="seconds for all (300)")
    p.add_argument("--json", metavar="OUT", help="write the results here as JSON")
    args = p.parse_args(argv)
    for name in ("clients", "requests", "repeats", "max_tokens"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} expected >= 1, got {getattr(args, name)}")
    if args.warmup < 0 or args.time_limit <= 0:
        p.error("--warmup expected >= 0 and --time-limit > 0")
    try:
        args.mix = {k: int(v) for k, v in (item.split("=") for item in args.mix.split(","))}
    except ValueError:
        p.error(f"--mix expected kind=weight,... got {args.mix!r}")
    if not set(args.mix) <= {"classify", "generate", "score"} or sum(args.mix.values()) < 1:
        p.error(f"--mix expected weights for classify, generate, score, got {args.mix}")
    return args


def plan(n: int, mix: dict[str, int], seed: int) -> list[tuple[str, dict]]:
    """``n`` requests (kind, body) in the exact proportions of ``mix``, shuffled by ``seed``:
    the same list for every checkout, so both serve the same work."""
    rng = random.Random(seed)
    total = sum(mix.values())
    kinds = [k for k, w in mix.items() for _ in range(n * w // total)]
    kinds += [max(mix, key=mix.get)] * (n - len(kinds))
    rng.shuffle(kinds)
    out = []
    for kind in kinds:
        text = " ".join(rng.choices(SENTENCES, k=rng.randint(1, 8)))
        if kind == "generate":
            body = {"prompt": rng.choice(PROMPTS), "seed": rng.randrange(2**31)}
        else:
            body = {"text": text}
        out.append((kind, body))
    return out


def check(kind: str, response: httpx.Response, max_tokens: int) -> str | None:
    """None when the answer is well formed, else what is wrong with it."""
    if response.status_code != 200:
        return f"status {response.status_code}: {response.text[:160]}"
    if kind == "generate":
        events = [e for e in response.text.split("\n\n") if e.strip()]
        names = [e.split("\n", 1)[0].removeprefix("event: ") for e in events]
        if names != ["token"] * max_tokens + ["done"]:
            return f"expected {max_tokens} token events then done, got {Counter(names)}"
        done = json.loads(events[-1].split("data: ", 1)[1])
        first = json.loads(events[0].split("data: ", 1)[1])
        if done.get("tokens") != max_tokens or not isinstance(first.get("token"), str):
            return f"malformed stream: done {done}, first token {first}"
        return None
    body = response.json()
    if kind == "classify":
        ok = (
            isinstance(body.get("label"), int)
            and len(body.get("probabilities", [])) == len(body.get("classes", [None]))
            and len(body.get("steps", [])) == len(body.get("step_probabilities", [None]))
        )
    else:
        lengths = len(body.get("log_probs", [])) == len(body.get("tokens", [None]))
        ok = isinstance(body.get("loss"), float) and lengths
    return None if ok else f"malformed body: {str(body)[:160]}"


def send(client: httpx.Client, kind: str, body: dict, max_tokens: int) -> str | None:
    run = CLASSIFIER if kind == "classify" else LM
    url = f"/api/runs/{run}/{kind}"
    try:
        if kind == "generate":
            with client.stream("POST", url, json={**body, "max_tokens": max_tokens}) as response:
                response.read()  # the whole stream, as a page would
                return check(kind, response, max_tokens)
        return check(kind, client.post(url, json=body), max_tokens)
    except (httpx.HTTPError, ValueError, IndexError) as exc:
        return f"{type(exc).__name__}: {str(exc)[:160]}"


def load(base: str, requests: list, clients: int, max_tokens: int, deadline: float) -> dict:
    """Send ``requests`` from ``clients`` threads (each takes the next one from the shared
    plan); each kept: (kind, seconds, error or None)."""
    results: list[tuple[str, float, str | None]] = []
    lock, stop = threading.Lock(), threading.Event()
    queue = iter(requests)

    def client_loop() -> None:
        with httpx.Client(base_url=base, timeout=60.0) as client:
            while not stop.is_set() and time.monotonic() < deadline:
                with lock:
                    item = next(queue, None)
                if item is None:
                    return
                t0 = time.perf_counter()
                error = send(client, item[0], item[1], max_tokens)
                with lock:
                    results.append((item[0], time.perf_counter() - t0, error))

    threads = [threading.Thread(target=client_loop, daemon=True) for _ in range(clients)]
    load_before = os.getloadavg()
    start = time.perf_counter()
    for t in threads:
        t.start()
    try:
        for t in threads:
            while t.is_alive():
                t.join(0.2)
    finally:
        stop.set()
    wall = time.perf_counter() - start
    return summarise(results, len(requests), wall, load_before, os.getloadavg())


def _stats(seconds: list[float]) -> dict:
    if not seconds:
        return {"median_ms": None, "p95_ms": None}
    s = sorted(seconds)
    p95 = s[min(len(s) - 1, max(0, -(-95 * len(s) // 100) - 1))]  # nearest rank
    return {"median_ms": round(statistics.median(s) * 1e3, 1), "p95_ms": round(p95 * 1e3, 1)}


def summarise(results: list, planned: int, wall: float, before: tuple, after: tuple) -> dict:
    errors = [(kind, error) for kind, _, error in results if error]
    out = {
        "planned": planned,
        "done": len(results),
        "errors": len(errors),
        "error_examples": [f"{kind}: {error}" for kind, error in errors[:5]],
        "error_counts": dict(Counter(f"{k}: {e[:60]}" for k, e in errors)),
        "wall_s": round(wall, 3),
        "rps": round(len(results) / wall, 2),
        **_stats([s for _, s, _ in results]),
        "per_kind": {},
        "loadavg_before": [round(x, 2) for x in before],
        "loadavg_after": [round(x, 2) for x in after],
    }
    for kind in sorted({k for k, _, _ in results}):
        seconds = [s for k, s, _ in results if k == kind]
        count = {"count": len(seconds), "rps": round(len(seconds) / wall, 2)}
        out["per_kind"][kind] = {**count, **_stats(seconds)}
    return out


class Server:
    """``rnnlab serve`` on 127.0.0.1 and a free port, in its own process group; :meth:`stop`
    terminates it, then kills it after ``grace`` seconds."""

    def __init__(self, args: argparse.Namespace, src: str) -> None:
        cmd = [args.rnnlab_python, "-m", "rnnlab", "serve", args.lm_run, args.classifier_run]
        cmd += ["--host", HOST, "--port", "0"]
        if args.threads is not None:
            cmd += ["--threads", str(args.threads)]
        if args.server_timeout is not None:
            cmd += ["--timeout", str(args.server_timeout)]
        env = {**os.environ, "PYTHONPATH": src}
        self.lines: list[str] = []
        self.url: str | None = None
        self.ready = threading.Event()
        pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
        self.proc = subprocess.Popen(cmd, env=env, start_new_session=True, **pipes)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:  # drains the pipe so the server never blocks on it
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())
            found = re.search(r"rnnlab serve: (http://127\.0\.0\.1:\d+)/", line)
            if found:
                self.url = found.group(1)
                self.ready.set()
        self.ready.set()

    def wait(self, timeout: float) -> str:
        """The base URL once ``/api/health`` answers; RuntimeError with the server's output if
        it exits or is not up within ``timeout`` seconds."""
        end = time.monotonic() + timeout
        self.ready.wait(timeout)
        while self.url and self.proc.poll() is None and time.monotonic() < end:
            try:
                if httpx.get(f"{self.url}/api/health", timeout=5).json() == {"status": "ok"}:
                    return self.url
            except (httpx.HTTPError, ValueError):
                time.sleep(0.2)
        output = "\n".join(self.lines[-20:])
        raise RuntimeError(f"expected the server up within {timeout:g} s, got:\n{output}")

    def stop(self, grace: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def environment(args: argparse.Namespace, src: str) -> dict:
    """What the server runs on, asked of the server's own python with ``src`` on its path."""
    env = {**os.environ, "PYTHONPATH": src}
    cmd = [args.rnnlab_python, "-c", PROBE]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    if done.returncode:
        raise RuntimeError(f"expected {src} to import rnnlab and torch, got:\n{done.stderr[-800:]}")
    out = done.stdout
    info = json.loads(out.strip().splitlines()[-1])
    git = ["git", "-C", src, "describe", "--always", "--dirty"]  # -dirty: uncommitted edits
    commit = subprocess.run(git, capture_output=True, text=True)
    info["commit"] = commit.stdout.strip() or None
    return info


def host() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0))}
    info.update(platform=platform.platform(), client_python=platform.python_version())
    return {**info, "httpx": httpx.__version__}


def line(label: str, r: dict) -> str:
    kinds = "  ".join(
        f"{k} {v['rps']:.1f}/s {v['median_ms']}/{v['p95_ms']} ms" for k, v in r["per_kind"].items()
    )
    return (
        f"{label}: {r['done']}/{r['planned']} requests, {r['errors']} errors, "
        f"{r['rps']:.1f} req/s, median {r['median_ms']} ms, p95 {r['p95_ms']} ms | {kinds} "
        f"| load {r['loadavg_before'][0]:.2f} -> {r['loadavg_after'][0]:.2f}"
    )


def run(args: argparse.Namespace) -> int:
    deadline = time.monotonic() + args.time_limit
    srcs = [str(Path(s).resolve()) for s in args.src]
    report = {"host": host(), "checkouts": {s: environment(args, s) for s in srcs}}
    report.update(settings={k: v for k, v in vars(args).items() if k != "json"}, phases=[])
    h = report["host"]
    print(f"host: {h['cpu']}, {h['usable_cores']} of {h['cores']} cores, {h['platform']}")
    for s, e in report["checkouts"].items():
        print(
            f"{s}: rnnlab {e['rnnlab']} ({e['commit']}) from {e['rnnlab_file']}, torch "
            f"{e['torch']}, python {e['python']}, server threads "
            f"{args.threads or str(e['torch_threads_default']) + ' (torch default)'}"
        )
    print(f"{args.clients} clients, {args.requests} requests a phase, mix {args.mix}, ", end="")
    print(f"max_tokens {args.max_tokens}, seed {args.seed}, warm-up {args.warmup}", flush=True)
    work = plan(args.requests, args.mix, args.seed)
    warm = plan(args.warmup, args.mix, args.seed + 1)
    complete = True
    for repeat in range(args.repeats):
        for src in srcs:
            if time.monotonic() >= deadline:
                complete = False
                break
            server = Server(args, src)
            try:
                base = server.wait(min(120.0, max(1.0, deadline - time.monotonic())))
                kinds = [r["kind"] for r in httpx.get(f"{base}/api/runs").json()["runs"]]
                if kinds != ["lm", "text"]:
                    raise RuntimeError(f"expected runs [lm, text], got {kinds}: check the order")
                load(base, warm, args.clients, args.max_tokens, deadline)
                result = load(base, work, args.clients, args.max_tokens, deadline)
            finally:
                server.stop()
            result.update(src=src, repeat=repeat)
            report["phases"].append(result)
            print(line(f"[{repeat}] {src}", result), flush=True)
            for example in result["error_examples"]:
                print(f"    error: {example}")
            complete &= result["done"] == result["planned"]
    report["summary"] = summary(report["phases"], srcs)
    report["complete"] = complete
    errors = sum(p["errors"] for p in report["phases"])
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    if not complete:
        print(f"incomplete: --time-limit {args.time_limit:g} s stopped the test early")
    print(f"errors: {errors}")
    return 0 if complete and errors == 0 else 1


def summary(phases: list[dict], srcs: list[str]) -> dict:
    out = {}
    for src in srcs:
        rps = [p["rps"] for p in phases if p["src"] == src]
        if rps:
            med, lo, hi = statistics.median(rps), min(rps), max(rps)
            out[src] = {"median_rps": med, "min_rps": lo, "max_rps": hi, "phases": len(rps)}
    first = out.get(srcs[0])
    for src, s in out.items():
        s["ratio_to_first"] = round(s["median_rps"] / first["median_rps"], 3) if first else None
        print(
            f"{src}: median {s['median_rps']:.1f} req/s (min {s['min_rps']:.1f}, max "
            f"{s['max_rps']:.1f}, {s['phases']} phases), x{s['ratio_to_first']} of {srcs[0]}"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Ctrl-C (even where a shell started us with SIGINT ignored) and SIGTERM unwind, so the
    # finally that started a server stops it
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        return run(args)
    except KeyboardInterrupt:
        print("interrupted: servers stopped", file=sys.stderr)
        return 130
    except (RuntimeError, subprocess.SubprocessError) as exc:
        print(f"serve_load: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
