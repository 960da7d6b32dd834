"""rnnlab.data.pairs: pairs files, CMUdict, hash splits, vocabularies, each bad input."""

from __future__ import annotations

import gzip
import re
from collections import Counter

import pytest

from rnnlab.data import DataError
from rnnlab.data.pairs import (
    SPECIALS,
    UNK,
    PairVocab,
    load_cmudict,
    load_pairs,
    parse_pairs,
    split_of,
)
from seq2seq_helpers import reversal_pairs, write_pairs


def _parse(text: str, max_length: int = 50):
    return parse_pairs(text, "char", "char", max_length, "f.tsv")


def test_split_is_a_stable_90_5_5_hash():
    assert [split_of(w) for w in ("hello", "world", "tomato")] == ["train", "train", "train"]
    counts = Counter(split_of(f"w{k}") for k in range(20000))
    assert abs(counts["train"] / 20000 - 0.90) < 0.01
    assert abs(counts["val"] / 20000 - 0.05) < 0.005
    assert abs(counts["test"] / 20000 - 0.05) < 0.005


def test_a_file_without_splits_is_split_by_its_source(tmp_path):
    pairs = reversal_pairs(300)
    path = write_pairs(tmp_path / "p.tsv", pairs + [(pairs[0][0], "other")])
    gz = tmp_path / "p.tsv.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    for p in (path, gz):
        s = load_pairs(p, "char", "char", 50)
        assert sum(len(x) for x in (s.train, s.val, s.test)) == 300  # the repeat joined its source
        for name in ("train", "val", "test"):
            assert all(split_of("".join(e.source)) == name for e in getattr(s, name))
    entry = next(
        e for split in (s.train, s.val, s.test) for e in split if "".join(e.source) == pairs[0][0]
    )
    assert entry.references == (tuple(pairs[0][1]), tuple("other"))


def test_word_tokens_and_a_split_column():
    s = parse_pairs("a b\tx y z\ttrain\nc\tw\tvalid\nd\tv\ttest\n", "word", "word", 9)
    assert s.train[0].source == ("a", "b") and s.train[0].references == (("x", "y", "z"),)
    assert [len(s.val), len(s.test)] == [1, 1]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("abc\n", "line 1: expected source<TAB>target[<TAB>split], got 0 tab(s)"),
        ("a\tb\n\t c\n", "line 2: expected a non-empty source, got none"),
        ("a\tb\nc\t \n", "line 2: expected a non-empty target, got none"),
        ("a\tb\tdev\n", "line 1: expected a split in ['test', 'train', 'val', 'valid'], got 'dev'"),
        ("a\tb\ttrain\nc\td\n", "line 2: expected 3 fields like line 1"),
        ("\n \n", "expected source<TAB>target lines, got no pair"),
        ("a\tb\ttrain\nc\td\ttest\n", "expected pairs in the val split, got none"),
        (
            "a" * 51 + "\tb\n",
            "line 1: expected a source of at most 50 tokens (data.max_length), got 51",
        ),
    ],
)
def test_bad_pairs_text(text, message):
    with pytest.raises(DataError, match=re.escape(message)):
        _parse(text)


def test_bad_pairs_files(tmp_path):
    empty = tmp_path / "empty.tsv"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match="expected UTF-8 text, got an empty file"):
        load_pairs(empty, "char", "char", 9)
    binary = tmp_path / "bin.tsv"
    binary.write_bytes(b"ab\tc\x00\x01\x02")
    with pytest.raises(DataError, match="got a NUL byte at offset 4"):
        load_pairs(binary, "char", "char", 9)
    with pytest.raises(DataError, match="got no such file"):
        load_pairs(tmp_path / "missing.tsv", "char", "char", 9)


def test_vocabulary_from_training_tokens():
    v = PairVocab.build([("b", "a", "a"), ("c", "a")], "char")
    assert v.tokens == (*SPECIALS, "a", "b", "c")
    assert v.encode(["a", "z", "c"]) == ([4, UNK, 6], ["z"])
    assert v.decode([2, 4, 5, 3, 0]) == "ab"
    assert PairVocab.from_json(v.to_json(), "x") == v
    with pytest.raises(DataError, match="x: expected"):
        PairVocab.from_json({"level": "char", "tokens": ["a"]}, "x")


def test_cmudict_keeps_a_words_pronunciations_together_without_stress():
    plain, stressed = load_cmudict(), load_cmudict(keep_stress=True)
    total = sum(len(x) for x in (plain.train, plain.val, plain.test))
    assert total > 120_000
    assert abs(len(plain.val) / total - 0.05) < 0.005
    words = {"".join(e.source): e for split in (plain.train, plain.val, plain.test) for e in split}
    assert words["tomato"].references == (
        ("T", "AH", "M", "EY", "T", "OW"),
        ("T", "AH", "M", "AA", "T", "OW"),
    )
    for name in ("train", "val", "test"):
        assert all(split_of("".join(e.source)) == name for e in getattr(plain, name))
    assert not any(re.search(r"\d", p) for e in plain.val for r in e.references for p in r)
    assert any(re.search(r"\d", p) for e in stressed.val for r in e.references for p in r)
