import math
import warnings

import numpy as np
import pytest
import torch

from audio_repr.frontends import (FrontEnd, KaldiFbank, LogMelSpectrogram, VGGishLogMel, Waveform,
                                  kaldi_mel_filterbank, mel_filterbank, vggish_mel_matrix)
from audio_repr.registry import get_card
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


# ---------------------------------------------------------------------------------------------
# the FrontEnd interface: every registered model's front end implements it, with one geometry
# ---------------------------------------------------------------------------------------------
def _registered_frontends():
    from audio_repr.models import family
    from audio_repr.registry import get_card, list_models

    out = {}
    for name in list_models():
        card = get_card(name)
        out[name] = family(card.family).build_frontend(**card.frontend)
    return out


REGISTERED = _registered_frontends()


def _all_frontends():
    """Every registered model's front end, and the variants the registry does not use."""
    extra = {"logmel-uncentred": LogMelSpectrogram(**BYOLA, center=False),
             "logmel-short-window": LogMelSpectrogram(**dict(BYOLA, win_length=1000)),
             "kaldi-no-pow2": KaldiFbank(round_to_power_of_two=False, frame_length_ms=25.1, frame_shift_ms=7.0),
             "vggish-pad": VGGishLogMel(tail="pad")}
    return {**REGISTERED, **extra}


def test_every_registered_front_end_is_a_front_end():
    assert REGISTERED and all(isinstance(fe, FrontEnd) for fe in REGISTERED.values())
    for name, fe in _all_frontends().items():
        assert isinstance(fe, FrontEnd), name
        for attr in ("sample_rate", "hop_length", "frame_length", "fft_size", "n_mels"):
            assert isinstance(getattr(fe, attr), int) and getattr(fe, attr) > 0, (name, attr)
        assert isinstance(fe.frame_offset_ms, float)
        assert fe.fft_size >= fe.frame_length and fe.fb.shape == (fe.fft_size // 2 + 1, fe.n_mels), name
    with pytest.raises(TypeError, match="abstract"):
        FrontEnd(sample_rate=16000, hop_length=160, frame_length=400, fft_size=512, n_mels=64, centred=False)


def test_frame_length_and_fft_size_are_named_apart():
    """``frame_length`` is the span of a frame everywhere; ``fft_size`` (``n_fft`` in LogMelSpectrogram,
    torchaudio's name) is the FFT length only."""
    ast, vgg, byola = REGISTERED["ast-audioset"], REGISTERED["vggish"], REGISTERED["byola-v1-512"]
    assert (ast.frame_length, ast.fft_size) == (400, 512) and (vgg.frame_length, vgg.fft_size) == (400, 512)
    assert byola.frame_length == byola.fft_size == byola.n_fft == 1024
    for fe in (ast, vgg):
        with pytest.raises(AttributeError, match="frame_length is the samples one frame spans"):
            fe.n_fft


@pytest.mark.parametrize("name", sorted(_all_frontends()))
def test_min_samples_is_the_inverse_of_frames_for(name):
    fe = _all_frontends()[name]
    assert fe.min_samples(0) == 0 and fe.min_samples(-3) == 0
    for k in (1, 2, 3, 7, 95, 96, 97, 98, 191, 192, 193, 500, 1001):
        m = fe.min_samples(k)
        assert fe.frames_for(m) >= k, (k, m)
        assert m == 0 or fe.frames_for(m - 1) < k, (k, m)


@pytest.mark.parametrize("name", sorted(_all_frontends()))
def test_frame_t_is_computed_from_its_frame_length_samples_only(name):
    """Frame ``t`` depends on samples ``[t * hop, t * hop + frame_length)`` of the prepared waveform and on
    nothing else; ``frame_offset_ms`` is 0 for centred front ends, half a frame otherwise."""
    fe = _all_frontends()[name]
    hop, span = fe.hop_length, fe.frame_length
    centred = isinstance(fe, (LogMelSpectrogram, Waveform)) and fe.center
    assert fe.frame_offset_ms == (0.0 if centred else 1000.0 * span / 2 / fe.sample_rate)
    if isinstance(fe, Waveform):                     # the samples themselves: frame t is sample t
        x = fe.edge_pad(noise(0.5, seed=7))[None]
        assert torch.equal(fe.window_frames(x, 3, 10)[0, 0], x[0, 3:10].float())
        return
    x = fe.edge_pad(noise(0.5, seed=7))[None]
    T = (x.shape[-1] - span) // hop + 1
    whole = fe.window_frames(x, 0, T)
    t = T // 2
    assert fe.window.shape == (span,)
    last = int(fe.window.nonzero().max())   # the last weighted sample: span - 1 unless the window ends in
    assert last >= span - 2 or fe.win_length < span          # zeros (Kaldi's Hann, a short STFT window)
    for i, changes in [(t * hop - 1, False), (t * hop + last, True), (t * hop + span, False)]:
        y = x.clone()
        y[0, i] += 0.5
        assert torch.equal(fe.window_frames(y, 0, T)[..., t], whole[..., t]) != changes, (i, changes)
    # the encoder's pieces: frames t..t+k-1 from their samples alone
    k = 5
    piece = fe.window_frames(x[..., t * hop: (t + k - 1) * hop + span], 0, k)
    assert torch.allclose(piece, whole[..., t: t + k], atol=1e-5)


def test_forward_prepares_each_clip_at_its_length_for_every_front_end():
    clips = [noise(s, seed=i) for i, s in enumerate([1.3, 0.4, 2.0])]
    n = max(len(c) for c in clips)
    batch = torch.stack([torch.nn.functional.pad(c, (0, n - len(c))) for c in clips])
    for name, fe in _all_frontends().items():
        out = fe(batch, [len(c) for c in clips])
        assert out.shape == (3, fe.n_mels, fe.frames_for(n)) and out.dtype == torch.float32, name
        for i, c in enumerate(clips):
            T = fe.frames_for(len(c))
            assert torch.allclose(out[i, :, :T], fe(c[None])[0], atol=1e-5), name


# ---------------------------------------------------------------------------------------------
# the one mel filterbank builder against the implementations it reproduces
# ---------------------------------------------------------------------------------------------
FB_CONFIGS = [(16000, 1024, 64, 60.0, 7800.0), (16000, 400, 80, 50.0, 8000.0), (16000, 512, 128, 20.0, 8000.0),
              (22050, 2048, 40, 0.0, 11025.0), (44100, 1000, 23, 133.3, 5123.4), (8000, 401, 64, 125.0, 3800.0)]


def _hf_mel_filter_bank(*args, **kwargs):
    """transformers' numpy mel filters (float64): torchaudio's, librosa's and Kaldi's constructions."""
    return pytest.importorskip("transformers.audio_utils").mel_filter_bank(*args, **kwargs)


def torchaudio_melscale_fbanks(n_freqs, f_min, f_max, n_mels, sample_rate):
    """torchaudio.functional.melscale_fbanks(norm=None, mel_scale="htk"), transcribed (torchaudio 2.x)."""
    all_freqs = torch.linspace(0, sample_rate // 2, n_freqs)
    m_min, m_max = (2595.0 * math.log10(1.0 + f / 700.0) for f in (f_min, f_max))
    m_pts = torch.linspace(m_min, m_max, n_mels + 2)
    f_pts = 700.0 * (10.0 ** (m_pts / 2595.0) - 1.0)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)
    down_slopes = (-1.0 * slopes[:, :-2]) / f_diff[:-1]
    up_slopes = slopes[:, 2:] / f_diff[1:]
    return torch.max(torch.zeros(1), torch.min(down_slopes, up_slopes))


@pytest.mark.parametrize("cfg", FB_CONFIGS)
def test_htk_filters_are_torchaudios(cfg):
    sr, n, m, lo, hi = cfg
    fb = mel_filterbank(sr, n, m, lo, hi, "htk")
    assert fb.dtype == torch.float32 and torch.equal(fb, torchaudio_melscale_fbanks(n // 2 + 1, lo, hi, m, sr))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")      # empty filters in the narrow configurations
        ref = _hf_mel_filter_bank(n // 2 + 1, m, lo, hi, sr, mel_scale="htk")          # float64
    assert np.abs(fb.numpy() - ref).max() < 1e-4          # float32 corners, as torchaudio's


@pytest.mark.parametrize("cfg", FB_CONFIGS)
def test_slaney_filters_are_nnaudios_and_librosas(cfg):
    from nnAudio.librosa_functions import get_mel

    librosa = pytest.importorskip("librosa")
    sr, n, m, lo, hi = cfg
    fb = mel_filterbank(sr, n, m, lo, hi, "slaney")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        original = torch.from_numpy(get_mel(sr, n, m, lo, hi, htk=False, norm=1)).T
        assert fb.dtype == torch.float32 and torch.equal(fb, original)
        ref = librosa.filters.mel(sr=sr, n_fft=n, n_mels=m, fmin=lo, fmax=hi, htk=False, norm="slaney").T
    if n % 2 == 0:      # librosa >= 0.10 puts the bins at k sr / n (rfftfreq), 0.7 (nnAudio) at k sr / 2 (n // 2)
        assert np.abs(fb.numpy() - ref).max() <= 1e-6 * np.abs(ref).max()


@pytest.mark.parametrize("cfg", FB_CONFIGS)
def test_kaldi_filters_are_kaldis(cfg):
    """Kaldi's MelBanks as transformers' numpy port (``mel_scale="kaldi"``, triangles in mel space), with
    Kaldi's zero Nyquist row; ``high_freq <= 0`` is an offset from Nyquist."""
    sr, n, m, lo, hi = cfg
    fb = mel_filterbank(sr, n, m, lo, hi, "kaldi")
    assert fb.dtype == torch.float64 and float(fb[-1].abs().max()) == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = _hf_mel_filter_bank(n // 2 + 1, m, lo, hi, sr, mel_scale="kaldi", triangularize_in_mel_space=True)
    if n % 2 == 0:      # transformers spaces its bins by sr / (2 (n_bins - 1)), the bin width for even n only
        assert np.abs(fb[:-1].numpy() - ref[:-1]).max() < 1e-12
    if hi == sr / 2:
        assert torch.equal(kaldi_mel_filterbank(sr, n, m, lo, 0.0, dtype=torch.float64), fb)
    with pytest.raises(ValueError, match="bad mel range"):
        mel_filterbank(sr, n, m, lo, sr, "kaldi")


def test_vggish_filters_are_vggishs():
    R = pytest.importorskip("reference_vggish")
    fb = mel_filterbank(16000, 512, 64, 125.0, 7500.0, "vggish")
    assert torch.equal(fb, vggish_mel_matrix()) and float(fb[0].abs().max()) == 0.0
    assert np.abs(fb.numpy() - R.mel_matrix()).max() < 1e-12


def test_registered_front_ends_use_the_builder():
    expect = {"byola-v1-512": ("htk", torch.float32), "msm-mae-80x208": ("slaney", torch.float32),
              "ast-audioset": ("kaldi", torch.float64), "vggish": ("vggish", torch.float64)}
    for name, (style, dtype) in expect.items():
        fe, card = REGISTERED[name], get_card(name).frontend
        lo = card.get("f_min", card.get("low_freq", 20.0))
        hi = card.get("f_max", card.get("high_freq", 0.0)) or fe.sample_rate / 2
        assert torch.equal(fe.fb, mel_filterbank(fe.sample_rate, fe.fft_size, fe.n_mels, lo, hi, style, dtype)), name
    with pytest.raises(ValueError, match="mel style"):
        mel_filterbank(16000, 512, 64, 0.0, 8000.0, "mfcc")
