"""Peer (c): connected spoken digits with a plain torch.nn.LSTM and torch.nn.CTCLoss.

The same strings and features as rnnlab's ``digits-ctc`` (built by
``rnnlab.tasks.ctc_data.load_strings`` from the preset's configuration: the same recordings,
seeds, 40 log-mel bands); everything else is plain PyTorch written for this comparison: a
2-layer bidirectional ``nn.LSTM`` (128 per direction, dropout 0.1 between layers) on padded
batches of similar lengths (``--pack``: packed sequences, exact but 4x slower here), a Linear
head with log-softmax, ``nn.CTCLoss`` (blank 0, summed, zero_infinity), Adam 2e-3, gradient
norm clipped at 5, batch 32 shuffled each epoch in buckets of similar length (as rnnlab's), no
SpecAugment. Greedy
decoding; validation at the end of every epoch and when the budget runs out; the test split is
read once, with the weights of the best validation symbol error rate. Only training steps count
against ``--time-limit``. Example::

    PYTHONPATH=src python benchmarks/peers/ctc.py --data-dir ../shared/data --time-limit 780 \
        --threads 1 --out ctc_peer.json
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnnlab.config import load_preset
from rnnlab.tasks.ctc_data import load_strings


class PeerCTC(nn.Module):
    """``pack``: run the LSTM on packed sequences (exact: the backward direction starts at each
    row's last real frame), about 4x slower on this CPU than the plain padded call, where the
    backward direction first reads the few padded frames of its length bucket."""

    def __init__(
        self, features: int, hidden: int, layers: int, dropout: float, pack: bool = False
    ) -> None:
        super().__init__()
        self.pack = pack
        self.lstm = nn.LSTM(
            features, hidden, layers, batch_first=True, bidirectional=True, dropout=dropout
        )
        self.head = nn.Linear(2 * hidden, 11)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        if not self.pack:
            return torch.log_softmax(self.head(self.lstm(x)[0]), dim=-1)  # (B, T, 11)
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        return torch.log_softmax(self.head(out), dim=-1)  # (B, T, 11)


def greedy(log_probs: Tensor, lengths: Tensor) -> list[list[int]]:
    strings = []
    for row, n in zip(log_probs.argmax(-1).tolist(), lengths.tolist(), strict=True):
        out, previous = [], 0
        for s in row[:n]:
            if s != previous and s != 0:
                out.append(s - 1)
            previous = s
        strings.append(out)
    return strings


def levenshtein(a: list[int], b: list[int]) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        diagonal, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            diagonal, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diagonal + (x != y))
    return row[-1]


def buckets(lengths: Tensor, batch: int, g: torch.Generator) -> list[Tensor]:
    """Shuffled batches of similar lengths (less padding to pack): chunks of 50 batches of a
    random order, each sorted by length, then the batches shuffled."""
    out = []
    for chunk in torch.randperm(len(lengths), generator=g).split(50 * batch):
        out += list(chunk[torch.argsort(lengths[chunk])].split(batch))
    return [out[k] for k in torch.randperm(len(out), generator=g).tolist()]


def ctc_targets(targets: Tensor) -> tuple[Tensor, Tensor]:
    return targets[targets >= 0] + 1, (targets >= 0).sum(1)


@torch.no_grad()
def evaluate(model: PeerCTC, split, batch: int = 128) -> dict[str, float]:
    model.eval()
    x, lengths = split.inputs
    loss_fn = nn.CTCLoss(blank=0, reduction="sum", zero_infinity=True)
    total = edits = symbols = wrong = 0.0
    for k in range(0, len(lengths), batch):
        n = lengths[k : k + batch]
        xb, yb = x[k : k + batch, : int(n.max())], split.targets[k : k + batch]
        lp = model(xb, n)
        flat, tl = ctc_targets(yb)
        total += float(loss_fn(lp.transpose(0, 1), flat, n, tl))
        for hyp, ref in zip(greedy(lp, n), yb.tolist(), strict=True):
            ref = [s for s in ref if s >= 0]
            e = levenshtein(hyp, ref)
            edits, symbols, wrong = edits + e, symbols + len(ref), wrong + (e > 0)
    model.train()
    N = len(lengths)
    return {"loss": total / N, "ser": edits / symbols, "string_error": wrong / N}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="digits-ctc")
    p.add_argument("--data-dir")
    p.add_argument("--sample", action="store_true", help="the shipped FSDD sample")
    p.add_argument("--time-limit", type=float, default=780.0, help="training seconds")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--clip", type=float, default=5.0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--pack", action="store_true", help="packed sequences (exact, 4x slower)")
    p.add_argument("--threads", type=int)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = ["data.sample=true"] if args.sample else []
    config = load_preset(args.preset, overrides)
    started = time.perf_counter()
    data = load_strings(config, args.data_dir)
    torch.manual_seed(args.seed)
    model = PeerCTC(config.data.bands, args.hidden, args.layers, args.dropout, args.pack)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    loss_fn = nn.CTCLoss(blank=0, reduction="sum", zero_infinity=True)
    x, lengths = data.train.inputs
    trained, steps, history, best = 0.0, 0, [], None
    g = torch.Generator().manual_seed(args.seed)
    for epoch in range(1, args.epochs + 1):
        for index in buckets(lengths, args.batch_size, g):
            tick = time.perf_counter()
            n = lengths[index]
            xb, yb = x[index, : int(n.max())], data.train.targets[index]
            flat, tl = ctc_targets(yb)
            loss = loss_fn(model(xb, n).transpose(0, 1), flat, n, tl) / len(index)
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), args.clip)
            optimizer.step()
            steps += 1
            trained += time.perf_counter() - tick
            if trained >= args.time_limit:
                break
        val = evaluate(model, data.val)
        history.append({"epoch": epoch, "steps": steps, "train_seconds": trained, **val})
        print(json.dumps(history[-1]), flush=True)
        if best is None or val["ser"] < best[0]["ser"]:
            best = (val, copy.deepcopy(model.state_dict()))
        if trained >= args.time_limit:
            break
    model.load_state_dict(best[1])
    test = evaluate(model, data.test)
    result = {
        "program": "benchmarks/peers/ctc.py (torch.nn.LSTM + torch.nn.CTCLoss)",
        "args": vars(args),
        "steps": steps,
        "train_seconds": trained,
        "wall_seconds": time.perf_counter() - started,
        "best_val": best[0],
        "test": test,
        "history": history,
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
        "threads": torch.get_num_threads(),
    }
    print(json.dumps({"best_val": best[0], "test": test}))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
