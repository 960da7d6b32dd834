"""The verbs that print more than one line: train, predict, summary."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rnnlab import distributed
from rnnlab.config import Config, load_preset
from rnnlab.predict import PredictError, predict_each
from rnnlab.runs import Report, RunError, default_run_dir, read_config, resume, train
from rnnlab.runs.layout import check_new_out
from rnnlab.tasks import get_task
from rnnlab.train import ConsoleLogger, ProgressBar

__all__ = [
    "final_lines",
    "predict_command",
    "quantize_command",
    "summary_command",
    "train_command",
]


def train_command(args: argparse.Namespace) -> int:
    """``rnnlab train``: progress bar on stderr, log lines and the final report on stdout.

    Under torchrun (``WORLD_SIZE`` > 1) it is one rank of a data-parallel run and only rank 0
    prints; ``--nproc N`` starts N such ranks on this machine and waits for them.
    """
    # --threads: checked by its type and applied by rnnlab.cli.main before any verb runs
    if args.nproc is not None and args.nproc != 1:
        config = _config(args)
        return _launch(args, config, Path(args.resume or args.out or default_run_dir(config.name)))
    context = distributed.from_environment(args.dist_timeout)
    try:
        config = context.on_main(lambda: _config(args))  # rank 0 reads a resumed run's config
        out = Path(args.resume or args.out or default_run_dir(config.name))
        report = _train_or_resume(args, config, out, context)
    finally:
        distributed.shutdown()
    if not context.is_main:
        return 0
    for line in final_lines(report, out):
        print(line)
    return 0


def final_lines(report: Report, out: Path) -> list[str]:
    """What ``rnnlab train`` prints last: the test metrics (the loss aside; accuracy as the
    tutorial's "Testing Accuracy" line), the best validation value, and the throughput."""
    lines = []
    for name, value in report.test.items():
        if name == "loss" or value is None:
            continue
        lines.append(
            f"Testing Accuracy: {value:.4f}" if name == "accuracy" else f"Test {name}: {value:.4f}"
        )
    if report.best is not None:
        shown = report.selection_key.replace("accuracy", "acc")
        lines.append(f"Best {shown}: {report.best:.4f} (epoch {report.best_epoch})")
    lines.append(
        f"{report.steps} steps in {report.wall_seconds:.1f} s "
        f"({report.samples_per_second:.0f} {report.throughput_unit}/s). Run saved in {out}"
    )
    return lines


def _config(args: argparse.Namespace) -> Config:
    if args.resume:
        if args.overrides:
            raise RunError(
                "--resume expected no --set (a run continues with its own "
                f"configuration), got {args.overrides}"
            )
        config = read_config(args.resume)
        if args.preset and args.preset != config.name:
            raise RunError(
                f"--resume {args.resume}: expected a run of preset {args.preset!r}, "
                f"got one of {config.name!r}"
            )
        return config
    if not args.preset:
        raise RunError(
            "train expected a PRESET (see `rnnlab presets`) or --resume RUN_DIR, got neither"
        )
    return load_preset(args.preset, args.overrides)


def _train_or_resume(
    args: argparse.Namespace, config: Config, out: Path, context: distributed.Context
) -> Report:
    callbacks = (
        [
            ConsoleLogger(config.run.log_every, stream=sys.stdout),
            ProgressBar(stream=sys.stderr, disable=True if args.no_progress else None),
        ]
        if context.is_main
        else []
    )
    # under torchrun without --out, rank 0 names the directory and tells the others
    out_arg = out if args.resume or args.out or not context.enabled else None
    try:
        if args.resume:
            if context.is_main:
                print(f"Resuming {out} ({config.name})", flush=True)
            return resume(out, args.data_dir, callbacks, context=context)
        return train(config, out_arg, args.data_dir, callbacks=callbacks, context=context)
    except KeyboardInterrupt:
        if context.is_main and (out / "checkpoints" / "last.json").is_file():
            print(f"Interrupted. Continue with: rnnlab train --resume {out}", file=sys.stderr)
        raise


def child_argv(args: argparse.Namespace, out: Path) -> list[str]:
    """The ``rnnlab train`` arguments each rank of ``--nproc`` runs with: the same run, with
    the run directory named (so all ranks and the hint on failure agree) and no --nproc."""
    argv = (
        ["train", "--resume", str(out)]
        if args.resume
        else ["train", args.preset, "--out", str(out)]
    )
    for override in args.overrides:
        argv += ["--set", override]
    if args.data_dir:
        argv += ["--data-dir", args.data_dir]
    if args.threads is not None:
        argv += ["--threads", str(args.threads)]
    if args.no_progress:
        argv.append("--no-progress")
    return [*argv, "--dist-timeout", str(args.dist_timeout)]


def _launch(args: argparse.Namespace, config: Config, out: Path) -> int:
    if args.nproc < 1:
        raise RunError(f"--nproc expected a positive int, got {args.nproc}")
    if distributed.under_launcher():
        raise RunError(
            "--nproc expected a plain process, got one started by torchrun "
            "(WORLD_SIZE is set): use torchrun's --nproc-per-node instead"
        )
    distributed.Context(world_size=args.nproc).check_batch_size(config.train.batch_size)
    if not args.resume:
        check_new_out(out)
    try:
        distributed.launch(child_argv(args, out), args.nproc)
    except distributed.LaunchError as exc:
        hint = ""
        if (out / "checkpoints" / "last.json").is_file():
            hint = (
                f"; the last checkpoint is kept: continue with `rnnlab train --resume {out}"
                f" --nproc {args.nproc}` (any --nproc)"
            )
        print(f"rnnlab train: error: {exc}{hint}", file=sys.stderr)
        return 1
    return 0


def _read_reviews(path: str) -> list[tuple[int, str]]:
    """``(line number, review)`` for each non-blank line of ``path`` (numbered as an editor
    numbers them, blank lines included)."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PredictError(
            f"{path}: expected UTF-8 text with one review per line, got bytes "
            f"that are not UTF-8 ({exc.reason} at byte {exc.start})"
        ) from exc
    except OSError as exc:
        raise PredictError(f"{path}: expected a readable text file, got {exc}") from exc
    if "\x00" in text:
        raise PredictError(f"{path}: expected text, got binary data (NUL bytes)")
    reviews = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not reviews:
        raise PredictError(f"{path}: expected at least one non-empty line, got none")
    return reviews


def _predict_inputs(args: argparse.Namespace) -> tuple[list, list[str], dict, str]:
    """``(raw inputs, a label naming each, prepare options, input kind)`` from the flags."""
    if args.image:
        return list(args.image), list(args.image), {"invert": args.invert}, "image"
    if getattr(args, "wav", None):
        return list(args.wav), list(args.wav), {}, "audio"
    if args.text:
        return list(args.text), [f"--text {k + 1}" for k in range(len(args.text))], {}, "text"
    numbered = _read_reviews(args.file)
    labels = [f"{args.file} line {n}" for n, _ in numbered]
    return [text for _, text in numbered], labels, {}, "text"


def predict_command(args: argparse.Namespace) -> int:
    """``rnnlab predict``: one line (or JSON object) per input. An input the model cannot take
    is reported on stderr by its flag or line number (with ``"error"`` in ``--json``) and the
    others are still answered; then the exit status is 1. A review longer than the model reads
    (``data.maxlen``) gets a note on stderr (``"truncated": true`` in ``--json``)."""
    get_task(read_config(args.run_dir)).check_verb("predict", args.run_dir)
    raw, labels, options, kind = _predict_inputs(args)
    results = predict_each(args.run_dir, raw, args.checkpoint, kind, **options)
    failed = 0
    for label, r in zip(labels, results, strict=True):
        if args.file:
            r = {"line": int(label.rsplit(" ", 1)[1]), **r}
        if "error" in r:
            failed += 1
            # an image's error names its file already, as the label does
            where = "" if r["error"].startswith(f"{label}:") else f"{label}: "
            print(f"rnnlab predict: error: {where}{r['error']}", file=sys.stderr)
        elif r.get("truncated"):
            print(
                f"rnnlab predict: note: {label} is longer than the model reads: only "
                "data.maxlen words of it were used (truncated)",
                file=sys.stderr,
            )
        if args.json:
            print(json.dumps(r))
        elif "error" not in r:
            shown = r["input"] if len(r["input"]) <= 60 else r["input"][:57] + "..."
            print(f"{r['label_name']}\t{r['probability']:.4f}\t{shown}")
    if failed:
        print(
            f"rnnlab predict: {failed} of {len(results)} inputs failed (see above)",
            file=sys.stderr,
        )
        return 1
    return 0


def summary_command(args: argparse.Namespace) -> int:
    """``rnnlab summary``: the Keras-style table of a preset's model, run once on zeros of its
    task's input shape."""
    from rnnlab.nn.summary import summary

    task = get_task(load_preset(args.preset, args.overrides))
    inputs = task.example_inputs(2)  # ((B, T, I) pixels,) or ((B, T) ids,) or several
    example = inputs[0] if len(inputs) == 1 else list(inputs)
    print(summary(task.build_model(), input_data=example))
    return 0


def quantize_command(args: argparse.Namespace) -> int:
    """``rnnlab quantize``: write the int8 model, then one line for the files and sizes and one
    per figure measured (float32, int8, change), or int8.json's content with ``--json``."""
    from rnnlab.cli.progress import progress_bar
    from rnnlab.quantize import quantize_run

    with progress_bar(f"measuring {args.split}: float32, then int8", "batch") as bar:

        def progress(label: str, done: int, total: int) -> None:
            bar(done + (total if label == "int8" else 0), 2 * total)

        report = quantize_run(
            args.run_dir,
            args.checkpoint,
            per_channel=not args.per_tensor,
            force=args.force,
            measure=not args.no_measure,
            data_dir=args.data_dir,
            split=args.split,
            progress=progress,
        )
    if args.json:
        print(json.dumps(report))
        return 0
    source, size = report["source"], report["bytes"]
    print(
        f"int8 model of checkpoint {source['tag']} (step {source['step']}): {report['file']} "
        f"({size['int8'] / 2**20:.2f} MiB of tensors; float32 {size['float32'] / 2**20:.2f} MiB), "
        f"engine {report['scheme']['engine_when_written']}"
    )
    measured = report.get("measured")
    if measured:
        for name, before in measured["float32"].items():
            after = measured["int8"][name]
            print(
                f"{measured['split']} {name}: float32 {before:.4f}, int8 {after:.4f} "
                f"(change {after - before:+.4f})"
            )
    return 0
