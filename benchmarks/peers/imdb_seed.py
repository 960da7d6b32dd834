"""Peer (f): the tutorial's experiment 2 as a plain PyTorch program, against ``rnnlab train
imdb-seed`` as a whole command (issue 24).

The recipe is the preset's: IMDB reviews as Keras encodes them (``num_words=1000``, punctuation
not a token), pre-padded and pre-truncated to 20 ids; Embedding(1000, 8) -> LSTM 256 (every
step) -> Dropout 0.5 -> LSTM 256, its last output -> Dropout 0.5 -> Linear 256 -> 2, softmax
cross-entropy, Adam 1e-3 (eps 1e-7, Keras's, as rnnlab's ``make_optimizer``), batch 512 shuffled
each epoch, 20 epochs, validation on the 25,000 test reviews after every epoch (batch 2,500);
the padding is read like any word (no mask), as in the tutorial. The arrays are rnnlab's own:
``rnnlab.data.imdb.load_imdb``, the same punctuation filter and ``pad_sequences`` call as
``rnnlab.tasks.text``, so both programs see identical ids. Everything else is written the way a
PyTorch user would: ``TensorDataset`` and ``DataLoader``, ``nn.Embedding``, ``nn.LSTM``,
``torch.optim.Adam``, torch's default initialisations. Example::

    PYTHONPATH=src python benchmarks/peers/imdb_seed.py --data-dir ../shared/data --threads 1
"""

from __future__ import annotations

import time

import numpy as np
import torch
from classifier_common import evaluate, finish, parse
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from rnnlab.data import get_word_index, load_imdb, pad_sequences
from rnnlab.tasks.text import drop_ids, punctuation_ids

NUM_WORDS, MAXLEN = 1000, 20


class TwoLSTM(nn.Module):
    """(B, T) ids -> (B, 2) logits."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(NUM_WORDS, 8)
        self.lstm1 = nn.LSTM(8, 256, batch_first=True)
        self.lstm2 = nn.LSTM(256, 256, batch_first=True)
        self.dropout = nn.Dropout(0.5)
        self.out = nn.Linear(256, 2)

    def forward(self, ids: Tensor) -> Tensor:
        x, _ = self.lstm1(self.embedding(ids))  # (B, T, 256)
        _, (h, _) = self.lstm2(self.dropout(x))  # h (1, B, 256): the last step's output
        return self.out(self.dropout(h[0]))


def load(data_dir: str | None, sample: bool) -> tuple[TensorDataset, TensorDataset]:
    """Train and test reviews as rnnlab's imdb-seed preset prepares them."""
    (x_train, y_train), (x_test, y_test) = load_imdb(
        num_words=NUM_WORDS, data_dir=data_dir, sample=sample
    )
    dropped = punctuation_ids(get_word_index(data_dir, sample=sample))

    def dataset(x: np.ndarray, y: np.ndarray) -> TensorDataset:
        ids = pad_sequences(
            drop_ids(x, dropped), maxlen=MAXLEN, padding="pre", truncating="pre", dtype="int64"
        )  # (N, 20)
        return TensorDataset(torch.from_numpy(ids), torch.as_tensor(y))

    return dataset(x_train, y_train), dataset(x_test, y_test)


def main() -> None:
    args = parse(__doc__.splitlines()[0], "IMDB", epochs=20)
    train_set, test_set = load(args.data_dir, args.sample)
    train = DataLoader(train_set, batch_size=512, shuffle=True)
    test = DataLoader(test_set, batch_size=2500)
    model = TwoLSTM()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
    loss_fn = nn.CrossEntropyLoss()
    step = 0
    train_s = 0.0
    history = []
    for epoch in range(args.epochs):
        t0 = time.perf_counter()
        seen = right = 0
        loss_sum = 0.0
        for x, y in train:
            logits = model(x)
            loss = loss_fn(logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            seen += len(y)
            loss_sum += loss.item() * len(y)
            right += int((logits.argmax(1) == y).sum())
        seconds = time.perf_counter() - t0
        train_s += seconds
        val_loss, val_acc = evaluate(model, test)
        history.append(
            {
                "epoch": epoch + 1,
                "loss": loss_sum / seen,
                "accuracy": right / seen,
                "val_loss": val_loss,
                "val_accuracy": val_acc,
                "seconds": seconds,
            }
        )
        print(
            f"Epoch {epoch + 1}/{args.epochs} - {seconds:.0f}s - loss: {loss_sum / seen:.4f} - "
            f"acc: {right / seen:.4f} - val_loss: {val_loss:.4f} - val_acc: {val_acc:.4f}"
        )
    test_loss, test_acc = history[-1]["val_loss"], history[-1]["val_accuracy"]
    finish(args, test_acc, step, train_s, test_loss=test_loss, history=history)


if __name__ == "__main__":
    main()
