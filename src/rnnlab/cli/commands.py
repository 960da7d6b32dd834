"""The verbs that print more than one line: train, predict, summary."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rnnlab.config import load_preset
from rnnlab.predict import PredictError, predict_images, predict_texts
from rnnlab.run import RunError, default_run_dir, read_config, resume, train
from rnnlab.train import ConsoleLogger, ProgressBar

__all__ = ["predict_command", "summary_command", "train_command"]


def train_command(args: argparse.Namespace) -> int:
    """``rnnlab train``: progress bar on stderr, log lines and the final report on stdout."""
    if args.threads is not None:
        if args.threads < 1:
            raise RunError(f"--threads expected a positive int, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    if args.resume:
        if args.overrides:
            raise RunError("--resume expected no --set (a run continues with its own "
                           f"configuration), got {args.overrides}")
        config = read_config(args.resume)
        if args.preset and args.preset != config.name:
            raise RunError(f"--resume {args.resume}: expected a run of preset {args.preset!r}, "
                           f"got one of {config.name!r}")
    else:
        if not args.preset:
            raise RunError("train expected a PRESET (see `rnnlab presets`) or --resume RUN_DIR, "
                           "got neither")
        config = load_preset(args.preset, args.overrides)
    callbacks = [
        ConsoleLogger(config.run.log_every, stream=sys.stdout),
        ProgressBar(stream=sys.stderr, disable=True if args.no_progress else None),
    ]
    out = Path(args.resume or args.out or default_run_dir(config.name))
    try:
        if args.resume:
            print(f"Resuming {out} ({config.name})", flush=True)
            report = resume(out, args.data_dir, callbacks)
        else:
            report = train(config, out, args.data_dir, callbacks=callbacks)
    except KeyboardInterrupt:
        if (out / "checkpoints" / "last.json").is_file():
            print(f"Interrupted. Continue with: rnnlab train --resume {out}", file=sys.stderr)
        raise
    if report.get("test_accuracy") is not None:
        print(f"Testing Accuracy: {report['test_accuracy']:.4f}")
    if report.get("best_val_accuracy") is not None:
        print(f"Best val_acc: {report['best_val_accuracy']:.4f} (epoch {report['best_epoch']})")
    print(f"{report['steps']} steps in {report['wall_seconds']:.1f} s "
          f"({report['samples_per_second']:.0f} samples/s). Run saved in {out}")
    return 0


def _read_reviews(path: str) -> list[str]:
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PredictError(f"{path}: expected UTF-8 text with one review per line, got bytes "
                           f"that are not UTF-8 ({exc.reason} at byte {exc.start})") from exc
    except OSError as exc:
        raise PredictError(f"{path}: expected a readable text file, got {exc}") from exc
    if "\x00" in text:
        raise PredictError(f"{path}: expected text, got binary data (NUL bytes)")
    reviews = [line for line in text.splitlines() if line.strip()]
    if not reviews:
        raise PredictError(f"{path}: expected at least one non-empty line, got none")
    return reviews


def predict_command(args: argparse.Namespace) -> int:
    """``rnnlab predict``: one line (or JSON object) per input."""
    if args.image:
        results = predict_images(args.run_dir, args.image, args.checkpoint)
    else:
        texts = args.text if args.text else _read_reviews(args.file)
        results = predict_texts(args.run_dir, texts, args.checkpoint)
    for r in results:
        if args.json:
            print(json.dumps(r))
        else:
            shown = r["input"] if len(r["input"]) <= 60 else r["input"][:57] + "..."
            print(f"{r['label_name']}\t{r['probability']:.4f}\t{shown}")
    return 0


def summary_command(args: argparse.Namespace) -> int:
    """``rnnlab summary``: the Keras-style table of a preset's model, run once on zeros of the
    preset's input shape (token ids for text models, 28 rows of pixels for image models)."""
    import torch

    from rnnlab.models import build_model
    from rnnlab.summary import summary

    config = load_preset(args.preset, args.overrides)
    model = build_model(config)
    if config.model.kind == "text":
        example = torch.zeros(2, config.data.maxlen, dtype=torch.int64)  # (B, T) ids
    else:
        example = torch.zeros(2, 28, config.model.input_size)  # (B, T, I)
    print(summary(model, input_data=example))
    return 0
