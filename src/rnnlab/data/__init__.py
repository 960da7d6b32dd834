"""Datasets and preprocessing: MNIST, IMDB, Keras-compatible padding and one-hot encoding.

Every loader accepts ``data_dir`` (the dataset's own folder, or a root holding ``mnist/`` and
``imdb/``), ``sample=True`` (the real data sample shipped inside the package: works with no
files and no network), ``download`` and ``progress``. Without ``data_dir`` the files live in the
cache root ``$RNNLAB_DATA`` or ``~/.cache/rnnlab``; the exact rule is in
:mod:`rnnlab.data.paths`. Downloads are verified (sha256 of MNIST's decompressed files, md5 of
the IMDB archive) and written atomically. Every data problem raises :class:`DataError`, naming
the file, what was expected and what was found. The library never prints.

For language models: :func:`load_corpus` reads a text corpus (the IMDB reviews, or any text
file) into id streams over a :class:`Vocabulary` (:mod:`rnnlab.data.corpus`); :func:`batchify`
cuts a stream into contiguous rows and :func:`windows` walks them ``bptt`` steps at a time, for
truncated backpropagation through time (:mod:`rnnlab.data.streams`).
"""

from rnnlab.data.corpus import Corpus, load_corpus
from rnnlab.data.errors import DataError, DataWarning
from rnnlab.data.idx import read_idx
from rnnlab.data.imdb import decode, encode_text, get_word_index, load_imdb, load_imdb_texts
from rnnlab.data.imdb_archive import Reviews
from rnnlab.data.mnist import load_idx_dataset, load_mnist, mnist_dataset, mnist_to_sequences
from rnnlab.data.paths import cache_root, sample_dir
from rnnlab.data.sequence import pad_sequences, to_categorical
from rnnlab.data.streams import batchify, windows
from rnnlab.data.text import tokenize
from rnnlab.data.vocab import Vocabulary

__all__ = [
    "Corpus",
    "DataError",
    "DataWarning",
    "Reviews",
    "Vocabulary",
    "batchify",
    "cache_root",
    "decode",
    "encode_text",
    "get_word_index",
    "load_corpus",
    "load_idx_dataset",
    "load_imdb",
    "load_imdb_texts",
    "load_mnist",
    "mnist_dataset",
    "mnist_to_sequences",
    "pad_sequences",
    "read_idx",
    "sample_dir",
    "to_categorical",
    "tokenize",
    "windows",
]
