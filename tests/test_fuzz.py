"""Issue 25, item 6: a fault and fuzz suite that keeps the boundary honest.

Hypothesis draws command lines (the numeric flags of generate and score, and predict's inputs)
and API bodies (generate, score, classify): every one must end in an answer or a clear refusal
(exit status 0 or 2; HTTP 200 or 4xx), never a traceback or a 500. And every command that takes
an output path refuses one inside a run's ``checkpoints/`` and an existing file, found by
reading the parsers, so a new command with ``--out`` is checked as soon as it exists.
"""

from __future__ import annotations

import argparse
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rnnlab.cli import main
from serve_runs import make_runs

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
FUZZ = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """(text run, image run, character LM run), untrained: fast to load."""
    return make_runs(tmp_path_factory.mktemp("fuzz"))


def _exit(argv: list[str]) -> int:
    """The command's exit status, argparse's refusals (SystemExit) included."""
    try:
        return main(argv)
    except SystemExit as stop:
        return int(stop.code)


# numbers as a user might type them: ints, floats, huge, negative, words, empty, inf/nan
NUMBERS = st.one_of(
    st.integers(-(10**25), 10**25).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(["", "0", "1", "-1", "1e9", "0x10", "two", "1_000", " 5", "nan", "inf"]),
)
GENERATE_FLAGS = ["--length", "--temperature", "--top-k", "--top-p", "--seed", "--threads"]


@FUZZ
@given(flags=st.dictionaries(st.sampled_from(GENERATE_FLAGS), NUMBERS, max_size=3))
def test_generate_flags_answer_or_refuse(runs, capsys, flags):
    argv = ["generate", str(runs[2]), "--prompt", "the"]
    argv += [f"{flag}={value}" for flag, value in flags.items()]
    if "--length" not in flags:
        argv += ["--length", "3"]
    code = _exit(argv)
    out, err = capsys.readouterr()
    assert code in (0, 2), (argv, err)
    assert "Traceback" not in err
    if code == 2:
        assert "expected" in err, err  # the refusal says what was expected


@FUZZ
@given(texts=st.lists(st.text(max_size=40), min_size=1, max_size=3), tokens=st.booleans())
def test_score_texts_answer_or_refuse(runs, capsys, texts, tokens):
    argv = ["score", str(runs[2]), *[a for t in texts for a in ("--text", t)]]
    code = _exit([*argv, "--tokens"] if tokens else argv)
    err = capsys.readouterr().err
    assert code in (0, 2), (texts, err)
    assert "Traceback" not in err


@FUZZ
@given(texts=st.lists(st.text(max_size=60), min_size=1, max_size=3))
def test_predict_texts_answer_or_refuse(runs, capsys, texts):
    code = _exit(["predict", str(runs[0]), *[a for t in texts for a in ("--text", t)]])
    err = capsys.readouterr().err
    assert code in (0, 1, 2), (texts, err)  # 1: some inputs answered, others refused
    assert "Traceback" not in err


@pytest.fixture(scope="module")
def client(runs):
    from fastapi.testclient import TestClient

    from rnnlab.serve.app import create_app
    from rnnlab.serve.models import load_served_run

    served = [load_served_run(runs[0], "reviews"), load_served_run(runs[2], "chars")]
    return TestClient(create_app(served), raise_server_exceptions=False)


ANY = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
    st.lists(st.integers(-3, 3), max_size=3),
)
GENERATE_BODY = st.fixed_dictionaries(
    {"prompt": st.one_of(st.text(max_size=30), ANY)},
    optional={
        name: ANY
        for name in (
            "max_tokens",
            "temperature",
            "top_k",
            "top_p",
            "unit",
            "layer",
            "state",
            "seed",
            "every_unit",
        )
    },
)


@FUZZ
@given(body=GENERATE_BODY)
def test_api_generate_bodies_answer_or_refuse(client, body):
    if isinstance(body.get("max_tokens"), int) and not isinstance(body["max_tokens"], bool):
        body["max_tokens"] = max(-1, min(body["max_tokens"], 20))  # a short stream, or a 422
    with client.stream("POST", "/api/runs/chars/generate", json=body) as response:
        text = "".join(response.iter_text())
    assert response.status_code in (200, 400, 404, 408, 413, 422), (body, text)
    if response.status_code == 200:
        assert text.rstrip().split("\n\n")[-1].startswith("event: done"), text


@FUZZ
@given(body=st.fixed_dictionaries({}, optional={"text": st.one_of(st.text(max_size=60), ANY)}))
def test_api_score_bodies_answer_or_refuse(client, body):
    response = client.post("/api/runs/chars/score", json=body)
    assert response.status_code in (200, 400, 413, 422), (body, response.text)
    if response.status_code == 200:
        assert response.json()["count"] == len(response.json()["tokens"])


@FUZZ
@given(
    body=st.fixed_dictionaries(
        {},
        optional={
            "text": st.one_of(st.text(max_size=60), ANY),
            "image": st.one_of(ANY, st.lists(st.lists(st.floats(-2, 2), max_size=3), max_size=3)),
            "png": ANY,
            "invert": ANY,
        },
    ),
    run=st.sampled_from(["reviews", "chars"]),
)
def test_api_classify_bodies_answer_or_refuse(client, body, run):
    response = client.post(f"/api/runs/{run}/classify", json=body)
    assert response.status_code in (200, 400, 413, 422), (body, response.text)
    if response.status_code == 200:
        assert json.dumps(response.json())  # a well-formed answer


# -- the overwrite rule, for every command taking an output path ----------------------------------
def _output_flags() -> dict[str, list[str]]:
    """verb -> its options that name a file or folder to write (``--out``, ``--json FILE``)."""
    from rnnlab.bench.cli import build_parser as bench
    from rnnlab.cli.main import build_parser
    from rnnlab.export.cli import build_parser as export
    from rnnlab.inspect.cli import build_parser as inspect
    from rnnlab.serve.cli import build_parser as serve

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    parsers = {verb: p for verb, p in sub.choices.items() if p.add_help}
    parsers |= {"bench": bench(), "export": export(), "inspect": inspect(), "serve": serve()}
    found = {}
    for verb, parser in parsers.items():
        flags = [
            o
            for a in parser._actions
            for o in a.option_strings
            if o == "--out" or (o == "--json" and a.metavar == "FILE")
        ]
        if flags:
            found[verb] = flags
    return found


# per command taking an output path: its arguments, with {run} and {out} to fill in
WRITERS = {
    "train": ["train", "charlm-sample", "--out", "{out}", "--no-progress"],
    "export": ["export", "{run}", "--out", "{out}"],
    "inspect": ["inspect", "{run}", "--text", "the cat", "--out", "{out}"],
    "bench": ["bench", "--quick", "--json", "{out}"],
}


def test_every_command_with_an_output_path_is_covered():
    assert {verb: flags[0] for verb, flags in _output_flags().items()} == {
        "train": "--out",
        "export": "--out",
        "inspect": "--out",
        "bench": "--json",
    }
    assert set(WRITERS) == set(_output_flags())


@pytest.mark.parametrize("verb", sorted(WRITERS))
def test_no_command_writes_inside_a_runs_checkpoints(runs, verb, capsys):
    run = runs[2]
    inside = run / "checkpoints" / f"{verb}-output"
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    argv = [a.format(run=run, out=inside) for a in WRITERS[verb]]
    assert _exit(argv) == 2 and _exit([*argv, "--force"] if verb != "train" else argv) == 2
    assert "checkpoints/" in capsys.readouterr().err
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before


@pytest.mark.parametrize("verb", sorted(set(WRITERS) - {"train"}))
def test_no_command_replaces_an_existing_file_without_force(runs, verb, tmp_path, capsys):
    existing = tmp_path / "mine.txt"
    existing.write_text("keep me")
    argv = [a.format(run=runs[2], out=existing) for a in WRITERS[verb]]
    assert _exit(argv) == 2
    err = capsys.readouterr().err  # export, bench: a new file; inspect: a folder
    assert "expected a new file" in err or "expected a folder, got a file" in err
    assert existing.read_text() == "keep me"


def test_train_refuses_an_existing_file_as_its_run_directory(tmp_path, capsys):
    existing = tmp_path / "mine.txt"
    existing.write_text("keep me")
    assert _exit([a.format(out=existing) for a in WRITERS["train"]]) == 2
    assert "expected a new or empty directory" in capsys.readouterr().err
    assert existing.read_text() == "keep me"
