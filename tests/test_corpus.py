"""Language-model corpora: sources, splits, vocabularies, batching, and the bad inputs."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

from rnnlab.data.corpus import imdb_line, load_corpus, read_text
from rnnlab.data.errors import DataError
from rnnlab.data.streams import batchify, check_stream, num_windows, shard_rows, windows
from rnnlab.data.vocab import Vocabulary, tokenize_text


def write_layout(folder, train="a b c\nb c\n", valid="c a\n", test="a z\n"):
    folder.mkdir(exist_ok=True)
    for name, text in (("train.txt", train), ("valid.txt", valid), ("test.txt", test)):
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def test_pytorch_example_layout_has_one_eos_per_line(tmp_path):
    corpus = load_corpus(write_layout(tmp_path / "ptb"), "word")
    vocab = corpus.vocab
    assert vocab.tokens == ("<unk>", "<eos>", "b", "c", "a")  # by count, then by text
    assert vocab.decode(corpus.train) == "a b c\nb c\n"
    assert corpus.train.tolist() == [4, 2, 3, 1, 2, 3, 1]
    assert corpus.test.tolist() == [4, 0, 1]  # z is not in the training vocabulary
    assert corpus.unknown == {"train": 0, "valid": 0, "test": 1}


def test_literal_unk_in_the_text_is_the_unk_token_and_not_counted(tmp_path):
    corpus = load_corpus(write_layout(tmp_path, train="a <unk> a\n", test="<unk> q\n"), "word")
    assert corpus.train.tolist() == [2, 0, 2, 1]
    assert corpus.unknown["test"] == 1  # q only


def test_single_file_splits_contiguously_90_5_5(tmp_path):
    text = "".join(chr(ord("a") + i % 26) for i in range(1000))
    path = tmp_path / "letters.txt.gz"
    path.write_bytes(gzip.compress(text.encode()))
    corpus = load_corpus(path, "char")
    assert (len(corpus.train), len(corpus.valid), len(corpus.test)) == (900, 50, 50)
    decoded = "".join(corpus.vocab.decode(corpus.split(s)) for s in ("train", "valid", "test"))
    assert decoded == text


def test_folder_of_files_reads_all_but_hidden_ones_in_order(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "a.txt").write_text("x" * 100 + "\n")
    (tmp_path / "b" / "c.txt").write_text("y" * 99 + "\n")
    (tmp_path / ".hidden").write_text("\x00")
    corpus = load_corpus(tmp_path, "char")
    assert corpus.vocab.decode(np.concatenate([corpus.train, corpus.valid, corpus.test])) == (
        "x" * 100 + "\n" + "y" * 99 + "\n"
    )


def test_word_tokenisers():
    assert tokenize_text("a  b\n\nc", "whitespace") == ["a", "b", "<eos>", "<eos>", "c", "<eos>"]
    assert tokenize_text("a b\n", "whitespace") == ["a", "b", "<eos>"]
    assert tokenize_text("I speak", "imdb", end_lines=False) == ["i", "speak"]
    assert imdb_line("Good.<br /><br />Very\ngood. ") == "Good. Very good."


def test_vocabulary_json_round_trip_and_encoding():
    vocab = Vocabulary.build({"é": 3, "a": 5, "b": 5, "\n": 1}, "chars", max_size=4)
    assert vocab.tokens == ("<unk>", "a", "b", "é")
    again = Vocabulary.from_json(vocab.to_json())
    assert again == vocab and again.level == "char" and again.eos_id is None
    encoded = again.encode_text("abxéyx\n")
    assert encoded.ids.tolist() == [1, 2, 0, 3, 0, 0, 0]
    assert encoded.unknown == 4 and encoded.unknown_tokens == ("x", "y", "\n")
    words = Vocabulary.build({"sky": 2, "french": 1}, "imdb")
    assert words.encode_text("The sky\n").ids.tolist() == [0, 2, 1]
    assert Vocabulary.from_json(words.to_json().encode()).decode([2, 1, 3]) == "sky\nfrench"


def test_vocabulary_save_and_load(tmp_path):
    vocab = Vocabulary.build({"sky": 2, "français": 1}, "whitespace")
    path = vocab.save(tmp_path / "run" / "vocab.json")
    assert Vocabulary.load(path) == vocab and not list(path.parent.glob(".*.part"))
    (tmp_path / "model.json").write_text('{"format": "rnnlab.run"}')
    with pytest.raises(
        DataError, match=r"model.json: expected format 'rnnlab.vocabulary', got 'rnnlab.run'"
    ):
        Vocabulary.load(tmp_path / "model.json")
    with pytest.raises(DataError, match="absent.json: expected a vocabulary JSON file"):
        Vocabulary.load(tmp_path / "absent.json")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1, 2]", "expected format 'rnnlab.vocabulary', got 'list'"),
        ("{not json", "expected a JSON vocabulary, got invalid JSON"),
        ('{"format": "rnnlab.vocabulary", "version": 9}', "expected version 1, got 9"),
    ],
)
def test_from_json_refuses_other_documents(text, message):
    with pytest.raises(DataError, match=message):
        Vocabulary.from_json(text, source="run/vocab.json")


def test_vocabulary_mismatch_is_a_clear_error(tmp_path):
    vocab = Vocabulary.build({"a": 1}, "chars")
    with pytest.raises(
        DataError, match=r"expected 300 tokens \(the size of the checkpoint\), got 2"
    ):
        vocab.check_size(300, "the checkpoint")
    with pytest.raises(DataError, match="expected a word vocabulary for this corpus, got a char"):
        load_corpus(write_layout(tmp_path), "word", vocab=vocab)
    doc = vocab.to_json().replace('"size": 2', '"size": 3')
    with pytest.raises(DataError, match=r"expected 3 tokens \(its 'size'\), got 2"):
        Vocabulary.from_json(doc)


def test_given_vocabulary_is_used_not_rebuilt(tmp_path):
    first = load_corpus(write_layout(tmp_path / "one"), "word")
    second = load_corpus(write_layout(tmp_path / "two", train="z z z\n"), "word", vocab=first.vocab)
    assert second.vocab is first.vocab and second.unknown["train"] == 3
    imdb_words = Vocabulary.build({"sky": 1}, "imdb")  # a file read with an IMDB model's vocab
    third = load_corpus(
        write_layout(tmp_path / "three", train="The SKY\nsky\n"), "word", vocab=imdb_words
    )
    assert third.train.tolist() == [0, 2, 1, 2, 1]  # lower-cased, still one <eos> per line


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "expected UTF-8 text, got an empty file"),
        (b" \n\n", "expected UTF-8 text, got an empty file"),
        (b"ab\x00cd", "got a NUL byte at offset 2"),
        (b"caf\xe9 au lait", "got byte 0xe9 at offset 3 that is not UTF-8"),
        (b"\x1f\x8b\x08\x00broken", "expected a readable text or gzip file"),
    ],
)
def test_bad_files_are_clear_errors(tmp_path, content, message):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        load_corpus(path, "char")


def test_missing_and_incomplete_sources(tmp_path):
    with pytest.raises(DataError, match="got nothing there"):
        load_corpus(tmp_path / "nope", "char")
    with pytest.raises(DataError, match="expected text files in the folder, got none"):
        load_corpus(tmp_path, "char")
    (tmp_path / "train.txt").write_text("a b\n")
    with pytest.raises(DataError, match="together, got only train.txt"):
        load_corpus(tmp_path, "word")
    with pytest.raises(DataError, match="got no such file"):
        read_text(tmp_path / "absent.txt")
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    (tiny / "t.txt").write_text("abc")
    with pytest.raises(DataError, match="split 90/5/5.*got 3 tokens"):
        load_corpus(tiny / "t.txt", "char")


def test_batchify_rows_are_contiguous_and_windows_shift_by_one():
    data = batchify(np.arange(13), 3)  # (3, 4), 12 dropped
    assert data.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    pairs = list(windows(batchify(torch.arange(30), 2), bptt=4))  # rows of 15 -> 4+4+4+2
    assert [x.shape[1] for x, _ in pairs] == [4, 4, 4, 2] == [y.shape[1] for _, y in pairs]
    assert num_windows(15, 4) == 4 and num_windows(15, 4, drop_last=True) == 3
    x, y = pairs[1]
    assert x.tolist() == [[4, 5, 6, 7], [19, 20, 21, 22]] and y.tolist() == [
        [5, 6, 7, 8],
        [20, 21, 22, 23],
    ]
    assert x.dtype == torch.int64
    inputs = torch.cat([x for x, _ in pairs], dim=1)  # every id but each row's last, once
    assert inputs.tolist() == [list(range(14)), list(range(15, 29))]
    assert [x.tolist() for x, _ in windows(batchify(torch.arange(30), 2), 4, start=3)] == [
        [[12, 13], [27, 28]]
    ]


def test_shards_are_whole_rows_and_cover_the_batch():
    data = batchify(torch.arange(40), 4)  # (4, 10)
    parts = [shard_rows(data, r, 2) for r in range(2)]
    assert torch.equal(torch.cat(parts), data) and parts[1][0, 0].item() == 20
    with pytest.raises(ValueError, match="divisible by world_size 3, got 4"):
        shard_rows(data, 0, 3)


def test_corpus_smaller_than_one_window_is_a_clear_error():
    with pytest.raises(
        DataError, match=r"expected at least 720 tokens for batch size 20 x bptt 35"
    ):
        check_stream(np.zeros(700), 20, 35, "valid split")
    with pytest.raises(DataError, match="expected at least 6 tokens for batch size 3"):
        batchify(np.zeros(5), 3)


def test_imdb_sample_splits_are_fixed_and_disjoint():
    corpus = load_corpus("imdb", "char", sample=True)
    again = load_corpus("imdb", "char", sample=True, vocab=corpus.vocab)
    for split in ("train", "valid", "test"):
        assert np.array_equal(corpus.split(split), again.split(split))
    assert corpus.source == "imdb (sample)" and corpus.unknown["train"] == 0
    newline = corpus.vocab.encode("\n").ids[0]
    assert np.count_nonzero(corpus.train == newline) == 2500  # one line per review
    assert np.count_nonzero(corpus.valid == newline) == np.count_nonzero(corpus.test == newline)
    assert "<br" not in corpus.vocab.decode(corpus.train[:200_000])
    words = load_corpus("imdb", "word", sample=True, max_vocab=5000)
    assert len(words.vocab) == 5000 and words.vocab.tokenizer == "imdb"
    assert np.count_nonzero(words.train == words.vocab.eos_id) == 2500
    assert words.train.dtype == np.int16


@pytest.mark.slow
def test_full_imdb_splits(shared_data):
    """75,000 training reviews (train + unsup), the 25,000 test reviews halved, one line each."""
    corpus = load_corpus("imdb", "word", data_dir=shared_data / "imdb", max_vocab=10000)
    eos = corpus.vocab.eos_id
    lines = [np.count_nonzero(corpus.split(s) == eos) for s in ("train", "valid", "test")]
    assert lines == [75_000, 12_500, 12_500]
    assert corpus.source == "imdb" and len(corpus.vocab) == 10000
