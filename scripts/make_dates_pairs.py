"""Write a pairs file of dates written two ways: a human format -> ISO 8601 (the "another kind
of pairs" run of RESULTS.md). 20,000 random days of 1900-2099, seed 0, each in one of eight
formats (half of them lower-cased); ``%d.%m.%y`` keeps two digits of the year, so some sources
are ambiguous by construction.

    python scripts/make_dates_pairs.py /tmp/dates.tsv
    rnnlab train pairs --set data.path=/tmp/dates.tsv --threads 1
"""

from __future__ import annotations

import datetime
import random
import sys

FORMATS = ["%B %d, %Y", "%d %B %Y", "%A, %B %d, %Y", "%b %d %Y", "%d/%m/%Y", "%d.%m.%y",
           "%A %d %b %Y", "%Y %B %d"]  # fmt: skip


def main(out: str) -> None:
    rng = random.Random(0)
    start = datetime.date(1900, 1, 1)
    with open(out, "w", encoding="utf-8") as f:
        for _ in range(20000):
            day = start + datetime.timedelta(days=rng.randrange(200 * 365))
            text = day.strftime(rng.choice(FORMATS))
            if rng.random() < 0.5:
                text = text.lower()
            f.write(f"{text}\t{day.isoformat()}\n")


if __name__ == "__main__":
    main(sys.argv[1])
