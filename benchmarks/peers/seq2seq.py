"""Peer: grapheme to phoneme with a plain torch.nn.LSTM encoder-decoder and attention, written in
the style of PyTorch's "NLP From Scratch: Translation with a Sequence to Sequence Network and
Attention" tutorial (an encoder module, an attention decoder module stepped one token at a time
in a Python loop, teacher forcing), batched and with Luong's general attention.

It reads exactly the split ``rnnlab train g2p`` reads (:func:`rnnlab.data.pairs.load_cmudict`:
the same hash split, the same vocabularies from the training words) and scores with the same
functions (:mod:`rnnlab.tasks.seq2seq_metrics`: PER against the closest pronunciation, WER
right when equal to any); everything else is plain PyTorch. Same sizes and optimiser as the
``g2p`` preset: Embedding 64, bidirectional nn.LSTM 2 x (2 x 128), nn.LSTM 256 decoder, dropout
0.2, Adam 2e-3 halved when validation loss stops falling, batch 128 (bucketed by length),
gradient norm clipped at 5. Training stops after ``--time-limit`` seconds of training (not
counting validation, as ``train.time_limit``); the epoch with the lowest validation PER
(greedy decoding) is tested. Example::

    PYTHONPATH=src python benchmarks/peers/seq2seq.py --time-limit 1800 --threads 1 \\
        --out /tmp/g2p_peer.json
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import random
import time

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnnlab.data.pairs import BOS, EOS, PAD, PairVocab, load_cmudict
from rnnlab.tasks.seq2seq_metrics import sequence_sums


class EncoderRNN(nn.Module):
    def __init__(self, vocab: int, emb: int, hidden: int, layers: int, dropout: float):
        super().__init__()
        self.embedding = nn.Embedding(vocab, emb, padding_idx=PAD)
        self.dropout = nn.Dropout(dropout)
        self.lstm = nn.LSTM(
            emb, hidden // 2, layers, batch_first=True, bidirectional=True, dropout=dropout
        )
        self.bridge = nn.Linear(hidden, hidden)

    def forward(self, src: Tensor, lengths: Tensor):
        packed = pack_padded_sequence(
            self.dropout(self.embedding(src)), lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        out, (h, _) = self.lstm(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=src.shape[1])
        h0 = torch.tanh(self.bridge(torch.cat([h[-2], h[-1]], dim=-1)))  # (B, H)
        return out, (h0[None], torch.zeros_like(h0)[None])


class AttnDecoderRNN(nn.Module):
    def __init__(self, vocab: int, emb: int, hidden: int, dropout: float):
        super().__init__()
        self.embedding = nn.Embedding(vocab, emb, padding_idx=PAD)
        self.dropout = nn.Dropout(dropout)
        self.lstm = nn.LSTM(emb, hidden, batch_first=True)
        self.W_a = nn.Linear(hidden, hidden, bias=False)
        self.W_c = nn.Linear(2 * hidden, hidden, bias=False)
        self.out = nn.Linear(hidden, vocab)

    def forward_step(self, token: Tensor, hidden, enc: Tensor, keys: Tensor, mask: Tensor):
        x = self.dropout(self.embedding(token[:, None]))  # (B, 1, E)
        out, hidden = self.lstm(x, hidden)  # (B, 1, H)
        scores = torch.bmm(out, keys.transpose(1, 2)).masked_fill(~mask[:, None], float("-inf"))
        context = torch.bmm(torch.softmax(scores, -1), enc)  # (B, 1, H)
        att = torch.tanh(self.W_c(torch.cat([context, out], -1)))
        return self.out(self.dropout(att[:, 0])), hidden


class Seq2Seq(nn.Module):
    def __init__(self, vs: int, vt: int, emb=64, hidden=256, layers=2, dropout=0.2):
        super().__init__()
        self.encoder = EncoderRNN(vs, emb, hidden, layers, dropout)
        self.decoder = AttnDecoderRNN(vt, emb, hidden, dropout)

    def forward(self, src, lengths, tgt_in):
        enc, hidden = self.encoder(src, lengths)
        keys, mask = self.decoder.W_a(enc), src != PAD
        logits = []
        for t in range(tgt_in.shape[1]):  # teacher forcing, one step at a time
            step, hidden = self.decoder.forward_step(tgt_in[:, t], hidden, enc, keys, mask)
            logits.append(step)
        return torch.stack(logits, 1)

    @torch.no_grad()
    def greedy(self, src, lengths, max_length):
        enc, hidden = self.encoder(src, lengths)
        keys, mask = self.decoder.W_a(enc), src != PAD
        token = torch.full((src.shape[0],), BOS, dtype=torch.long)
        out = []
        for _ in range(max_length):
            logits, hidden = self.decoder.forward_step(token, hidden, enc, keys, mask)
            logits[:, [PAD, BOS]] = float("-inf")
            token = logits.argmax(-1)
            out.append(token)
            if bool((torch.stack(out, 1) == EOS).any(1).all()):
                break
        rows = torch.stack(out, 1).tolist()
        return [r[: r.index(EOS)] if EOS in r else r for r in rows]


def pad(rows, width=None):
    width = width or max(len(r) for r in rows)
    out = torch.full((len(rows), width), PAD, dtype=torch.long)
    for k, r in enumerate(rows):
        out[k, : len(r)] = torch.tensor(r)
    return out


def batches(pairs, size, rng):
    """Shuffled, then sorted by length inside chunks of 50 batches (as train.bucket)."""
    order = list(range(len(pairs)))
    rng.shuffle(order)
    out = []
    for i in range(0, len(order), 50 * size):
        chunk = sorted(order[i : i + 50 * size], key=lambda k: len(pairs[k][0]))
        out += [chunk[j : j + size] for j in range(0, len(chunk), size)]
    rng.shuffle(out)
    return out


def evaluate(model, entries, src_vocab, tgt_vocab, batch=1024):
    model.eval()
    sums = {"edits": 0.0, "ref_tokens": 0.0, "wrong": 0.0, "sequences": 0.0}
    loss_sum, count = 0.0, 0
    for i in range(0, len(entries), batch):
        part = entries[i : i + batch]
        src = [src_vocab.encode(e.source)[0] for e in part]
        lengths = torch.tensor([len(s) for s in src])
        refs = [[tgt_vocab.encode(r)[0] for r in e.references] for e in part]
        with torch.no_grad():
            gold = pad([r[0] + [EOS] for r in refs])
            tgt_in = torch.cat([torch.full((len(part), 1), BOS), gold[:, :-1]], 1)
            logits = model(pad(src), lengths, tgt_in)
            loss_sum += float(
                nn.functional.cross_entropy(
                    logits.transpose(1, 2), gold, ignore_index=PAD, reduction="sum"
                )
            )
            count += int((gold != PAD).sum())
        hyps = model.greedy(pad(src), lengths, max(len(r) for rs in refs for r in rs) + 11)
        for k, v in sequence_sums(hyps, refs).items():
            sums[k] += v
    model.train()
    return {
        "loss": loss_sum / count,
        "token_error_rate": sums["edits"] / sums["ref_tokens"],
        "sequence_error_rate": sums["wrong"] / sums["sequences"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--time-limit", type=float, required=True, help="training seconds")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--out", default=None, help="JSON result file")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    data = load_cmudict()
    src_vocab = PairVocab.build((e.source for e in data.train), "char")
    tgt_vocab = PairVocab.build((r for e in data.train for r in e.references), "word")
    pairs = [
        (src_vocab.encode(e.source)[0], tgt_vocab.encode(r)[0] + [EOS])
        for e in data.train
        for r in e.references
    ]
    model = Seq2Seq(len(src_vocab), len(tgt_vocab))
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=0)
    trained, history, best, best_state, steps = 0.0, [], None, None, 0
    epoch = 0
    while trained < args.time_limit:
        epoch += 1
        start = time.perf_counter()
        for index in batches(pairs, args.batch_size, rng):
            src = pad([pairs[k][0] for k in index])
            lengths = torch.tensor([len(pairs[k][0]) for k in index])
            gold = pad([pairs[k][1] for k in index])
            tgt_in = torch.cat([torch.full((len(index), 1), BOS), gold[:, :-1]], 1)
            logits = model(src, lengths, tgt_in)
            loss = nn.functional.cross_entropy(logits.transpose(1, 2), gold, ignore_index=PAD)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            steps += 1
            if trained + time.perf_counter() - start >= args.time_limit:
                break
        trained += time.perf_counter() - start
        val = evaluate(model, data.val, src_vocab, tgt_vocab)
        sched.step(val["loss"])
        history.append({"epoch": epoch, "train_seconds": trained, "steps": steps, **val})
        print(json.dumps(history[-1]), flush=True)
        if best is None or val["token_error_rate"] < best["token_error_rate"]:
            best, best_state = history[-1], copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    test = evaluate(model, data.test, src_vocab, tgt_vocab)
    result = {
        "peer": "torch.nn.LSTM encoder-decoder, Luong general attention (tutorial style)",
        "time_limit": args.time_limit,
        "threads": args.threads,
        "best_epoch": best["epoch"],
        "best_val_token_error_rate": best["token_error_rate"],
        "best_val_sequence_error_rate": best["sequence_error_rate"],
        "test": test,
        "history": history,
        "parameters": sum(p.numel() for p in model.parameters()),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }
    print(json.dumps({k: v for k, v in result.items() if k != "history"}))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
