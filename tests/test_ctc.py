"""CTC: decoding (greedy, prefix beam search, alignment) against hand computations and brute
force, the task's loss against torch's CTCLoss, and the built strings (deterministic, train and
test disjoint)."""

import itertools

import numpy as np
import pytest
import torch
from torch import nn

from rnnlab.config import load_preset
from rnnlab.data.fsdd import load_fsdd, official_split
from rnnlab.data.strings import LINE_HEIGHT, spoken_strings, written_lines
from rnnlab.nn.ctc import align, collapse, edit_distance, greedy_decode, prefix_beam_search
from rnnlab.tasks import get_task
from rnnlab.tasks.ctc_data import build_strings


def test_greedy_decoding_of_a_hand_made_posterior():
    # frames:  a  a  -  a  b  b  -  -   (blank 0, a=1, b=2) -> "aab"
    path = [1, 1, 0, 1, 2, 2, 0, 0]
    posterior = np.full((len(path), 3), 0.1)
    posterior[np.arange(len(path)), path] = 0.8
    assert greedy_decode(np.log(posterior)) == [1, 1, 2]
    assert collapse([0, 0, 0]) == [] and collapse([2, 2, 2]) == [2]


def brute_force(log_probs):
    """Every path enumerated: string -> log of the summed probability of its paths."""
    T, S = log_probs.shape
    totals = {}
    for path in itertools.product(range(S), repeat=T):
        string = tuple(collapse(path))
        p = np.exp(sum(log_probs[t, s] for t, s in enumerate(path)))
        totals[string] = totals.get(string, 0.0) + p
    return {k: np.log(v) for k, v in totals.items()}


@pytest.mark.parametrize("seed", range(5))
def test_prefix_beam_search_finds_the_best_string_by_brute_force(seed):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(5, 3)) * 2
    lp = logits - np.log(np.exp(logits).sum(1, keepdims=True))  # (T, S)
    truth = brute_force(lp)
    best = max(truth, key=truth.get)
    found = prefix_beam_search(lp, beam=64)
    assert tuple(found[0][0]) == best
    assert found[0][1] == pytest.approx(truth[best], abs=1e-9)  # a wide beam loses no path
    for string, score in found:
        assert score == pytest.approx(truth[tuple(string)], abs=1e-9)


def test_the_best_string_is_not_always_the_best_path():
    # two frames: "-a"/"a-"/"aa" add up for "a"; the best single path is "--"
    p = np.array([[0.5, 0.4, 0.1], [0.5, 0.4, 0.1]])
    assert greedy_decode(np.log(p)) == []
    assert prefix_beam_search(np.log(p), beam=4)[0][0] == [1]  # p("a") = .56 > p("") = .25


@pytest.mark.parametrize("seed", range(5))
def test_beam_width_one_is_greedy(seed):
    rng = np.random.default_rng(seed)
    lp = torch.log_softmax(torch.tensor(rng.normal(size=(30, 11)) * 3), -1).numpy()
    assert prefix_beam_search(lp, beam=1)[0][0] == greedy_decode(lp)


def test_alignment_reads_as_its_string():
    rng = np.random.default_rng(0)
    lp = torch.log_softmax(torch.tensor(rng.normal(size=(12, 4))), -1).numpy()
    for string in ([1], [2, 2], [3, 1, 2], [1, 1, 1]):
        path = align(lp, string)
        assert len(path) == 12 and collapse(path) == string
    with pytest.raises(ValueError, match="frames can emit"):
        align(lp[:2], [1, 1])


def test_edit_distance():
    assert edit_distance([1, 2, 3], [1, 2, 3]) == 0
    assert edit_distance([1, 2, 3], [1, 3]) == 1
    assert edit_distance([], [4, 5]) == 2 and edit_distance([1, 2], [2, 1]) == 2


def test_the_models_loss_is_ctc_loss_on_the_same_tensors():
    config = load_preset("digits-ctc-sample")
    task = get_task(config)
    torch.manual_seed(0)
    model = task.build_model().eval()
    x, lengths = torch.randn(3, 40, 40), torch.tensor([40, 33, 20])
    targets = torch.tensor([[1, 2, 3], [4, 4, -1], [0, -1, -1]])
    out = task.batch_loss(model, (x, lengths), targets, None, training=False)
    log_probs = model(x, lengths)  # (B, T, S)
    flat, target_lengths = torch.tensor([2, 3, 4, 5, 5, 1]), torch.tensor([3, 2, 1])
    loss = nn.CTCLoss(blank=0, reduction="sum")
    reference = loss(log_probs.transpose(0, 1), flat, lengths, target_lengths)
    assert out.total.item() == pytest.approx(reference.item(), rel=1e-6)
    assert out.count == 3 and out.sums["symbols"] == 6
    assert task.metrics({**out.sums, "n": 3, "loss": 0})["ser"] >= 0


def test_spoken_strings_are_deterministic_one_voice_and_from_their_split():
    train, test = official_split(load_fsdd(sample=True))
    a = spoken_strings(train, 20, seed=3, rate=8000)
    b = spoken_strings(train, 20, seed=3, rate=8000)
    assert [s.digits for s in a] == [s.digits for s in b]
    assert all(np.array_equal(x.signal, y.signal) for x, y in zip(a, b, strict=True))
    assert {len(s.digits) for s in a} <= set(range(1, 8))
    for s in a:
        assert len({name.split("_")[1] for name in s.sources}) == 1  # one speaker
        assert [int(name[0]) for name in s.sources] == list(s.digits)
    c = spoken_strings(train, 20, seed=4, rate=8000)
    assert [s.digits for s in c] != [s.digits for s in a]


def test_task_strings_are_disjoint_by_recording():
    config = load_preset("digits-ctc-sample", ["data.validation=holdout", "data.holdout=10"])
    built = build_strings(config, None)
    used = {name: {src for s in built[name] for src in s.sources} for name in built}
    assert used["train"] and used["val"] and used["test"]
    assert not used["train"] & used["test"] and not used["val"] & used["test"]
    assert not used["train"] & used["val"]
    assert all(int(src.split("_")[2][:-4]) < 5 for src in used["test"])  # official test indexes


def test_mnist_lines_are_deterministic_and_disjoint_by_image():
    images = np.random.default_rng(0).integers(0, 255, size=(50, 28, 28), dtype=np.uint8)
    labels = np.arange(50) % 10
    a = written_lines(images, labels, 10, seed=1)
    b = written_lines(images, labels, 10, seed=1)
    assert all(np.array_equal(x.signal, y.signal) for x, y in zip(a, b, strict=True))
    assert all(s.signal.shape[0] == LINE_HEIGHT for s in a)
    assert all(list(s.digits) == [int(labels[int(i)]) for i in s.sources] for s in a)
    config = load_preset("mnist-lines-sample", ["data.validation=holdout", "data.holdout=500"])
    built = build_strings(config, None)
    train = {i for s in built["train"] for i in s.sources}
    val = {i for s in built["val"] for i in s.sources}
    assert train and val and not train & val  # held-out MNIST train images
    with pytest.raises(ValueError, match=r"expected images of shape \(N, 28, 28\)"):
        written_lines(images[:, :20], labels, 1, seed=0)


def test_beam_search_steps_frame_by_frame():
    from rnnlab.nn.ctc import prefix_beam_steps

    rng = np.random.default_rng(1)
    lp = torch.log_softmax(torch.tensor(rng.normal(size=(9, 4)) * 3), -1).numpy()
    steps = list(prefix_beam_steps(lp, beam=3))
    assert [t for t, *_ in steps] == list(range(9))
    assert all(len(beams) <= 3 for *_, beams in steps)
    *_, (_, best, score, _) = steps
    assert (list(best), score) == tuple(prefix_beam_search(lp, beam=3)[0])
