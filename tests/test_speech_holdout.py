"""The speech task's validation and augmentation options: ``data.holdout_pick = "first_takes"``
(:func:`rnnlab.data.fsdd.first_takes`) and ``data.speed_perturb``
(:func:`rnnlab.data.audio.change_speed`), and a clear error for each bad setting."""

import numpy as np
import pytest
import torch

from rnnlab.config import ConfigError, load_preset
from rnnlab.data.audio import AudioError, change_speed
from rnnlab.data.errors import DataError
from rnnlab.data.fsdd import Recording, first_takes, load_fsdd, official_split
from rnnlab.tasks import get_task
from rnnlab.tasks.speech import pick_copies

HOLDOUT = ["data.validation=holdout", "data.holdout=20", "data.holdout_pick=first_takes"]


def recording(digit, speaker, index):
    return Recording(digit, speaker, index, np.zeros(8, np.float32))


def test_first_takes_hold_out_the_lowest_indexes_of_every_speaker_and_digit():
    train, _ = official_split(load_fsdd(sample=True))  # indexes 5, 6, 7 of 2 speakers
    kept, held = first_takes(train, 20)
    assert {train[k].index for k in held} == {5} and len(held) == 20
    assert {(train[k].speaker, train[k].digit) for k in held} == {
        (s, d) for s in ("george", "jackson") for d in range(10)
    }
    assert sorted(kept + held) == list(range(60))
    # any folder: gaps in the indexes, ties broken by (speaker, digit)
    recs = [recording(1, "b", 9), recording(0, "b", 7), recording(0, "a", 30), recording(2, "a", 7)]
    kept, held = first_takes(recs, 2)
    assert [recs[k].name for k in held] == ["0_b_7.wav", "2_a_7.wav"]
    assert [recs[k].name for k in kept] == ["1_b_9.wav", "0_a_30.wav"]
    for bad in (0, 4, -1):
        with pytest.raises(DataError, match=f"data.holdout: expected 1 to 3 .* got {bad}"):
            first_takes(recs, bad)


def test_change_speed_scales_length_and_pitch():
    rate, freq = 8000, 500.0
    t = np.arange(rate) / rate  # 1 s
    tone = np.sin(2 * np.pi * freq * t).astype(np.float32)
    for factor in (0.9, 1.1):
        out = change_speed(tone, factor, rate)
        assert out.dtype == np.float32 and abs(len(out) - rate / factor) <= 2
        spectrum = np.abs(np.fft.rfft(out[200:-200] * np.hanning(len(out) - 400)))
        peak = np.argmax(spectrum) * rate / (len(out) - 400)  # Hz
        assert abs(peak - freq * factor) < 5
    with pytest.raises(AudioError, match=r"expected a factor in \[0.5, 2\], got 3"):
        change_speed(tone, 3, rate)


def test_first_takes_and_speed_copies_in_the_speech_task():
    config = load_preset("digits-speech-sample", [*HOLDOUT, "data.speed_perturb=[0.9, 1.1]"])
    data = get_task(config).load()
    assert len(data.train) == 40 and len(data.val) == 20 and len(data.test) == 20
    assert len(data.train.inputs) == 6 and len(data.val.inputs) == 2  # copies train only
    x, lengths, x_slow, lengths_slow, x_fast, lengths_fast = data.train.inputs
    assert (lengths_slow > lengths).all() and (lengths_fast < lengths).all()
    assert x.shape[2] == x_slow.shape[2] == x_fast.shape[2] == 40
    plain = get_task(load_preset("digits-speech-sample", HOLDOUT)).load()
    torch.testing.assert_close(plain.val.inputs[0], data.val.inputs[0])  # the same 20 held
    torch.testing.assert_close(plain.train.inputs[0], data.train.inputs[0])


def test_pick_copies_draws_one_version_per_example():
    x = torch.zeros(4, 3, 2)  # (B, T, F): the original, all zeros
    copies = (x, torch.full((4,), 3), torch.ones(4, 5, 2), torch.full((4,), 5))
    torch.manual_seed(0)
    out, lengths = pick_copies(copies)
    assert out.shape == (4, int(lengths.max()), 2)
    for k in range(4):
        n = int(lengths[k])
        assert n in (3, 5) and (out[k, :n] == (n == 5)).all() and (out[k, n:] == 0).all()
    picks = {int(pick_copies(copies)[1][0]) for _ in range(40)}
    assert picks == {3, 5}


@pytest.mark.parametrize(
    ("preset", "overrides", "message"),
    [
        ("digits-speech-sample", ["data.holdout_pick=first_takes"], "data.validation = 'holdout'"),
        ("digits-speech-sample", ["data.speed_perturb=[1.0]"], "other than 1 .* got 1.0"),
        ("digits-speech-sample", ["data.speed_perturb=[0.3]"], r"in \[0.5, 2\] .* got 0.3"),
        ("digits-speech-sample", ["data.speed_perturb=[0.9, 0.9]"], "expected distinct speeds"),
        ("digits-speech-sample", ["data.holdout_pick=last"], "holdout_pick"),
        ("digits-ctc-sample", ["data.speed_perturb=[0.9]"], "only 'speech' reads them"),
        ("mnist-sample", ["data.holdout_pick=first_takes"], "they are FSDD options"),
    ],
)
def test_bad_settings_are_clear_errors(preset, overrides, message):
    with pytest.raises(ConfigError, match=message):
        get_task(load_preset(preset, overrides))


def test_too_many_first_takes_is_a_config_error():
    config = load_preset("digits-speech-sample", [HOLDOUT[0], "data.holdout=60", HOLDOUT[2]])
    with pytest.raises(ConfigError, match="expected 1 to 59 recordings .* got 60"):
        get_task(config).load()
