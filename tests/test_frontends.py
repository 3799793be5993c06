import numpy as np
import pytest
import torch

from audio_repr.frontends import LogMelSpectrogram
from conftest import chirp, noise

EPS = float(torch.finfo(torch.float32).eps)
BYOLA = dict(sample_rate=16000, n_fft=1024, win_length=1024, hop_length=160, n_mels=64, f_min=60, f_max=7800)


def librosa_mel_power(x, htk, norm):
    librosa = pytest.importorskip("librosa")
    return librosa.feature.melspectrogram(
        y=np.asarray(x, dtype=np.float64), sr=16000, n_fft=1024, win_length=1024, hop_length=160,
        window="hann", center=True, pad_mode="reflect", power=2.0, n_mels=64, fmin=60, fmax=7800,
        htk=htk, norm=norm)


@pytest.mark.parametrize("mel_scale,htk,norm", [("htk", True, None), ("slaney", False, "slaney")])
@pytest.mark.parametrize("signal", ["noise", "chirp", "short"])
def test_logmel_matches_librosa(mel_scale, htk, norm, signal):
    x = {"noise": noise(1.3).numpy(), "chirp": chirp(2.0), "short": noise(0.2, seed=3).numpy()}[signal]
    fe = LogMelSpectrogram(**BYOLA, mel_scale=mel_scale)
    ours = fe(torch.from_numpy(x)[None])[0].double().exp().numpy() - EPS
    ref = librosa_mel_power(x, htk, norm)
    assert ours.shape == ref.shape
    assert np.abs(ours - ref).max() <= 1e-4 * np.abs(ref).max()
    # and in the log domain wherever the energy is well above float32 resolution
    big = ref > 1e-6 * ref.max()
    assert np.abs(np.log(ours[big] + EPS) - np.log(ref[big] + EPS)).max() < 1e-3


def test_slaney_matches_nnaudio_itself():
    from nnAudio.features import MelSpectrogram

    x = torch.from_numpy(chirp(1.5))[None]
    ref = MelSpectrogram(sr=16000, n_fft=1024, win_length=1024, hop_length=160, n_mels=64, fmin=60, fmax=7800,
                         center=True, power=2, verbose=False)(x)
    ours = LogMelSpectrogram(**BYOLA, mel_scale="slaney")(x).exp() - EPS
    assert ours.shape == ref.shape
    assert (ours - ref).abs().max() <= 1e-4 * ref.abs().max()


def test_v1_logmel_matches_original_golden(golden):
    fe = LogMelSpectrogram(**BYOLA, mel_scale="htk")
    for key in ("dog", "cat"):
        ours = fe(torch.from_numpy(golden[f"{key}_wav16k"])[None])[0].numpy()
        ref = golden[f"{key}_logmel"]
        assert ours.shape == ref.shape
        assert np.abs(ours - ref).max() <= 1e-4 * np.abs(ref).max()
        assert np.abs(np.exp(ours) - np.exp(ref)).max() <= 1e-4 * np.exp(ref).max()


@pytest.mark.parametrize("mel_scale", ["htk", "slaney"])
def test_batch_of_different_lengths_equals_alone(mel_scale):
    fe = LogMelSpectrogram(**BYOLA, mel_scale=mel_scale)
    clips = [noise(s, seed=i) for i, s in enumerate([0.9, 2.3, 0.31])]
    n = max(len(c) for c in clips)
    batch = torch.stack([torch.nn.functional.pad(c, (0, n - len(c))) for c in clips])
    out = fe(batch, [len(c) for c in clips])
    for i, c in enumerate(clips):
        alone = fe(c[None])[0]
        T = fe.frames_for(len(c))
        assert alone.shape[-1] == T
        assert torch.allclose(out[i, :, :T], alone, atol=1e-5)


def test_window_frames_piecewise_equals_whole():
    fe = LogMelSpectrogram(**BYOLA)
    x = noise(3.0)
    whole = fe(x[None])[0]
    padded = fe.edge_pad(x)[None]
    pieces = [fe.window_frames(padded, a, min(a + 70, whole.shape[-1]))[0] for a in range(0, whole.shape[-1], 70)]
    assert torch.allclose(torch.cat(pieces, -1), whole, atol=1e-5)


def test_frames_for_and_short_input():
    fe = LogMelSpectrogram(**BYOLA)
    assert fe.frames_for(16000) == 101 and fe.frames_for(159) == 1
    out = fe(noise(0.01)[None])       # shorter than half a window: zero padding instead of reflect
    assert out.shape == (1, 64, 2) and torch.isfinite(out).all()
