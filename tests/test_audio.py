import math
import re
import warnings

import numpy as np
import pytest
import soundfile as sf
import torch

from audio_repr.audio import (AudioError, TruncatedAudioWarning, load_audio, resample, resample_batch,
                               resample_kaiser_best, resampled_length, to_mono_tensor)
from conftest import chirp, noise


def direct_windowed_sinc(x, orig_sr, new_sr, lowpass_filter_width=6, rolloff=0.99):
    """Independent float64 reference: evaluate the Hann-windowed, band-limited sinc interpolation
    of x at every output instant, straight from its definition (no polyphase tricks)."""
    g = math.gcd(orig_sr, new_sr)
    o, n = orig_sr // g, new_sr // g
    base = min(o, n) * rolloff
    x = np.asarray(x, dtype=np.float64)
    out_len = math.ceil(n * len(x) / o)
    idx = np.arange(len(x))
    y = np.empty(out_len)
    for m in range(out_len):
        t_in = m * o / n                               # output instant, in input samples
        u = (idx - t_in) * base / o                     # distance in units of the cut-off period
        u = np.clip(u, -lowpass_filter_width, lowpass_filter_width)
        w = np.cos(u * np.pi / (2 * lowpass_filter_width)) ** 2
        y[m] = np.sum(x * np.sinc(u) * w) * base / o
    return y


@pytest.mark.parametrize("orig,new", [(44100, 16000), (8000, 16000), (22050, 16000), (48000, 16000)])
def test_resampler_matches_direct_definition(orig, new):
    x = noise(0.05, sr=orig, seed=1)
    ours = resample(x, orig, new).numpy()
    ref = direct_windowed_sinc(x.numpy(), orig, new)
    assert ours.shape == ref.shape == (resampled_length(len(x), orig, new),)
    assert np.abs(ours - ref).max() < 1e-5


def test_resampler_sine_keeps_frequency_and_amplitude():
    sr_in, sr_out, f, amp = 44100, 16000, 1000.0, 0.6
    t = np.arange(sr_in) / sr_in
    y = resample(torch.from_numpy((amp * np.sin(2 * np.pi * f * t)).astype(np.float32)), sr_in, sr_out).numpy()
    assert len(y) == sr_out
    mid = y[2000:-2000]
    tt = np.arange(2000, sr_out - 2000) / sr_out
    fit = amp * np.sin(2 * np.pi * f * tt)
    assert np.abs(mid - fit).max() < 1e-3
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    assert abs(np.argmax(spec) * sr_out / len(y) - f) <= 1.0


def test_resampler_removes_content_above_new_nyquist():
    sr_in, sr_out = 48000, 16000
    t = np.arange(sr_in) / sr_in
    x = np.sin(2 * np.pi * 12000 * t).astype(np.float32)   # above 8 kHz: must vanish
    y = resample(torch.from_numpy(x), sr_in, sr_out).numpy()[1000:-1000]
    # the Hann-windowed sinc of width 6 attenuates its stop band by more than 50 dB
    assert np.sqrt(np.mean(y ** 2)) < np.sqrt(0.5) * 10 ** (-50 / 20)


def test_resample_batch_equals_alone_and_blocks_are_exact():
    clips = [noise(s, sr=44100, seed=i) for i, s in enumerate([0.3, 1.1, 0.07])]
    n = max(len(c) for c in clips)
    batch = torch.stack([torch.nn.functional.pad(c, (0, n - len(c))) for c in clips])
    out = resample_batch(batch, 44100, 16000)
    for i, c in enumerate(clips):
        alone = resample(c, 44100, 16000)
        assert torch.allclose(out[i, : len(alone)], alone, atol=1e-6)
        blocked = resample_batch(c, 44100, 16000, block=7)
        assert torch.allclose(blocked, alone, atol=1e-7)


def test_resampler_matches_torchaudio_golden(golden):
    from conftest import AUDIO

    for key, path in [("dog", AUDIO / "dog-bark-44k-stereo.wav"), ("cat", AUDIO / "cat-meow-44k.wav")]:
        wav, sr = load_audio(path, 16000)
        ref = golden[f"{key}_wav16k"]
        assert sr == 16000 and wav.shape == ref.shape
        assert np.abs(wav.numpy() - ref).max() < 1e-5
    names = [str(f) for f in golden["fsdd_files"]]
    keys = sorted((k for k in golden if k.startswith("fsdd") and k.endswith("_wav16k")), key=lambda k: int(k[4:-len("_wav16k")]))
    assert len(keys) == len(names) == 10
    for k, name in zip(keys, names):
        wav, _ = load_audio(AUDIO / "fsdd" / name, 16000)
        assert np.abs(wav.numpy() - golden[k]).max() < 1e-5, k


@pytest.mark.parametrize("fmt,subtype,tol", [("WAV", "PCM_16", 0), ("WAV", "PCM_24", 0), ("WAV", "FLOAT", 0),
                                             ("FLAC", "PCM_16", 0), ("OGG", "VORBIS", 0.05), ("MP3", "MPEG_LAYER_III", 0.05)])
def test_load_audio_formats(tmp_path, fmt, subtype, tol):
    if fmt not in sf.available_formats() or subtype not in sf.available_subtypes(fmt):
        pytest.skip(f"libsndfile here cannot write {fmt}/{subtype}")
    sr = 16000
    x = chirp(1.0, sr, amp=0.5)
    stereo = np.stack([x, 0.5 * x], axis=1)
    path = tmp_path / f"a.{fmt.lower()}"
    sf.write(path, stereo, sr, format=fmt, subtype=subtype)
    wav, got_sr = load_audio(path)
    assert got_sr == sr and wav.ndim == 1 and wav.dtype == torch.float32
    expected = 0.75 * x
    if tol == 0:
        assert np.abs(wav.numpy() - expected).max() < 1e-4
    else:  # lossy codecs: delay and coding noise, check level and shape
        assert abs(len(wav) - len(x)) < 4000
        assert abs(np.sqrt(np.mean(wav.numpy() ** 2)) - np.sqrt(np.mean(expected ** 2))) < tol


@pytest.mark.parametrize("fmt,subtype", [("WAV", "PCM_16"), ("FLAC", "PCM_24"), ("OGG", "VORBIS"),
                                         ("MP3", "MPEG_LAYER_III")])
def test_load_audio_in_blocks_equals_a_whole_file_read(tmp_path, monkeypatch, fmt, subtype):
    """Files are read block by block (bounded memory for long multichannel files); the result is the
    whole-file read's, bit for bit (MP3: to the decoder's own rounding), for any block size, mono or not."""
    import audio_repr.audio as A

    if fmt not in sf.available_formats() or subtype not in sf.available_subtypes(fmt):
        pytest.skip(f"libsndfile here cannot write {fmt}/{subtype}")
    g = np.random.default_rng(0)
    data = np.clip(0.3 * g.standard_normal((20011, 2 if fmt == "MP3" else 3)), -1, 1)   # MP3: at most stereo
    path = tmp_path / f"b.{fmt.lower()}"
    sf.write(path, data, 22050, format=fmt, subtype=subtype)
    whole = torch.from_numpy(np.ascontiguousarray(sf.read(path, dtype="float32", always_2d=True)[0].T))
    tol = 1e-6 if fmt == "MP3" else 0.0     # libsndfile's MP3 decoder itself rounds by 1 ulp with the read size
    for block in (997, 4096, 1 << 20):
        monkeypatch.setattr(A, "READ_BLOCK", block)
        mono, sr = load_audio(path)
        multi, _ = load_audio(path, mono=False)
        assert sr == 22050 and multi.shape == whole.shape and (multi - whole).abs().max() <= tol
        assert mono.shape == (whole.shape[1],) and (mono - whole.mean(dim=0)).abs().max() <= tol


def test_int_pcm_scaled_to_unit_range(tmp_path):
    path = tmp_path / "i16.wav"
    data = np.array([0, 16384, -32768, 32767] * 100, dtype=np.int16)
    sf.write(path, data, 8000, subtype="PCM_16")
    wav, sr = load_audio(path)
    assert sr == 8000
    assert np.allclose(wav.numpy()[:4], [0, 0.5, -1.0, 32767 / 32768])
    assert np.allclose(to_mono_tensor(data).numpy()[:4], [0, 0.5, -1.0, 32767 / 32768])


def test_to_mono_layouts():
    x = torch.randn(1000)
    assert torch.allclose(to_mono_tensor(torch.stack([x, -x])), torch.zeros(1000))       # [C, N]
    assert torch.allclose(to_mono_tensor(torch.stack([x, x], 1).numpy()), x)              # [N, C]
    with pytest.raises(AudioError, match="shape"):
        to_mono_tensor(torch.zeros(2, 3, 100))
    with pytest.raises(AudioError, match="channels"):
        to_mono_tensor(torch.zeros(100, 200))
    with pytest.raises(AudioError, match="empty"):
        to_mono_tensor(np.zeros(0, dtype=np.float32))
    with pytest.raises(AudioError, match="NaN or infinite"):
        to_mono_tensor(np.array([0.0, np.nan, 1.0], dtype=np.float32))
    with pytest.raises(AudioError, match="NaN or infinite"):
        to_mono_tensor(torch.tensor([0.0, float("inf")]))
    with pytest.raises(AudioError, match="1 NaN or infinite"):
        to_mono_tensor(torch.cat([torch.zeros(5_000_000), torch.tensor([float("nan")])]))
    huge = torch.full((10,), 3e38)                 # finite, though their sum overflows: accepted
    assert torch.equal(to_mono_tensor(huge), huge)


def test_unreadable_and_missing_files(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"this is not audio at all" * 10)
    with pytest.raises(AudioError, match="cannot read"):
        load_audio(bad)
    with pytest.raises(FileNotFoundError):
        load_audio(tmp_path / "missing.wav")
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(AudioError, match="no samples"):
        load_audio(empty)


TRUNCATABLE = [("WAV", "PCM_16"), ("WAV", "FLOAT"), ("WAVEX", "PCM_24"), ("RF64", "PCM_16"), ("AIFF", "PCM_16"),
               ("MP3", "MPEG_LAYER_III")]


@pytest.mark.parametrize("fmt,subtype", TRUNCATABLE)
def test_truncated_file_warns_with_frames_found_and_declared(tmp_path, fmt, subtype):
    """A file cut short (a third of its bytes kept) is read as far as it goes, with a TruncatedAudioWarning
    naming the file, the frames found and the frames its header declares; the intact file reads silently."""
    if fmt not in sf.available_formats() or subtype not in sf.available_subtypes(fmt):
        pytest.skip(f"libsndfile here cannot write {fmt}/{subtype}")
    sr, frames = 16000, 24960                                    # 1.56 s
    x = np.stack([chirp(frames / sr, sr), noise(frames / sr, sr).numpy()], axis=1)
    whole = tmp_path / f"whole.{fmt.lower()}"
    sf.write(whole, x, sr, format=fmt, subtype=subtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                           # the intact file: no warning at all
        full, _ = load_audio(whole)
    cut = tmp_path / f"cut.{fmt.lower()}"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) // 3])
    with pytest.warns(TruncatedAudioWarning) as rec:
        wav, got_sr = load_audio(cut)
    assert got_sr == sr and 0 < len(wav) < frames / 2
    msg = str(rec[0].message)
    assert str(cut) in msg and f"{len(wav)} frames" in msg and f"declares {frames} frames" in msg, msg
    if fmt != "MP3":                                             # what is there is read exactly
        assert torch.equal(wav, full[: len(wav)])
    with pytest.warns(TruncatedAudioWarning):                    # also without downmix, and with resampling
        multi, _ = load_audio(cut, mono=False)
    assert multi.shape == (2, len(wav))
    with pytest.warns(TruncatedAudioWarning):
        load_audio(cut, 8000)


def shown(rate):
    """How an error writes a rejected sample rate: a number as ``<value> Hz``, anything else by its repr."""
    return repr(rate) if isinstance(rate, (str, bytes, bool, type(None))) else f"{rate} Hz"


@pytest.mark.parametrize("bad,why", [(16000.5, "not a whole number"), ("16000", "not a number"), (True, "bool"),
                                     (0, "not positive"), (-5, "not positive"), (float("nan"), "not a whole number"),
                                     (float("inf"), "not a whole number"), (None, "not a number")])
def test_resample_rejects_bad_rates_saying_which(bad, why):
    x = noise(0.01)
    with pytest.raises(AudioError, match=rf"input sample rate {re.escape(shown(bad))}.*{why}.*positive whole number"):
        resample(x, bad, 16000)
    with pytest.raises(AudioError, match=rf"output sample rate {re.escape(shown(bad))}.*{why}"):
        resample(x, 16000, bad)
    with pytest.raises(AudioError, match=rf"input sample rate {re.escape(shown(bad))}.*{why}"):
        resample_kaiser_best(x, bad, 16000)
    with pytest.raises(AudioError, match=rf"input sample rate {re.escape(shown(bad))}.*{why}"):
        resample(x, bad, bad)                                    # equal rates are checked too


def test_resample_accepts_integral_floats_and_numpy_integers():
    x = noise(0.05, sr=44100)
    ref = resample(x, 44100, 16000)
    for a, b in [(44100.0, 16000.0), (np.int64(44100), np.int32(16000)), (np.float32(44100), 16000)]:
        assert torch.equal(resample(x, a, b), ref)
        assert torch.equal(resample_kaiser_best(x, a, b), resample_kaiser_best(x, 44100, 16000))


def test_too_few_samples_to_resample_names_both_rates():
    with pytest.raises(ValueError, match="input sample rate 44100 Hz.*output sample rate 16000 Hz"):
        resample_kaiser_best(torch.zeros(1), 44100, 16000)


def test_load_audio_target_rate_is_checked(tmp_path):
    path = tmp_path / "a.wav"
    sf.write(path, chirp(0.5, 16000), 16000)
    for bad in (16000.5, "8000", 0, False):
        with pytest.raises(AudioError, match=rf"target sample rate {re.escape(shown(bad))}"):
            load_audio(path, bad)
    wav, sr = load_audio(path, 8000.0)
    assert sr == 8000 and isinstance(sr, int) and len(wav) == 4000
