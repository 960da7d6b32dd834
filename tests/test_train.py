"""The trainer on tiny synthetic data: learning, determinism, divergence, schedules, batches."""

import math

import pytest
import torch
from torch import nn

from rnnlab.config import TrainConfig
from rnnlab.train import (
    Batches,
    BatchLoss,
    DivergenceError,
    Selection,
    Split,
    evaluate,
    fit,
    learning_rate,
)


class _Classify:
    """The smallest objective: summed cross-entropy and accuracy, best by accuracy."""

    selection = Selection("accuracy", "max")

    def batch_loss(self, model, inputs, targets, carry, training):
        logits = model(*inputs)  # (B, C)
        total = nn.functional.cross_entropy(logits, targets, reduction="sum")
        correct = int((logits.argmax(-1) == targets).sum())
        return BatchLoss(total, len(targets), {"correct": correct})

    def metrics(self, sums):
        return {"accuracy": sums["correct"] / sums["n"]}


OBJECTIVE = _Classify()


def _task(n=256, T=6, seed=0):
    """The class is the sign of the first step's first feature: a memory task."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, T, 3, generator=g)
    return Split((x,), (x[:, 0, 0] > 0).long())


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        from rnnlab import LSTM

        self.lstm, self.head = LSTM(3, 8), nn.Linear(8, 2)

    def forward(self, x):
        return self.head(self.lstm(x)[1].h[-1])


def _fit(seed=0, **changes):
    torch.manual_seed(seed)
    model = _Tiny()
    config = TrainConfig(**{"epochs": 8, "batch_size": 32, "lr": 1e-2, **changes})
    trainer = fit(
        model,
        OBJECTIVE,
        Batches(_task(), 32, shuffle=True, seed=seed),
        Batches(_task(seed=1), 128),
        config,
    )
    return model, trainer


def test_fit_learns_and_records_history():
    model, trainer = _fit()
    assert trainer.state.epoch == 8 and trainer.state.step == 64
    assert trainer.state.history[-1]["val_accuracy"] > 0.8  # chance is 0.5
    assert evaluate(model, Batches(_task(seed=1), 100), OBJECTIVE)["accuracy"] == pytest.approx(
        trainer.state.history[-1]["val_accuracy"]
    )


def test_fit_is_deterministic_on_cpu():
    _, a = _fit(epochs=2)
    _, b = _fit(epochs=2)
    strip = ("seconds", "ms_per_step", "val_seconds")
    clean = [
        [{k: v for k, v in r.items() if k not in strip} for r in t.state.history] for t in (a, b)
    ]
    assert clean[0] == clean[1]


def test_nan_loss_stops_with_a_clear_error():
    torch.manual_seed(0)
    model = _Tiny()
    with torch.no_grad():
        model.head.bias.fill_(math.nan)
    with pytest.raises(DivergenceError, match="loss became nan at epoch 1, step 1"):
        fit(model, OBJECTIVE, Batches(_task(), 32), None, TrainConfig(epochs=1))


def test_schedules():
    cfg = TrainConfig(lr=1.0, lr_schedule="cosine", warmup_steps=10, min_lr_ratio=0.1)
    assert learning_rate(cfg, 0, 0, 110) == pytest.approx(0.1)
    assert learning_rate(cfg, 10, 0, 110) == pytest.approx(1.0)
    assert learning_rate(cfg, 110, 3, 110) == pytest.approx(0.1)
    step = TrainConfig(lr=1.0, lr_schedule="step", step_epochs=2, gamma=0.5)
    assert [learning_rate(step, 0, e, 10) for e in range(5)] == [1, 1, 0.5, 0.5, 0.25]


def test_plateau_halves_the_rate_when_validation_stalls():
    _, trainer = _fit(epochs=3, lr=1e-9, lr_schedule="plateau", patience=1, gamma=0.5)
    assert trainer.state.plateau["scale"] < 1.0


def test_batches_replay_an_epoch_from_any_batch():
    batches = Batches(_task(), 30, shuffle=True, seed=3)
    full = [t for _, t in batches.epoch(2)]
    tail = [t for _, t in batches.epoch(2, start=4)]
    assert len(full) == len(batches) == 9
    assert all(torch.equal(a, b) for a, b in zip(full[4:], tail, strict=True))
    assert not torch.equal(full[0], next(iter(batches.epoch(3)))[1])


def test_bucketing_and_trimming():
    ids = torch.zeros(100, 10, dtype=torch.int64)
    lengths = torch.randint(1, 11, (100,))
    for i, n in enumerate(lengths.tolist()):
        ids[i, 10 - n :] = torch.arange(1, n + 1)  # pre-padded
    split = Split((ids, lengths), torch.zeros(100, dtype=torch.int64))
    batches = Batches(split, 10, shuffle=True, bucket=True, trim="pre")
    seen = []
    for (b_ids, b_len), _ in batches.epoch(0):
        assert b_ids.shape[1] == int(b_len.max())
        assert (b_ids[:, -1] > 0).all()  # only left padding was cut
        seen.append(len(b_len))
    assert sum(seen) == 100


def test_batches_shard_a_global_batch_across_ranks():
    split = _task(n=40)
    ranks = [Batches(split, 8, shuffle=True, rank=r, world_size=2) for r in range(2)]
    whole = Batches(split, 8, shuffle=True)
    for (a, _), (b, _), (w, _) in zip(ranks[0], ranks[1], whole, strict=True):
        assert len(a[0]) == 4 and torch.equal(torch.cat([a[0], b[0]]).sort(0)[0], w[0].sort(0)[0])
    with pytest.raises(ValueError, match="divisible by the world size 3, got 8"):
        Batches(split, 8, world_size=3)


def test_ranks_draw_their_own_dropout_masks_reproducibly() -> None:
    """RankDropoutSeed (data parallelism): before each step the generator is seeded from
    (seed, rank, step), so two ranks at the same step drop different units, one rank at one step
    always drops the same ones (what makes a resumed run exact), and steps differ."""
    from types import SimpleNamespace

    from rnnlab.train import RankDropoutSeed

    def mask(rank: int, step: int) -> torch.Tensor:
        trainer = SimpleNamespace(state=SimpleNamespace(step=step))
        RankDropoutSeed(seed=0, rank=rank).on_step_end(trainer, {})
        return torch.nn.functional.dropout(torch.ones(1000), 0.5) > 0

    assert torch.equal(mask(1, 7), mask(1, 7))
    assert not torch.equal(mask(0, 7), mask(1, 7))
    assert not torch.equal(mask(1, 7), mask(1, 8))
    begin = RankDropoutSeed(seed=0, rank=1)
    begin.on_train_begin(SimpleNamespace(state=SimpleNamespace(step=7)))  # a resume at step 7
    assert torch.equal(torch.nn.functional.dropout(torch.ones(1000), 0.5) > 0, mask(1, 7))
    assert RankDropoutSeed(seed=1, rank=1).stream_seed(7) != begin.stream_seed(7)


def test_train_state_reads_checkpoints_from_before_generic_metrics():
    """A run checkpointed with best_val_accuracy/best_epoch resumes with the same best."""
    from rnnlab.train import TrainState

    old = TrainState().to_dict()
    del old["best"], old["carry"]
    state = TrainState.from_dict({**old, "best_val_accuracy": 0.9, "best_epoch": 2})
    assert state.best == {"metric": "val_accuracy", "value": 0.9, "epoch": 2}
    assert state.carry is None and TrainState.from_dict(state.to_dict()) == state
