"""Bad input gets a clear error naming the problem."""

import re

import numpy as np
import pytest
import torch

import audio_repr
from audio_repr import AudioError, UnknownModelError


def shown(rate):
    """How an error writes a rejected sample rate: a number as ``<value> Hz``, anything else by its repr."""
    return repr(rate) if isinstance(rate, (str, bytes, bool, type(None))) else f"{rate} Hz"


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
    with pytest.raises(AudioError, match=r"audio: input sample rate -5 Hz is not accepted \(not positive\).*"
                                         r"the model's rate is 16000 Hz"):
        enc.embed(np.zeros(16000, np.float32), sr=-5)


@pytest.mark.parametrize("bad,why", [(16000.5, "not a whole number"), ("16000", "not a number"), (True, "bool"),
                                     (0, "not positive"), (-44100, "not positive"), (float("nan"), "not a whole"),
                                     (b"16000", "not a number"), (np.float64(8000.25), "not a whole number")])
def test_sample_rate_must_be_a_positive_whole_number(enc, bad, why):
    x = np.zeros(16000, np.float32)
    with pytest.raises(AudioError, match=rf"input sample rate {re.escape(shown(bad))}.*{why}.*accepted: a positive "
                                         r"whole number of Hz.*16000\.0.*the model's rate is 16000 Hz"):
        enc.embed(x, sr=bad)
    with pytest.raises(AudioError, match=rf"audio\[1\]: input sample rate {re.escape(shown(bad))}.*{why}"):
        enc.waveforms([x, x], sr=[16000, bad])


def test_integral_float_and_numpy_rates_are_accepted(enc):
    x = np.random.default_rng(0).standard_normal(8000).astype(np.float32) * 0.1
    ref = enc.waveforms(x, sr=8000)
    for sr in (8000.0, np.int64(8000), np.int16(8000), np.float32(8000), np.array(8000), torch.tensor(8000)):
        assert torch.equal(enc.waveforms(x, sr=sr), ref)


def test_a_bad_scalar_rate_is_an_error_even_with_files_only(enc, tmp_path):
    import soundfile as sf

    path = tmp_path / "a.wav"
    sf.write(path, np.zeros(16000, np.float32), 16000)
    assert enc.waveforms([str(path)], sr=44100)[0].shape == (16000,)     # a scalar rate is for arrays only
    with pytest.raises(AudioError, match=r"audio\[0\]: input sample rate '16000' is not accepted \(not a number"):
        enc.waveforms([str(path)], sr="16000")


def test_one_sample_rate_per_array(enc, tmp_path):
    import soundfile as sf

    g = np.random.default_rng(1)
    a = (0.1 * g.standard_normal(44100)).astype(np.float32)
    b = (0.1 * g.standard_normal(8000)).astype(np.float32)
    wa, wb = enc.waveforms(a, sr=44100), enc.waveforms(b, sr=8000)
    for rates in ([44100, 8000], (44100.0, np.int64(8000)), np.array([44100, 8000])):
        got = enc.waveforms([a, b], sr=rates)
        assert torch.equal(got[0], wa) and torch.equal(got[1], wb)
    embs = enc.embed((a, b), sr=(44100, 8000))
    assert torch.allclose(embs[1].clip, enc.embed(b, sr=8000).clip, atol=1e-6)
    # a file uses its own rate: its entry must be None (a rate there would read as a wish to reinterpret it)
    path = tmp_path / "c.wav"
    sf.write(path, b, 8000)
    got = enc.waveforms([str(path), a], sr=[None, 44100])
    assert torch.allclose(got[0], wb, atol=1e-4) and torch.equal(got[1], wa)
    with pytest.raises(AudioError, match=r"audio\[0\]: .*file's own sample rate.*sr\[0\] must be None, got 8000"):
        enc.waveforms([str(path), a], sr=[8000, 44100])
    with pytest.raises(AudioError, match=r"audio\[1\]: a waveform array needs its input sample rate: sr\[1\] is None"):
        enc.waveforms([str(path), a], sr=[None, None])


def test_sample_rate_list_must_match_the_audio_list(enc):
    x = np.zeros(16000, np.float32)
    with pytest.raises(AudioError, match=r"sr has 2 sample rates but there are 3 inputs"):
        enc.embed([x, x, x], sr=[16000, 16000])
    with pytest.raises(AudioError, match=r"sr is a list of 2 sample rates but audio is a single input"):
        enc.embed(x, sr=[16000, 16000])
    with pytest.raises(AudioError, match=r"sr has 0 sample rates but there are 1 inputs"):
        enc.embed([x], sr=[])


def test_sample_rate_messages_say_which_rate_is_which(enc):
    with pytest.raises(AudioError, match=r"needs its input sample rate.*the model's rate is 16000 Hz"):
        enc.embed(np.zeros(16000, dtype=np.float32))
    vgg = audio_repr.load("vggish", pretrained=False)            # resampy's resampler: no output from 1 sample
    with pytest.raises(AudioError, match=r"audio: cannot resample from the input sample rate 44100 Hz to the model's "
                                         r"rate 16000 Hz"):
        vgg.waveforms(np.zeros(1, np.float32), sr=44100)


# ---- dtype and device -------------------------------------------------------------------------

@pytest.mark.parametrize("name,dtype", [("float32", torch.float32), ("fp32", torch.float32), ("float16", torch.float16),
                                        ("fp16", torch.float16), ("bfloat16", torch.bfloat16), ("bf16", torch.bfloat16),
                                        ("torch.bfloat16", torch.bfloat16), (" BF16 ", torch.bfloat16),
                                        (torch.bfloat16, torch.bfloat16), (torch.float16, torch.float16)])
def test_dtype_by_name(name, dtype):
    enc = audio_repr.load("byola-v1-512", pretrained=False, dtype=name)
    assert enc.dtype == dtype


@pytest.mark.parametrize("bad", ["int8", "float8", "bfloat", "cuda", torch.int64, torch.complex64, 16, ""])
def test_bad_dtype_lists_what_is_accepted(bad):
    with pytest.raises(ValueError, match=rf"dtype {re.escape(repr(bad))} is not accepted.*accepted:.*'bfloat16'.*"
                                         r"'bf16'.*torch\.bfloat16"):
        audio_repr.load("byola-v1-512", pretrained=False, dtype=bad)


def test_check_device_cpu():
    assert audio_repr.check_device("cpu") == torch.device("cpu")
    assert audio_repr.check_device(torch.device("cpu")) == torch.device("cpu")
    assert audio_repr.load("byola-v1-512", pretrained=False, device="cpu").device == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this torch can use CUDA here")
@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:3", torch.device("cuda", 1)])
def test_cuda_on_a_torch_without_cuda(device, monkeypatch):
    """Before anything else is done: no network is built and no weights are looked for."""
    import audio_repr.models

    shown = str(device)
    msg = (rf"^device {re.escape(repr(shown))} is not available: this torch \({re.escape(torch.__version__)}\) "
           rf"(has no CUDA support|finds no CUDA device)[^\n]*; available: cpu(, mps)?$")
    with pytest.raises(ValueError, match=msg):
        audio_repr.check_device(device)

    def no_building(name):
        raise AssertionError("the network was built before the device was checked")

    monkeypatch.setattr(audio_repr.models, "family", no_building)
    with pytest.raises(ValueError, match=msg):                 # pretrained, offline, no weights: also no lookup
        audio_repr.load("byola-v1-512", device=device)


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")
def test_mps_unavailable():
    with pytest.raises(ValueError, match=r"^device 'mps' is not available: .*MPS.*; available: cpu"):
        audio_repr.check_device("mps")


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "", "cpu:0:1", 3.5, ["cpu"]])
def test_invalid_device(bad):
    with pytest.raises(ValueError, match=rf"^invalid device {re.escape(repr(bad))}[^\n]*; available: cpu") as e:
        audio_repr.check_device(bad)
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="invalid device"):
        audio_repr.load("byola-v1-512", pretrained=False, device=bad)


def test_cuda_index_beyond_the_devices_torch_sees(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert audio_repr.check_device("cuda") == torch.device("cuda")
    assert audio_repr.check_device("cuda:1") == torch.device("cuda:1")
    assert audio_repr.check_device(torch.device("cuda", 0)) == torch.device("cuda:0")
    with pytest.raises(ValueError, match=r"^device 'cuda:2' is not available: torch sees 2 CUDA device\(s\); "
                                         r"available: cpu, cuda:0, cuda:1(, mps)?$"):
        audio_repr.check_device("cuda:2")
