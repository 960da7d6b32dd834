"""Peer (e): the tutorial's experiment 1 as a plain PyTorch program, against ``rnnlab train
mnist-seed`` as a whole command (issue 24).

The recipe is the preset's: MNIST read row by row (28 steps of 28 pixels scaled to [0, 1]),
Linear 28 -> 128, one ``nn.LSTM`` of 128 units with the forget gate's bias at 1.0, its last
output -> Linear 128 -> 10, softmax cross-entropy, Adam 1e-3, batch 128 shuffled each epoch, two
passes over the 60,000 training images, the minibatch loss and accuracy printed every 20 steps,
the test accuracy after each epoch (the last one is the final figure: rnnlab, validating on the
test split, reports that same evaluation rather than running it twice). The images come from
``rnnlab.data.mnist.load_mnist`` (the same verified arrays rnnlab reads); everything else is
written the way a PyTorch user would: ``TensorDataset`` and ``DataLoader``, ``nn.LSTM``,
``torch.optim.Adam`` (with Keras's eps 1e-7, as rnnlab's). Example::

    PYTHONPATH=src python benchmarks/peers/mnist_seed.py --data-dir ../shared/data --threads 1
"""

from __future__ import annotations

import time

import torch
from classifier_common import evaluate, finish, parse
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from rnnlab.data.mnist import load_mnist


class RowLSTM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(28, 128)
        self.lstm = nn.LSTM(128, 128, batch_first=True)
        with torch.no_grad():  # torch's gate order is i, f, g, o: the forget rows are H..2H
            self.lstm.bias_ih_l0[128:256].fill_(1.0)
            self.lstm.bias_hh_l0[128:256].zero_()
        self.out = nn.Linear(128, 10)

    def forward(self, x: Tensor) -> Tensor:
        y, _ = self.lstm(self.inp(x))
        return self.out(y[:, -1])


def main() -> None:
    args = parse(__doc__.splitlines()[0], "MNIST", epochs=2)
    (x_train, y_train), (x_test, y_test) = load_mnist(args.data_dir, sample=args.sample)

    def dataset(x, y) -> TensorDataset:
        return TensorDataset(torch.from_numpy(x).float() / 255.0, torch.from_numpy(y))

    train = DataLoader(dataset(x_train, y_train), batch_size=128, shuffle=True)
    test = DataLoader(dataset(x_test, y_test), batch_size=1000)
    model = RowLSTM()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)  # Keras's eps, as rnnlab's
    loss_fn = nn.CrossEntropyLoss()
    step = 0
    train_s = 0.0
    for epoch in range(args.epochs):
        t0 = time.perf_counter()
        for x, y in train:
            logits = model(x)
            loss = loss_fn(logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if step % 20 == 0:
                acc = (logits.argmax(1) == y).float().mean().item()
                print(
                    f"Iter {step}, Minibatch Loss= {loss.item():.6f}, Training Accuracy= {acc:.5f}"
                )
        train_s += time.perf_counter() - t0
        _, test_acc = evaluate(model, test)  # the last epoch's is the final model's, as in rnnlab
        print(f"Epoch {epoch + 1}/{args.epochs}: test accuracy {test_acc:.4f}")
    finish(args, test_acc, step, train_s)


if __name__ == "__main__":
    main()
