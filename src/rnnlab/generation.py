"""Using a trained language model: generate text from a prompt, score a text.

Both read a run directory (:func:`rnnlab.runs.load_run`), encode text with the run's own
``vocab.json`` and check everything before the first token comes out, so a bad argument is an
error and never half a result. Characters or words outside the vocabulary become ``<unk>``;
the result says how many (the command line says so once, on stderr).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from rnnlab.argtypes import MAX_SEED
from rnnlab.nn.language_model import MAX_NEW_TOKENS, LanguageModel, check_sampling
from rnnlab.runs import load_run
from rnnlab.tasks import LanguageModelTask, PredictError, get_task

__all__ = ["MAX_NEW_TOKENS", "Generation", "generate_run", "load_language_model", "score_run"]
PathLike = str | os.PathLike[str]


def load_language_model(
    run_dir: PathLike, checkpoint: str = "best"
) -> tuple[LanguageModelTask, LanguageModel]:
    """The task (its vocabulary bound) and the model (eval mode) of a language-model run."""
    config, model, _ = load_run(run_dir, checkpoint)
    task = get_task(config)
    if not isinstance(task, LanguageModelTask) or not isinstance(model, LanguageModel):
        raise PredictError(
            f"{run_dir}: expected a language-model run (model.kind='lm'), got "
            f"model.kind={config.model.kind!r}"
        )
    task.bind_run(run_dir)
    return task, model


@dataclass(frozen=True)
class Generation:
    """A started generation: ``pieces`` yields the text of each new token as it is drawn
    (a character, or a word and a space); ``unknown`` prompt tokens became ``<unk>``."""

    pieces: Iterator[str]
    prompt_tokens: int
    unknown: int
    unknown_tokens: tuple[str, ...]


def generate_run(
    run_dir: PathLike,
    prompt: str,
    length: int = 200,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    checkpoint: str = "best",
) -> Generation:
    """Start generating ``length`` tokens after ``prompt`` (which may be empty: the text then
    starts as a new review would), reading from the state the model had in training just
    before a document boundary (:meth:`rnnlab.tasks.LanguageModelTask.start_state`): the
    prompt built by
    :meth:`rnnlab.tasks.LanguageModelTask.prompt_ids`, the tokens drawn by
    :meth:`rnnlab.LanguageModel.steps`.

    Raises:
        PredictError: a length outside 1..:data:`MAX_NEW_TOKENS`, temperature <= 0, top-p
            outside (0, 1], top-k < 1, a seed outside 0..2**63-1, a binary prompt, or a run
            that is not a language model.
    """
    if isinstance(length, bool) or not isinstance(length, int) or not 1 <= length <= MAX_NEW_TOKENS:
        raise PredictError(f"--length: expected 1..{MAX_NEW_TOKENS} tokens, got {length!r}")
    try:
        check_sampling(temperature, top_k, top_p)
    except ValueError as exc:
        raise PredictError(f"sampling: {exc}") from exc
    if seed is not None and (
        isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED
    ):
        raise PredictError(f"--seed: expected an int in 0..{MAX_SEED} or None, got {seed!r}")
    task, model = load_language_model(run_dir, checkpoint)
    ids, unknown, tokens = task.prompt_ids(prompt, "--prompt")
    start = task.start_state(model)  # a new document, as training saw one begin
    steps = model.steps(ids, length, temperature, top_k, top_p, seed, top=0, state=start)
    prompt_tokens = len(ids) - len(task.start_context())
    return Generation((task.piece(step.token) for step in steps), prompt_tokens, unknown, tokens)


def score_run(
    run_dir: PathLike,
    texts: Sequence[str],
    checkpoint: str = "best",
    per_token: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """Per text: ``tokens``, each token's natural-log probability given the text before it
    (``log_probs``; both left out without ``per_token``, which keeps a long text's scoring to
    its model's memory), the mean ``loss`` and ``bpc`` (characters) or ``perplexity``
    (words), and how many tokens were ``unknown``. The first token is scored as the start of a
    line (see :meth:`rnnlab.tasks.LanguageModelTask.start_context`). ``progress(done,
    total)`` is called with the tokens read over all texts (a command's progress bar)."""
    task, model = load_language_model(run_dir, checkpoint)
    prepared = task.prepare(list(texts), {})
    total, done = sum(int(ids.shape[1]) for ids in prepared.inputs), 0

    def step(n: int) -> None:
        nonlocal done
        done += n
        progress(done, total)

    return task.predict(model, prepared, per_token, step if progress else None)
