"""Bad input gets a clear error naming the problem."""

import numpy as np
import pytest
import torch

import audio_repr
from audio_repr import AudioError, UnknownModelError


@pytest.fixture(scope="module")
def enc():
    return audio_repr.load("byola-v1-512", pretrained=False)


def test_unknown_model_lists_close_names():
    with pytest.raises(UnknownModelError, match="byola-v1-512") as e:
        audio_repr.load("byola-v1-51")
    assert "Did you mean" in str(e.value)
    with pytest.raises(UnknownModelError, match="Available"):
        audio_repr.load("wav2vec-nonsense")


def test_name_normalisation():
    assert audio_repr.get_card("BYOLA_V1_512").name == "byola-v1-512"


@pytest.mark.parametrize("audio,match", [
    (np.zeros(0, dtype=np.float32), "empty"),
    (np.array([0.1, np.nan] * 8000, dtype=np.float32), "NaN or infinite"),
    (torch.full((16000,), float("inf")), "NaN or infinite"),
    (np.zeros((2, 3, 16000), dtype=np.float32), "shape"),
    (np.zeros((100, 16000), dtype=np.float32), "channels"),
    (torch.zeros(16000, dtype=torch.int64), "floating-point"),
    (np.zeros(400, dtype=np.float32), "too short"),
    ([], "no audio"),
    (12345, "expected a path"),
])
def test_bad_audio(enc, audio, match):
    with pytest.raises(AudioError, match=match):
        enc.embed(audio, sr=16000)


def test_array_without_sample_rate(enc):
    with pytest.raises(AudioError, match="sample rate"):
        enc.embed(np.zeros(16000, dtype=np.float32))


def test_list_error_names_the_bad_item(enc):
    with pytest.raises(AudioError, match=r"audio\[1\].*NaN"):
        enc.embed([np.zeros(16000, np.float32), np.full(16000, np.nan, np.float32)], sr=16000)


def test_missing_and_unreadable_files(enc, tmp_path):
    with pytest.raises(FileNotFoundError):
        enc.embed(str(tmp_path / "nothing.wav"))
    bad = tmp_path / "bad.flac"
    bad.write_bytes(b"\x00" * 1000)
    with pytest.raises(AudioError, match="bad.flac"):
        enc.embed(bad)


def test_bad_layers_and_batch_size(enc):
    x = np.zeros(16000, np.float32)
    with pytest.raises(ValueError, match="unknown layer"):
        enc.embed(x, sr=16000, layers="nope")
    with pytest.raises(ValueError, match="out of range"):
        enc.embed(x, sr=16000, layers=[17])
    with pytest.raises(ValueError, match="batch_size"):
        enc.embed(x, sr=16000, batch_size=0)


def test_bad_sample_rate(enc):
    with pytest.raises(ValueError, match="sample rates"):
        enc.embed(np.zeros(16000, np.float32), sr=-5)
