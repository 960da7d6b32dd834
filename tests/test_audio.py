"""Audio in (rnnlab.data.audio) and the FSDD loader (rnnlab.data.fsdd): features against
librosa's own reference, every kind of bad file, checksums, the official split and speakers."""

import io
import shutil
import tarfile

import numpy as np
import pytest
import soundfile

from rnnlab.data import sample_dir
from rnnlab.data.audio import (
    MAX_SECONDS,
    AudioError,
    FeatureSpec,
    features,
    read_wav,
    spec_augment,
)
from rnnlab.data.errors import DataError
from rnnlab.data.fsdd import ARCHIVE, load_fsdd, official_split, parse_speakers

SAMPLE = sample_dir() / "fsdd"


def tone(seconds=0.5, rate=8000, freq=440.0):
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_features_equal_librosa_reference():
    """Log-mel: librosa's mel power spectrogram in dB, normalised per band. Tolerance 1e-4
    (float32 arithmetic on values of unit scale)."""
    import librosa

    wave = read_wav(SAMPLE / "3_george_5.wav", 8000)
    spec = FeatureSpec(rate=8000, bands=40, frame_ms=32.0, hop_ms=16.0)
    got = features(wave.samples, spec)  # (T, F)
    mel = librosa.feature.melspectrogram(
        y=wave.samples, sr=8000, n_fft=256, hop_length=128, n_mels=40
    )
    ref = 10 * np.log10(np.maximum(mel, 1e-10)).T  # (T, F) dB
    ref = (ref - ref.mean(0)) / ref.std(0)
    assert got.shape == ref.shape == (1 + len(wave.samples) // 128, 40)
    np.testing.assert_allclose(got, ref, atol=1e-4)
    assert np.allclose(got.mean(0), 0, atol=1e-5) and np.allclose(got.std(0), 1, atol=1e-3)
    got = features(wave.samples, FeatureSpec(kind="mfcc", bands=13))
    mel13 = librosa.feature.melspectrogram(
        y=wave.samples, sr=8000, n_fft=256, hop_length=128, n_mels=13
    )
    ref = librosa.feature.mfcc(S=librosa.power_to_db(mel13, top_db=None), n_mfcc=13).T
    np.testing.assert_allclose(got, (ref - ref.mean(0)) / ref.std(0), atol=1e-4)


def test_spec_augment_masks_bands_and_frames():
    frames = np.ones((60, 40), np.float32)
    out = spec_augment(frames, np.random.default_rng(0), band_width=6, time_width=8)
    assert frames.min() == 1  # the input is untouched
    zero_bands = (out == 0).all(0).sum()
    zero_frames = (out == 0).all(1).sum()
    assert 1 <= zero_bands <= 12 and 1 <= zero_frames <= 16


def write(path, data, rate, subtype=None):
    soundfile.write(str(path), data, rate, subtype=subtype)
    return path


def test_stereo_is_mixed_down_and_other_rates_resampled(tmp_path):
    left, right = tone(freq=300), tone(freq=500)
    wave = read_wav(write(tmp_path / "s.wav", np.stack([left, right], 1), 8000), 8000)
    assert wave.notes == {"mixed_down": 2}
    np.testing.assert_allclose(wave.samples, (left + right) / 2, atol=1e-4)  # 16-bit PCM
    wave = read_wav(write(tmp_path / "h.wav", tone(rate=44100), 44100), 8000)
    assert wave.notes == {"resampled_from": 44100}
    assert abs(len(wave.samples) - 4000) <= 1


@pytest.mark.parametrize("subtype", ["PCM_U8", "FLOAT", "PCM_24"])
def test_8bit_and_float_wavs_read_like_16bit(tmp_path, subtype):
    x = tone()
    wave = read_wav(write(tmp_path / "a.wav", x, 8000, subtype), 8000)
    assert wave.notes == {}
    np.testing.assert_allclose(wave.samples, x, atol=1.5 / 128)  # 8-bit: one step


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda p: p.write_bytes(b""), "got an empty file"),
        (lambda p: p.write_bytes(b"not audio at all, just text" * 10), "expected a WAV"),
        (lambda p: write(p, np.zeros((0, 1), np.float32), 8000), "length 0"),
        (lambda p: write(p, np.zeros(8000, np.float32), 8000), "got silence"),
        (lambda p: write(p, np.full(800, np.nan, np.float32), 8000, "FLOAT"), "NaN"),
        (lambda p: write(p, np.zeros(int(MAX_SECONDS * 800) + 8, np.int16), 800), "at most"),
    ],
    ids=["empty", "not-audio", "zero-length", "silence", "nan", "too-long"],
)
def test_bad_files_are_clear_errors(tmp_path, make, expected):
    path = tmp_path / "bad.wav"
    make(path)
    with pytest.raises(AudioError, match=expected):
        read_wav(path, 8000)
    with pytest.raises(AudioError, match="no such file"):
        read_wav(tmp_path / "missing.wav", 8000)


def test_sample_loads_verified_and_splits_officially():
    recordings = load_fsdd(sample=True)
    assert len(recordings) == 80
    assert {r.speaker for r in recordings} == {"george", "jackson"}
    train, test = official_split(recordings)
    assert {r.index for r in test} == {0} and {r.index for r in train} == {5, 6, 7}
    assert len(train) == 60 and len(test) == 20


def test_speakers_choose_who_trains_and_who_tests():
    recordings = load_fsdd(sample=True)
    assert parse_speakers("a,b/c") == (("a", "b"), ("c",))
    train, test = official_split(recordings, "george/jackson")
    assert {r.speaker for r in train} == {"george"} and {r.speaker for r in test} == {"jackson"}
    assert len(test) == 40  # an unheard voice: all of their recordings
    with pytest.raises(DataError, match="expected speakers among"):
        official_split(recordings, "nobody")


def test_each_file_is_checked_against_upstream_sha256(tmp_path):
    for name in ("0_george_0.wav", "1_george_5.wav"):
        shutil.copy(SAMPLE / name, tmp_path / name)
    assert len(load_fsdd(tmp_path)) == 2  # a subset verifies
    data = bytearray((tmp_path / "1_george_5.wav").read_bytes())
    data[-1] ^= 1
    (tmp_path / "1_george_5.wav").write_bytes(bytes(data))
    with pytest.raises(DataError, match="expected sha256"):
        load_fsdd(tmp_path)
    (tmp_path / "1_george_5.wav").unlink()
    shutil.copy(SAMPLE / "0_george_0.wav", tmp_path / "0_george_99.wav")
    with pytest.raises(DataError, match="expected an FSDD recording"):
        load_fsdd(tmp_path)


def test_upstream_archive_layout(tmp_path):
    root = "free-spoken-digit-dataset-1.0.10/recordings/"
    with tarfile.open(tmp_path / ARCHIVE, "w:gz") as tar:
        for name in ("0_george_0.wav", "2_jackson_6.wav"):
            data = (SAMPLE / name).read_bytes()
            info = tarfile.TarInfo(root + name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    recordings = load_fsdd(tmp_path, download=False)
    (tmp_path / "fsdd").mkdir()
    assert [r.name for r in recordings] == ["0_george_0.wav", "2_jackson_6.wav"]
    assert recordings[1].digit == 2 and recordings[1].samples.dtype == np.float32
    with pytest.raises(DataError, match="download=False"):
        load_fsdd(tmp_path / "fsdd", download=False)  # a root with an empty fsdd/
