"""make_optimizer's fused Adam: chosen when it can run, equal to torch's other Adam kernels up to
rounding, bitwise reproducible, and carried through a checkpoint."""

import pytest
import torch
from torch import nn

from rnnlab.checkpoint import load_checkpoint, restore_optimizer, save_checkpoint
from rnnlab.config import TrainConfig, load_preset
from rnnlab.tasks import build_model
from rnnlab.train import make_optimizer
from rnnlab.train.schedule import fused_adam_ok

# Measured first (torch 2.13, CPU, this model, 50 steps): the fused kernel's parameters differ
# from the single-tensor and foreach kernels' by at most 1.2e-7 (those two agree exactly);
# 1e-6 leaves an 8x margin for other CPUs' rounding.
TOLERANCE = 1e-6
STEPS = 50
needs_fused_cpu = pytest.mark.skipif(
    not fused_adam_ok([{"params": [torch.zeros(1)]}]), reason="torch < 2.4 has no fused CPU Adam"
)


def _model(seed: int = 0) -> nn.Module:
    """mnist-seed's SequenceClassifier narrowed to 32 units, its weights drawn from ``seed``."""
    torch.manual_seed(seed)
    return build_model(
        load_preset("mnist-seed", ["model.projection=32", "model.hidden_sizes=[32]"])
    )


def _steps(model: nn.Module, opt: torch.optim.Optimizer, g: torch.Generator, n: int) -> None:
    """``n`` Adam steps on random (8, 28, 28) images and labels drawn from ``g``."""
    for _ in range(n):
        x, y = torch.rand(8, 28, 28, generator=g), torch.randint(0, 10, (8,), generator=g)
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def _train(opt_for, steps: int = STEPS) -> list[torch.Tensor]:
    """The parameters of :func:`_model` after ``steps`` steps of the optimizer ``opt_for``
    makes for it."""
    model = _model()
    _steps(model, opt_for(model), torch.Generator().manual_seed(1), steps)
    return [p.detach().clone() for p in model.parameters()]


def _adam(**kernel):
    return lambda model: torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7, **kernel)


@needs_fused_cpu
@pytest.mark.parametrize("name", ["adam", "adamw"])
def test_make_optimizer_picks_fused_adam_on_cpu(name):
    opt = make_optimizer(_model(), TrainConfig(optimizer=name))
    assert all(group["fused"] is True for group in opt.param_groups)
    assert type(opt).__name__ == {"adam": "Adam", "adamw": "AdamW"}[name]


def test_make_optimizer_leaves_sgd_alone():
    opt = make_optimizer(_model(), TrainConfig(optimizer="sgd"))
    assert isinstance(opt, torch.optim.SGD)


def test_fused_adam_ok_refuses_what_the_kernel_cannot_take():
    assert not fused_adam_ok([{"params": []}])
    assert not fused_adam_ok([{"params": [torch.zeros(2, device="meta")]}])
    assert not fused_adam_ok([{"params": [torch.zeros(2, dtype=torch.int64)]}])
    assert not fused_adam_ok([{"params": [torch.zeros(2, 2).to_sparse()]}])


@needs_fused_cpu
@pytest.mark.parametrize("other", [{"foreach": True}, {"foreach": False}])
def test_fused_adam_matches_the_other_kernels(other):
    fused = _train(_adam(fused=True))
    plain = _train(_adam(**other))
    worst = max(float((a - b).abs().max()) for a, b in zip(fused, plain, strict=True))
    assert worst <= TOLERANCE, f"fused vs {other}: max |difference| {worst:.3g} > {TOLERANCE}"
    start = [p.detach() for p in _model().parameters()]
    moved = max(float((a - b).abs().max()) for a, b in zip(plain, start, strict=True))
    assert moved > 1000 * TOLERANCE  # the steps moved the weights far beyond the tolerance


@needs_fused_cpu
def test_fused_adam_is_bitwise_reproducible():
    cfg = TrainConfig(optimizer="adam")
    a = _train(lambda model: make_optimizer(model, cfg))
    b = _train(lambda model: make_optimizer(model, cfg))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


@needs_fused_cpu
def test_fused_adam_resumes_from_a_checkpoint_bitwise(tmp_path):
    """Ten steps, a checkpoint, ten more in a new model and optimizer: equal to twenty steps
    straight, and still the fused kernel."""
    cfg = TrainConfig(optimizer="adam")
    straight = _train(lambda model: make_optimizer(model, cfg), steps=20)

    g = torch.Generator().manual_seed(1)
    model = _model()
    opt = make_optimizer(model, cfg)
    _steps(model, opt, g, 10)
    save_checkpoint(tmp_path, "last", model, opt, {"step": 10}, {})
    tensors, meta = load_checkpoint(tmp_path, "last")
    resumed = _model(seed=7)  # other weights, replaced by the checkpoint's
    resumed.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    resumed_opt = make_optimizer(resumed, cfg)
    restore_optimizer(resumed_opt, tensors, meta)
    assert all(group["fused"] is True for group in resumed_opt.param_groups)
    _steps(resumed, resumed_opt, g, 10)
    after = [p.detach() for p in resumed.parameters()]
    assert all(torch.equal(x, y) for x, y in zip(straight, after, strict=True))
