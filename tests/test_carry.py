"""A stateful toy task: the recurrent carry goes from batch to batch, into the checkpoint, and
back on resume, so a run killed mid-epoch continues exactly (issue: the language model task)."""

import pytest
import torch
from torch import nn

from rnnlab.checkpoint import (
    load_checkpoint,
    load_model_weights,
    restore_carry,
    restore_optimizer,
    restore_rng,
)
from rnnlab.config import TrainConfig
from rnnlab.train import BatchLoss, Checkpointer, Selection, Trainer, TrainState

B, T, STEPS = 4, 5, 8  # streams, window length, windows per epoch


class _Streams:
    """B contiguous streams cut into windows of T steps: window k of every epoch is the same
    (a stateful task must not shuffle), targets are the next value of each stream."""

    world_size = 1

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.data = torch.randn(B, STEPS * T + 1, generator=g).cumsum(1) * 0.1  # (B, L)

    def __len__(self) -> int:
        return STEPS

    def epoch(self, epoch, start=0):
        for k in range(start, STEPS):
            window = self.data[:, k * T : (k + 1) * T + 1]  # (B, T + 1)
            yield (window[:, :-1, None],), window[:, 1:]  # (B, T, 1), (B, T)


class Cell(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp, self.rec, self.out = nn.Linear(1, 8), nn.Linear(8, 8), nn.Linear(8, 1)
        self.drop = nn.Dropout(0.1)  # draws from the RNG the checkpoint restores

    def forward(self, x, h):  # x (B, T, 1), h (B, 8) -> predictions (B, T), h (B, 8)
        outs = []
        for t in range(x.shape[1]):
            h = torch.tanh(self.inp(x[:, t]) + self.rec(h))
            outs.append(self.out(self.drop(h))[:, 0])
        return torch.stack(outs, 1), h


class _Stateful:
    selection = Selection("loss", "min")

    def batch_loss(self, model, inputs, targets, carry, training):
        (x,) = inputs
        h = carry[0] if carry is not None else x.new_zeros(x.shape[0], 8)
        pred, h = model(x, h)
        total = ((pred - targets) ** 2).sum()
        return BatchLoss(total, targets.numel(), {}, carry=(h,))

    def metrics(self, sums):
        return {}


class _Stop:
    def __init__(self, at: int) -> None:
        self.at = at

    def on_step_end(self, trainer, logs):
        if trainer.state.step == self.at:
            raise KeyboardInterrupt


def _trainer(callbacks=()):
    torch.manual_seed(0)
    return Trainer(Cell(), _Stateful(), TrainConfig(epochs=2, lr=1e-2), callbacks)


def _strip(history):
    return [{k: v for k, v in r.items() if k not in ("seconds", "ms_per_step")} for r in history]


@pytest.mark.parametrize("keep_carry", [True, False])
def test_a_resumed_stateful_run_continues_exactly_with_its_carry(tmp_path, keep_carry):
    whole = _trainer()
    whole.fit(_Streams())

    folder = tmp_path / "ckpt"
    first = _trainer()
    first.callbacks = [Checkpointer(folder, {}, every=3), _Stop(at=11)]  # epoch 2, batch 3
    with pytest.raises(KeyboardInterrupt):
        first.fit(_Streams())
    tensors, meta = load_checkpoint(folder, "last")
    assert meta["state"]["step"] == 9 and meta["state"]["carry"] is None  # not in the JSON
    carry = restore_carry(tensors)
    assert carry is not None and carry[0].shape == (B, 8)

    second = _trainer()
    load_model_weights(second.module, tensors, "last")
    restore_optimizer(second.optimizer, tensors, meta)
    second.state = TrainState.from_dict(meta["state"], carry=carry if keep_carry else None)
    restore_rng(tensors)
    second.fit(_Streams())

    same = all(
        torch.equal(a, b)
        for a, b in zip(whole.model.parameters(), second.model.parameters(), strict=True)
    )
    assert same == keep_carry  # exact with the carry; without it the run goes elsewhere
    if keep_carry:
        assert _strip(second.state.history) == _strip(whole.state.history)
        assert torch.equal(second.state.carry[0], whole.state.carry[0])


def test_the_carry_starts_each_epoch_afresh_and_is_detached():
    seen = []

    class _Watch(_Stateful):
        def batch_loss(self, model, inputs, targets, carry, training):
            if training:
                seen.append(carry)
            return super().batch_loss(model, inputs, targets, carry, training)

    torch.manual_seed(0)
    Trainer(Cell(), _Watch(), TrainConfig(epochs=2)).fit(_Streams())
    assert seen[0] is None and seen[STEPS] is None  # each epoch begins without state
    assert all(c is not None and not c[0].requires_grad for c in seen[1:STEPS])
