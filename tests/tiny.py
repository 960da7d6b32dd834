"""Small training settings that several test files share: runs that finish in seconds."""

from __future__ import annotations


def cli_sets(*settings: str) -> list[str]:
    """``--set KEY=VALUE`` arguments of the rnnlab command line, one pair per setting."""
    return [arg for setting in settings for arg in ("--set", setting)]


# mnist-sample through the command line, one thread: two epochs of 20 steps at batch 100.
SMALL_MNIST_CLI = [
    "--threads",
    "1",
    "--no-progress",
    *cli_sets(
        "model.projection=16",
        "model.hidden_sizes=[16]",
        "train.batch_size=100",
        "train.epochs=2",
        "run.log_every=5",
    ),
]

# imdb-sample overrides for the inspect tests: one quick epoch, no logs or checkpoints.
TINY_IMDB_NO_LOGS = [
    "model.embedding_dim=8",
    "model.hidden_sizes=[8]",
    "data.maxlen=60",
    "train.epochs=1",
    "train.batch_size=250",
    "data.num_words=2000",
    "run.log_every=0",
    "run.checkpoint_every=0",
]


def merge_settings(base: list[str], *settings: str) -> list[str]:
    """``base`` ("KEY=VALUE" strings) with each of ``settings`` replacing the one of the same key
    (or appended): rnnlab refuses a key given twice."""
    keys = {s.split("=", 1)[0]: s for s in settings}
    kept = [s for s in base if s.split("=", 1)[0] not in keys]
    return [*kept, *keys.values()]


def with_sets(argv: list[str], *settings: str) -> list[str]:
    """Command-line ``argv`` with each of ``settings`` replacing its key's ``--set`` (or added)."""
    keys = {s.split("=", 1)[0] for s in settings}
    out: list[str] = []
    pairs = iter(range(len(argv)))
    for k in pairs:
        if argv[k] == "--set" and argv[k + 1].split("=", 1)[0] in keys:
            next(pairs)  # drop the pair
            continue
        out.append(argv[k])
    return [*out, *cli_sets(*settings)]
