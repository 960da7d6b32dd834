"""Issue 25, item 3: every numeric flag of every command is checked at the boundary (range and
type) with the expected form and the value given; ``--threads`` on every command that
computes."""

from __future__ import annotations

import argparse

import pytest

from rnnlab import argtypes
from rnnlab.cli import main
from rnnlab.cli.main import build_parser
from rnnlab.generation import generate_run
from rnnlab.tasks import PredictError
from serve_runs import LM_SETTINGS, make_run

COMPUTING_VERBS = ("train", "evaluate", "predict", "generate", "score")


def _parsers() -> dict[str, argparse.ArgumentParser]:
    """Every parser of the command line, by verb (the tools' parsers included)."""
    from rnnlab.bench.cli import build_parser as bench
    from rnnlab.export.cli import build_parser as export
    from rnnlab.inspect.cli import build_parser as inspect
    from rnnlab.serve.cli import build_parser as serve

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    parsers = {verb: p for verb, p in sub.choices.items() if p.add_help}
    return {**parsers, "bench": bench(), "export": export(), "inspect": inspect(), "serve": serve()}


def test_no_numeric_flag_takes_a_bare_int_or_float():
    bare = [
        f"{verb} {action.option_strings}"
        for verb, parser in _parsers().items()
        for action in parser._actions
        if action.type in (int, float)
    ]
    assert bare == []


@pytest.mark.parametrize("verb", [*COMPUTING_VERBS, "inspect", "export", "serve"])
def test_every_command_that_computes_takes_threads(verb):
    parser = _parsers()[verb]
    (action,) = [a for a in parser._actions if "--threads" in a.option_strings]
    assert action.type is argtypes.threads


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    return make_run(tmp_path_factory.mktemp("runs") / "chars", "charlm-sample", LM_SETTINGS)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve", "{run}", "--port", "99999"], "--port: expected a port in 0..65535, got '99999'"),
        (["serve", "{run}", "--port", "65536"], "--port: expected a port in 0..65535, got '65536'"),
        (["serve", "{run}", "--port", "80.5"], "--port: expected a port in 0..65535, got '80.5'"),
        (["serve", "{run}", "--timeout", "nan"], "--timeout: expected a number > 0 (finite)"),
        (
            ["generate", "{run}", "--seed", "99999999999999999999999"],
            f"--seed: expected a seed in 0..{2**63 - 1}, got '99999999999999999999999'",
        ),
        (["generate", "{run}", "--seed", "-1"], "--seed: expected a seed in 0.."),
        (["generate", "{run}", "--length", "0"], "--length: expected a token count in 1.."),
        (["generate", "{run}", "--top-p", "1.5"], "--top-p: expected a probability in (0, 1]"),
        (["generate", "{run}", "--temperature", "inf"], "expected a number > 0 (finite)"),
        (["generate", "{run}", "--top-k", "0"], "--top-k: expected an int >= 1, got '0'"),
        (["score", "{run}", "--text", "a", "--threads", "0"], "expected a thread count in 1.."),
        (["train", "charlm-sample", "--nproc", "two"], "--nproc: expected an int >= 1"),
        (["inspect", "{run}", "--text", "a", "--direction", "2"], "expected a direction in 0..1"),
        (["export", "{run}", "--opset", "-3"], "--opset: expected an int >= 1, got '-3'"),
        (["bench", "--repeats", "0"], "--repeats: expected an int >= 1, got '0'"),
    ],
)
def test_bad_numbers_are_refused_with_expected_and_given(lm_run, capsys, argv, message):
    with pytest.raises(SystemExit) as stop:
        main([a.format(run=lm_run) for a in argv])
    assert stop.value.code == 2
    assert message in capsys.readouterr().err


def test_the_library_refuses_a_seed_the_generator_cannot_take(lm_run):
    with pytest.raises(PredictError, match=r"--seed: expected an int in 0\.\.\d+ or None"):
        generate_run(lm_run, "", 5, seed=10**23)
    assert len("".join(generate_run(lm_run, "", 5, seed=2**63 - 1).pieces)) >= 5


def test_the_helpers_accept_their_ranges():
    assert argtypes.port("0") == 0 and argtypes.port("65535") == 65535
    assert argtypes.probability("1") == 1.0 and argtypes.positive_float("1e-3") == 0.001
    assert argtypes.seed(str(2**63 - 1)) == 2**63 - 1
