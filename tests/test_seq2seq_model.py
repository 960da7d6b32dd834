"""rnnlab.nn.Seq2Seq: teacher forcing against step-wise decoding, greedy and beam search,
attention masks, memorising pairs, bad options."""

from __future__ import annotations

import pytest
import torch

from rnnlab.nn.beam import beam_search, greedy
from rnnlab.nn.seq2seq import BOS, EOS, PAD, Seq2Seq

VS, VT = 11, 13


def _model(**kw) -> Seq2Seq:
    torch.manual_seed(0)
    args = {"embedding_dim": 6, "hidden_size": 8, "attention": "general"} | kw
    return Seq2Seq(VS, VT, **args).double().eval()


def _batch(B=3, S=5, T=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, S + 1, (B,), generator=g)
    lengths[0] = S
    src = torch.randint(4, VS, (B, S), generator=g)
    src[torch.arange(S)[None] >= lengths[:, None]] = PAD
    tgt = torch.randint(4, VT, (B, T), generator=g)
    tgt[:, 0] = BOS
    return src, lengths, tgt


CONFIGS = [
    {"attention": "dot"},
    {"attention": "general", "decoder_layers": 2, "encoder_layers": 2},
    {"attention": "additive", "decoder_cell": "gru", "cell": "rnn"},
    {"attention": "general", "input_feeding": True},
    {
        "attention": "dot",
        "input_feeding": True,
        "cell": "gru",
        "embedding_dim": 8,
        "tie_weights": True,
    },
]


@pytest.mark.parametrize("kw", CONFIGS)
def test_teacher_forcing_equals_stepwise_decoding(kw):
    model = _model(**kw)
    src, lengths, tgt = _batch()
    logits, weights = model(src, lengths, tgt, return_attention=True)  # (B, T, V), (B, T, S)
    memory, state = model.encode(src, lengths)
    for t in range(tgt.shape[1]):
        logp, state, w, _ = model.decode_step(memory, tgt[:, t], state)
        torch.testing.assert_close(logp, torch.log_softmax(logits[:, t], -1), atol=1e-5, rtol=0)
        torch.testing.assert_close(w, weights[:, t], atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["dot", "general", "additive"])
def test_attention_sums_to_one_and_is_zero_on_padding(kind):
    model = _model(attention=kind)
    src, lengths, tgt = _batch(B=4, S=6)
    _, weights = model(src, lengths, tgt, return_attention=True)  # (B, T, S)
    torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:2], dtype=weights.dtype))
    pad = torch.arange(6)[None] >= lengths[:, None]  # (B, S)
    assert pad.any()
    assert (weights.masked_select(pad[:, None, :].expand_as(weights)) == 0).all()


def test_beam_one_equals_greedy():
    model = _model(attention="additive")
    src, lengths, _ = _batch(B=5, S=6, seed=3)
    with model.evaluating():
        g = greedy(model, src, lengths, max_length=9)
        b = beam_search(model, src, lengths, beam=1, n_best=1, max_length=9)
    for one, many in zip(g, b, strict=True):
        assert one.tokens == many[0].tokens
        assert one.finished == many[0].finished
        assert one.score == pytest.approx(many[0].score, abs=1e-9)
        torch.testing.assert_close(one.attention, many[0].attention)


def test_batched_beam_search_equals_one_at_a_time():
    model = _model(attention="general", decoder_layers=2)
    src, lengths, _ = _batch(B=4, S=6, seed=5)
    batched = model.translate(src, lengths, beam=4, n_best=3, max_length=8, length_penalty=0.6)
    for b in range(4):
        n = int(lengths[b])
        alone = model.translate(
            src[b : b + 1, :n],
            lengths[b : b + 1],
            beam=4,
            n_best=3,
            max_length=8,
            length_penalty=0.6,
        )[0]
        assert [h.tokens for h in alone] == [h.tokens for h in batched[b]]
        for x, y in zip(alone, batched[b], strict=True):
            assert x.score == pytest.approx(y.score, abs=1e-9)
            torch.testing.assert_close(x.attention, y.attention)
            assert x.attention.shape == (len(x.tokens) + x.finished, n)
        rankings = [h.ranking for h in batched[b]]
        assert rankings == sorted(rankings, reverse=True)


def test_beam_scores_are_the_models_scores():
    model = _model(attention="dot")
    src, lengths, _ = _batch(B=3, S=5, seed=7)
    out = model.translate(src, lengths, beam=3, n_best=2, max_length=12)
    for b, hyps in enumerate(out):
        for h in hyps:
            if not h.finished or not h.tokens:
                continue
            tgt = torch.tensor([h.tokens])
            logp = model.score(src[b : b + 1, : int(lengths[b])], lengths[b : b + 1], tgt)
            assert float(logp.sum()) == pytest.approx(h.score, abs=1e-9)


def test_steps_follow_greedy_and_carry_gates():
    model = _model(attention="general")
    src, lengths, _ = _batch(B=1, S=5)
    steps = list(model.steps(src[0], max_length=7, top=3, record_gates=True))
    with model.evaluating():
        hyp = greedy(model, src, lengths, max_length=7)[0]
    assert [s.token for s in steps][: len(hyp.tokens)] == list(hyp.tokens)
    assert all(len(s.top) == 3 and s.top[0][1] >= s.top[-1][1] for s in steps)
    assert set(steps[0].gates[0]) == {"i", "f", "g", "o", "c", "h"}
    assert steps[0].attention.shape == (5,)
    forced = [5, 6, EOS]
    assert [s.token for s in model.steps(src[0], forced=forced)] == forced


def test_a_tiny_model_memorises_twenty_pairs():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    pairs = []
    for _ in range(20):
        s = torch.randint(4, VS, (int(torch.randint(2, 6, (1,), generator=g)),), generator=g)
        pairs.append((s.tolist(), list(reversed(s.tolist()))))  # target: the source reversed
    S, T = 5, 5
    src = torch.tensor([p[0] + [PAD] * (S - len(p[0])) for p in pairs])
    lengths = torch.tensor([len(p[0]) for p in pairs])
    tgt = torch.tensor([p[1] + [EOS] + [PAD] * (T - len(p[1])) for p in pairs])  # (20, T + 1)
    model = Seq2Seq(VS, VS, embedding_dim=16, hidden_size=32, attention="general")
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    inputs = torch.cat([torch.full((20, 1), BOS), tgt[:, :-1]], dim=1)
    for _ in range(300):
        logits = model(src, lengths, inputs)
        loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), tgt, ignore_index=PAD)
        opt.zero_grad()
        loss.backward()
        opt.step()
    out = model.translate(src, lengths, beam=3, n_best=1, max_length=8)
    assert [list(h[0].tokens) for h in out] == [p[1] for p in pairs]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"beam": 0}, "beam an int in 1..64, got 0"),
        ({"beam": 65}, "beam an int in 1..64, got 65"),
        ({"beam": 2, "n_best": 3}, "n_best an int in 1..beam=2, got 3"),
        ({"max_length": 0}, "max_length an int in 1..1000, got 0"),
        ({"length_penalty": -1.0}, "length_penalty >= 0"),
    ],
)
def test_bad_decoding_options(options, message):
    model = _model()
    src, lengths, _ = _batch()
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        model.translate(src, lengths, **options)


def test_bad_construction_and_inputs():
    with pytest.raises(ValueError, match="even hidden_size"):
        Seq2Seq(VS, VT, hidden_size=7)
    with pytest.raises(ValueError, match="decoder_cell in"):
        Seq2Seq(VS, VT, decoder_cell="rnn")
    with pytest.raises(ValueError, match="embedding_dim == hidden_size"):
        Seq2Seq(VS, VT, embedding_dim=4, hidden_size=8, tie_weights=True)
    model = _model()
    src, lengths, tgt = _batch()
    with pytest.raises(ValueError, match=r"src ids in \[0, 11\)"):
        model(src + 20, lengths, tgt)
    with pytest.raises(ValueError, match="src_lengths of shape"):
        model(src, lengths * 0, tgt)
