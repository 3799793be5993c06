import numpy as np
import pytest
import torch

import audio_repr
from audio_repr.models import Tiling
from audio_repr.frontends import LogMelSpectrogram
from conftest import (AUDIO, accumulations, assert_same_arithmetic, chirp, cosine, noise, peak_rss_growth_mb,
                      rel_err)
from reference_byola import OriginalV1, OriginalV2, randomise

V1_MEAN, V1_STD = -5.4919195, 5.0389895
V2_MEAN, V2_STD = -9.660292, 4.7219563


@pytest.fixture(scope="module")
def v1_ckpt(tmp_path_factory):
    net = randomise(OriginalV1(512), seed=1)
    path = tmp_path_factory.mktemp("w") / "AudioNTT2020-BYOLA-64x96d512.pth"
    torch.save(net.state_dict(), path)
    return net, path


@pytest.fixture(scope="module")
def v2_ckpt(tmp_path_factory):
    net = randomise(OriginalV2(), seed=2)
    path = tmp_path_factory.mktemp("w") / "AudioNTT2022-BYOLA-64x96d2048.pth"
    # v2 training checkpoints keep the network behind a prefix
    torch.save({"model." + k: v for k, v in net.state_dict().items()}, path)
    return net, path


def reference(net, wav, mel_scale, mean, std):
    """The original pipeline, one clip at a time: log-mel, normalise, network, mean + max."""
    fe = LogMelSpectrogram(sample_rate=16000, n_fft=1024, hop_length=160, n_mels=64, f_min=60, f_max=7800,
                           mel_scale=mel_scale)
    lms = (fe(wav[None])[0] - mean) / std
    with torch.no_grad():
        frames = net.frames(lms[None, None])[0]
    return frames, frames.max(0).values + frames.mean(0)


def test_v1_checkpoint_in_original_layout_loads_and_matches(v1_ckpt):
    net, path = v1_ckpt
    enc = audio_repr.load("byola-v1-512", weights=path)
    clips = [noise(s, seed=i) for i, s in enumerate([0.5, 2.1, 3.7])]
    embs = enc.embed(clips, sr=16000)
    for c, e in zip(clips, embs):
        frames, clip = reference(net, c, "htk", V1_MEAN, V1_STD)
        assert e.frames.shape == frames.shape
        assert rel_err(e.frames, frames) < 1e-5 and rel_err(e.clip, clip) < 1e-5


def test_v2_checkpoint_with_prefix_loads_and_matches(v2_ckpt):
    net, path = v2_ckpt
    enc = audio_repr.load("byola-v2-2048", weights=path)
    assert enc.embedding_size == 3072 and enc.frame_hop_ms() == 40.0
    clips = [noise(1.0, seed=5), torch.from_numpy(chirp(2.3))]
    for c, e in zip(clips, enc.embed(clips, sr=16000)):
        frames, clip = reference(net, c, "slaney", V2_MEAN, V2_STD)
        assert e.frames.shape == frames.shape == (frames.shape[0], 3072)
        assert rel_err(e.frames, frames) < 1e-5 and rel_err(e.clip, clip) < 1e-5
        assert torch.allclose(e.timestamps_ms, 15.0 + 40.0 * torch.arange(len(frames), dtype=torch.float64))


def test_prefixed_and_wrapped_v1_checkpoints(v1_ckpt, tmp_path):
    net, _ = v1_ckpt
    sd = net.state_dict()
    ref = audio_repr.load("byola-v1-512", weights=v1_ckpt[1]).embed(noise(1.0), sr=16000).clip
    for i, obj in enumerate([{"module." + k: v for k, v in sd.items()},
                             {"state_dict": {"online_encoder.net." + k: v for k, v in sd.items()}}]):
        p = tmp_path / f"c{i}.pth"
        torch.save(obj, p)
        got = audio_repr.load("byola-v1-512", weights=p).embed(noise(1.0), sr=16000).clip
        assert torch.equal(got, ref)


def test_batch_equals_alone_and_timestamps(v1_ckpt):
    enc = audio_repr.load("byola-v1-512", weights=v1_ckpt[1])
    clips = [noise(s, seed=10 + i) for i, s in enumerate([0.35, 4.0, 1.27, 2.0])]
    batch = enc.embed(clips, sr=16000, batch_size=4)
    acc = accumulations(enc)                                # fan-in 576 (64 ch x 3 x 3), depth 6
    for c, b in zip(clips, batch):
        alone = enc.embed(c, sr=16000)
        assert b.frames.shape == alone.frames.shape == (enc.frontend.frames_for(len(c)) // 8, 512)
        assert_same_arithmetic(b.frames, alone.frames, *acc, what="frames")
        assert_same_arithmetic(b.clip, alone.clip, *acc, what="clip")
        # centre of the 8 spectrogram frames (10 ms hop, centred STFT) pooled into each output frame
        assert torch.equal(b.timestamps_ms, 35.0 + 80.0 * torch.arange(len(b.frames), dtype=torch.float64))


@pytest.mark.parametrize("model", ["byola-v1-512", "byola-v2-2048"])
def test_long_audio_in_pieces_equals_whole(model):
    enc = audio_repr.load(model, pretrained=False)
    torch.manual_seed(0)
    x = noise(30.0, seed=7)
    whole = enc.embed(x, sr=16000, layers="all")
    enc.tiling = Tiling(chunk_frames=96, context_frames=24)   # many pieces, context still > receptive field
    pieces = enc.embed(x, sr=16000, layers="all", batch_size=5)
    assert len(enc._pieces(0, 3001)) == 32
    assert pieces.frames.shape == whole.frames.shape
    for name, (a, b) in whole.layer_slices.items():
        assert_same_arithmetic(pieces.frames[:, a:b], whole.frames[:, a:b], *accumulations(enc, name), what=name)


def test_layers_shapes_and_fusion(v1_ckpt):
    enc = audio_repr.load("byola-v1-512", weights=v1_ckpt[1])
    assert enc.layer_names == ["conv1", "conv2", "conv3", "fc1", "fc2"]
    assert enc.layer_dims == {"conv1": 2048, "conv2": 1024, "conv3": 512, "fc1": 512, "fc2": 512}
    x = noise(2.0)
    T = enc.frontend.frames_for(len(x))
    per = {n: enc.embed(x, sr=16000, layers=[n]) for n in enc.layer_names}
    for n, s in [("conv1", 2), ("conv2", 4), ("conv3", 8), ("fc1", 8), ("fc2", 8)]:
        assert per[n].frames.shape == (T // s, enc.layer_dims[n])
    assert torch.equal(per["fc2"].frames, enc.embed(x, sr=16000).frames)
    fused = enc.embed(x, sr=16000, layers="fusion")
    assert fused.frames.shape == (T // 8, 2048 + 1024 + 512 + 512 + 512) == (T // 8, enc.output_size("fusion"))
    # fusion = each layer max-pooled to the 80 ms grid, concatenated in order
    for n in enc.layer_names:
        a, b = fused.layer_slices[n]
        s = {"conv1": 4, "conv2": 2}.get(n, 1)
        f = per[n].frames[: (T // 8) * s].reshape(T // 8, s, -1).amax(1)
        assert torch.allclose(fused.frames[:, a:b], f)
    assert torch.allclose(fused.clip, fused.frames.mean(0) + fused.frames.amax(0))
    sel = enc.embed(x, sr=16000, layers=["conv3", -1])
    assert sel.layers == ["conv3", "fc2"] and sel.frames.shape == (T // 8, 1024)
    with pytest.raises(ValueError, match="unknown layer"):
        enc.embed(x, sr=16000, layers=["conv9"])


def test_calibrate_sets_dataset_statistics(v1_ckpt):
    enc = audio_repr.load("byola-v1-512", weights=v1_ckpt[1])
    clips = [noise(1.0, seed=1), torch.from_numpy(chirp(0.7))]
    mean, std = enc.calibrate(clips, sr=16000)
    fe = LogMelSpectrogram(sample_rate=16000, n_fft=1024, hop_length=160, n_mels=64, f_min=60, f_max=7800)
    allv = torch.cat([fe(c[None])[0].flatten() for c in clips]).double().numpy()
    assert abs(mean - allv.mean()) < 1e-4 and abs(std - allv.std()) < 1e-4
    assert enc.norm_stats == pytest.approx((allv.mean(), allv.std()), rel=1e-5)
    # the network now sees (x - mean) / std of those statistics
    frames, _ = reference(v1_ckpt[0], clips[0], "htk", mean, std)
    assert rel_err(enc.embed(clips[0], sr=16000).frames, frames) < 1e-5


def test_dtype_and_device(v1_ckpt):
    enc32 = audio_repr.load("byola-v1-512", weights=v1_ckpt[1])
    enc16 = audio_repr.load("byola-v1-512", weights=v1_ckpt[1], device="cpu", dtype=torch.bfloat16)
    assert enc16.dtype == torch.bfloat16 and enc16.device.type == "cpu"
    x = noise(2.0)
    a, b = enc32.embed(x, sr=16000), enc16.embed(x, sr=16000)
    assert b.frames.dtype == torch.float32
    assert cosine(a.clip, b.clip) > 0.99


def test_resampled_input_goes_through_the_default_resampler(v1_ckpt):
    from audio_repr.audio import resample

    enc = audio_repr.load("byola-v1-512", weights=v1_ckpt[1])
    x = noise(1.0, sr=44100)
    assert torch.equal(enc.embed(x, sr=44100).frames, enc.embed(resample(x, 44100, 16000), sr=16000).frames)


# ---------------- with the official weights and the original implementation's outputs ----------------

def test_golden_from_stored_waveforms(d512_weights, golden):
    enc = audio_repr.load("byola-v1-512", weights=d512_weights)
    for key in ("dog", "cat"):
        e = enc.embed(golden[f"{key}_wav16k"], sr=16000)
        assert e.frames.shape == golden[f"{key}_frames"].shape
        assert rel_err(e.frames, golden[f"{key}_frames"]) < 1e-4
        assert rel_err(e.clip, golden[f"{key}_clip"]) < 1e-4
    keys = sorted((k for k in golden if k.startswith("fsdd") and k.endswith("_clip")), key=lambda k: int(k[4:-5]))
    embs = enc.embed([golden[k.replace("_clip", "_wav16k")] for k in keys], sr=16000)
    for k, e in zip(keys, embs):
        assert rel_err(e.clip, golden[k]) < 1e-4, k


def test_golden_from_original_files(d512_weights, golden, shared_audio):
    enc = audio_repr.load("byola-v1-512", weights=d512_weights)
    for key, name in [("dog", "dog-bark-44k-stereo.wav"), ("cat", "cat-meow-44k.wav")]:
        e = enc.embed(str(shared_audio / name))
        assert cosine(e.clip, golden[f"{key}_clip"]) > 0.9999
        assert cosine(e.frames, golden[f"{key}_frames"]) > 0.9999
    keys = sorted((k for k in golden if k.startswith("fsdd") and k.endswith("_clip")), key=lambda k: int(k[4:-5]))
    files = [str(shared_audio / "fsdd" / str(f)) for f in golden["fsdd_files"]]
    for k, e in zip(keys, enc.embed(files)):
        assert cosine(e.clip, golden[k]) > 0.9999, k


def test_ten_minutes_in_bounded_memory(tmp_path):
    """10 minutes of audio through byola-v1-512: peak RSS stays far below what one whole-file pass
    needs (the first conv block alone would hold 64 x 64 x 60000 floats = 1 GB, several times over)."""
    grew_mb = peak_rss_growth_mb(
        prepare="""
            enc = audio_repr.load("byola-v1-512", pretrained=False)
            x = 0.1 * torch.randn(16000 * 600)
            enc.embed(x[:16000], sr=16000)""",
        measure="e = enc.embed(x, sr=16000)",                       # the default batch, as `audio-repr embed`
        check="assert e.frames.shape == (60001 // 8, 512) and enc.default_batch_size() == 1", cwd=tmp_path)
    # the README's figure: ~0.15 GB at the default batch (one 1024-frame piece per batch on a CPU; 0.68 GB at 16)
    print(f"peak RSS growth {grew_mb} MB")
    assert grew_mb < 300, f"embedding 10 minutes at the default batch grew the peak RSS by {grew_mb} MB"
