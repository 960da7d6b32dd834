"""How text runs classify reviews that are not in the IMDB corpus (issue 26's last criterion).

    PYTHONPATH=src python benchmarks/outside_reviews.py RUN [RUN ...]

The 40 reviews of ``benchmarks/data/reviews_outside_imdb.jsonl`` (20 positive, 20 negative)
were written for this check by rnnlab's developers: short film and series reviews in everyday
English, none taken from IMDB or any other corpus, labelled by their writer. Each run classifies
them exactly as ``rnnlab predict`` would (its best checkpoint); the script prints each run's
accuracy and mean probability of the true class, and the reviews it got wrong.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rnnlab.predict import predict_texts

REVIEWS = Path(__file__).parent / "data" / "reviews_outside_imdb.jsonl"


def read_reviews(path: Path = REVIEWS) -> list[dict]:
    """The labelled reviews, one JSON object a line: ``{"label": 0 or 1, "text": ...}``."""
    reviews = [json.loads(line) for line in path.read_text("utf-8").splitlines() if line]
    bad = [r for r in reviews if r.get("label") not in (0, 1) or not r.get("text")]
    if bad:
        raise ValueError(f"{path}: expected a label 0 or 1 and a text per line, got {bad[0]}")
    return reviews


def score(run: Path, reviews: list[dict]) -> dict:
    """Accuracy, mean probability of the true class and the misread reviews of one run."""
    results = predict_texts(run, [r["text"] for r in reviews])
    right = [res["label"] == r["label"] for res, r in zip(results, reviews, strict=True)]
    truth = [res["probabilities"][r["label"]] for res, r in zip(results, reviews, strict=True)]
    wrong = [r["text"] for r, ok in zip(reviews, right, strict=True) if not ok]
    return {
        "run": str(run),
        "accuracy": sum(right) / len(right),
        "mean_true_probability": sum(truth) / len(truth),
        "wrong": wrong,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="text-classifier run directories")
    args = parser.parse_args()
    reviews = read_reviews()
    for run in args.runs:
        result = score(run, reviews)
        print(
            f"{run}: accuracy {result['accuracy']:.3f} on {len(reviews)} reviews, mean "
            f"probability of the true class {result['mean_true_probability']:.3f}"
        )
        for text in result["wrong"]:
            print(f"    wrong: {text}")


if __name__ == "__main__":
    main()
