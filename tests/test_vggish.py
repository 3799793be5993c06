"""VGGish: front end vs the TF release's numpy pipeline, resampling vs resampy, network vs
torchvggish (checkpoint in its layout, random weights), layers and EUSIPCO fusion, tail handling,
timestamps, the postprocessor and safe loading of its parameters."""

import dataclasses
import os
import warnings

import numpy as np
import pytest
import torch

import audio_repr
from audio_repr.audio import get_resampler, load_audio, resample_kaiser_best
from audio_repr.frontends import VGGishLogMel, vggish_mel_matrix
from audio_repr.models import vggish as V
from audio_repr.weights import WeightsError
from conftest import accumulations, assert_same_arithmetic, chirp, noise, rel_err

resampy = pytest.importorskip("resampy")
R = pytest.importorskip("reference_vggish")


@pytest.fixture(scope="module")
def tv_ckpt(tmp_path_factory):
    """torchvggish's network with random weights, saved as its release file is (a plain state dict)."""
    net = R.torchvggish_network(seed=3)
    path = tmp_path_factory.mktemp("w") / "vggish-10086976.pth"
    torch.save(net.state_dict(), path)
    return net, path


@pytest.fixture(scope="module")
def enc(tv_ckpt):
    return audio_repr.load("vggish", weights=tv_ckpt[1])


def _examples(frames, n):
    """Our features [64, T] -> the first n examples [n, 96, 64]."""
    return frames[:, : n * 96].reshape(64, n, 96).permute(1, 2, 0).numpy()


def _signals():
    rng = np.random.default_rng(0)
    t = np.arange(int(16000 * 4.0)) / 16000
    sine = (0.8 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    sine[20000:36000] = 0.0                                   # digital silence inside
    return [
        (0.1 * rng.standard_normal(int(16000 * 1.3))).astype(np.float32),
        chirp(2.5, amp=0.9),
        sine[: int(16000 * 3.33)],
        (0.5 * rng.uniform(-1, 1, int(16000 * 0.99))).astype(np.float32),
        chirp(5.07, f0=60, f1=7900, amp=0.3),
        (1e-3 * rng.standard_normal(int(16000 * 2.0))).astype(np.float32),   # quiet: mostly the 0.01 floor
        np.concatenate([np.zeros(9000, np.float32), chirp(1.9, amp=0.99)]),
        (0.05 * rng.standard_normal(15600)).astype(np.float32),              # exactly one example
    ]


# ---------------- front end ----------------

def test_mel_matrix_equals_tf():
    assert np.abs(vggish_mel_matrix().numpy() - R.mel_matrix()).max() < 1e-12


@pytest.mark.parametrize("batch", [1, 8])
def test_frontend_equals_numpy_pipeline_synthetic(batch):
    fe = VGGishLogMel()
    sigs = _signals()[:batch]
    n = max(len(s) for s in sigs)
    wavs = torch.zeros(len(sigs), n)
    for i, s in enumerate(sigs):
        wavs[i, : len(s)] = torch.from_numpy(s)
    feats = fe(wavs)
    assert feats.shape == (len(sigs), 64, fe.frames_for(n)) and feats.dtype == torch.float32
    for i, s in enumerate(sigs):
        ref = R.reference_examples(s)
        assert len(s) % 15360 != 0 or len(s) == 15600
        assert fe.examples_for(len(s)) == len(ref) >= 1
        assert np.abs(_examples(feats[i], len(ref)) - ref).max() < 1e-4


def test_frontend_equals_numpy_pipeline_on_recordings(shared_audio):
    """Whole pipeline from the files (reading, downmix, kaiser_best resampling, log-mel examples) vs
    vggish_input.wavfile_to_examples; then 8 real clips of other lengths batched together."""
    fe = VGGishLogMel()
    for name in ("cat-meow-44k.wav", "dog-bark-44k-stereo.wav"):
        ref = R.vggish_input.wavfile_to_examples(str(shared_audio / name), return_tensor=False)
        wav, sr = load_audio(shared_audio / name)
        feats = fe(resample_kaiser_best(wav, sr, 16000)[None])[0]
        assert feats.shape[-1] == len(ref) * 96 == 96
        assert np.abs(_examples(feats, len(ref)) - ref).max() < 1e-4
    # FSDD: 8 kHz speech, eight clips of six recordings each (lengths not multiples of 0.96 s)
    files = sorted((shared_audio / "fsdd" / "recordings").glob("*.wav"))[::59][:48]
    clips = [np.concatenate([load_audio(f)[0].numpy() for f in files[i::8]]) for i in range(8)]
    wavs16 = [resample_kaiser_best(torch.from_numpy(c), 8000, 16000) for c in clips]
    n = max(len(w) for w in wavs16)
    batch = torch.stack([torch.nn.functional.pad(w, (0, n - len(w))) for w in wavs16])
    for tail in ("drop", "pad"):
        fe.tail = tail
        feats = fe(batch)
        for i, c in enumerate(clips):
            ref = R.reference_examples(resampy.resample(c.astype(np.float64), 8000, 16000), tail)
            assert fe.examples_for(len(wavs16[i])) == len(ref) >= 1
            assert np.abs(_examples(feats[i], len(ref)) - ref).max() < 1e-4


def test_tail_drop_and_pad():
    fe = VGGishLogMel()
    assert fe.frames_for(15599) == 0 and fe.frames_for(15600) == 96 and fe.frames_for(46319) == 192 and fe.frames_for(46320) == 288
    x = torch.from_numpy(chirp(2.5))                         # 2.5 s: two whole examples and 0.58 s more
    drop = fe(x[None])[0]
    fe.tail = "pad"
    assert fe.frames_for(1) == 96 and fe.frames_for(15600) == 96 and fe.frames_for(15601) == 192
    pad = fe(x[None])[0]
    assert drop.shape[-1] == 192 and pad.shape[-1] == 288
    assert torch.equal(pad[:, :192], drop)                   # padding never changes whole examples
    ref = R.reference_examples(x.numpy(), "pad")              # = the original on the zero-padded waveform
    assert len(ref) == 3 and np.abs(_examples(pad, 3) - ref).max() < 1e-4
    assert torch.allclose(pad[:, -20:], torch.full((64, 20), float(np.log(0.01))))   # silence past the end
    with pytest.raises(ValueError, match="tail"):
        fe.tail = "wrap"


def test_short_clips_drop_error_and_pad(enc):
    with pytest.raises(audio_repr.AudioError, match="at least 975 ms"):
        enc.embed(noise(0.97), sr=16000)
    enc.frontend.tail = "pad"
    try:
        e = enc.embed(noise(0.3), sr=16000)
        assert e.frames.shape == (1, 128) and torch.equal(e.timestamps_ms, torch.tensor([487.5], dtype=torch.float64))
        long = enc.embed(noise(2.5), sr=16000)
        assert long.frames.shape == (3, 128)
    finally:
        enc.frontend.tail = "drop"
    assert enc.embed(noise(2.5), sr=16000).frames.shape == (2, 128)


# ---------------- resampling ----------------

@pytest.mark.parametrize("orig,new", [(44100, 16000), (8000, 16000), (22050, 16000), (48000, 16000),
                                      (99000, 16000), (16001, 16000)])
def test_kaiser_best_matches_resampy(orig, new):
    """44.1/8/22.05/48 kHz; 99 kHz has outputs whose float64 time register is rounded below an integer
    (resampy then uses other taps: recomputed one by one); 16001 Hz takes the per-output path."""
    rng = np.random.default_rng(orig)
    x = (0.3 * rng.standard_normal(int(orig * 0.9))).astype(np.float32)
    ref = resampy.resample(x.astype(np.float64), orig, new, filter="kaiser_best")
    ours = get_resampler("kaiser_best")(torch.from_numpy(x), orig, new)
    assert ours.shape == ref.shape
    assert np.abs(ours.numpy() - ref).max() < 1e-5


def test_kaiser_best_batch_equals_alone_and_sine():
    clips = [noise(s, sr=44100, seed=i) for i, s in enumerate([0.31, 1.2, 0.05])]
    n = max(len(c) for c in clips)
    out = resample_kaiser_best(torch.stack([torch.nn.functional.pad(c, (0, n - len(c))) for c in clips]), 44100, 16000)
    for i, c in enumerate(clips):
        alone = resample_kaiser_best(c, 44100, 16000)
        assert alone.shape == (int(len(c) * 16000 / 44100),)
        assert torch.allclose(out[i, : len(alone)], alone, atol=1e-6)
    t = np.arange(44100) / 44100
    y = resample_kaiser_best(torch.from_numpy(np.sin(2 * np.pi * 1000 * t).astype(np.float32)), 44100, 16000)
    fit = np.sin(2 * np.pi * 1000 * np.arange(16000) / 16000)
    assert np.abs(y.numpy()[1000:-1000] - fit[1000:-1000]).max() < 1e-4
    with pytest.raises(ValueError, match="too few"):
        resample_kaiser_best(torch.zeros(2), 44100, 16000)


def test_encoder_resamples_with_kaiser_best(enc):
    assert enc.card.resampler == "kaiser_best"
    x = noise(2.0, sr=44100, seed=4)
    a = enc.embed(x, sr=44100).frames
    b = enc.embed(resample_kaiser_best(x, 44100, 16000), sr=16000).frames
    assert torch.equal(a, b)


# ---------------- network and weights ----------------

def test_torchvggish_checkpoint_loads_and_matches(tv_ckpt, enc):
    net, _ = tv_ckpt
    ex = np.concatenate([R.reference_examples(s) for s in _signals()[:4]])        # 9 examples
    ref = R.reference_layers(net, ex)
    with torch.inference_mode():
        out = enc.network(R.to_frames(ex))
        full = net(torch.from_numpy(ex).float()[:, None])                       # torchvggish's output
    assert rel_err(out["embedding"][0], ref[20]) < 1e-5                      # TF's pre-activation output
    assert rel_err(out["embedding_relu"][0], full) < 1e-5                    # torchvggish adds a ReLU
    assert rel_err(out["fc1_1_relu"][0], ref[17]) < 1e-5
    assert (out["embedding"][0] < 0).any()                                    # ... which TF does not have


def test_end_to_end_equals_torchvggish_pipeline(tv_ckpt, enc):
    net, _ = tv_ckpt
    sigs = _signals()
    embs = enc.embed([torch.from_numpy(s) for s in sigs], sr=16000, batch_size=3)
    for s, e in zip(sigs, embs):
        ex = R.vggish_input.waveform_to_examples(s.astype(np.float64), 16000)
        ref = R.reference_layers(net, ex.detach().numpy()[:, 0])[20]
        assert e.frames.shape == ref.shape == (len(ex), 128)
        assert rel_err(e.frames, ref) < 1e-4
        assert torch.allclose(e.clip, e.frames.mean(0) + e.frames.amax(0))
        # one frame per 0.96 s example, stamped at the centre of its 975 ms of audio
        assert torch.equal(e.timestamps_ms, 487.5 + 960.0 * torch.arange(len(ex), dtype=torch.float64))
        assert e.layers == ["embedding"]


def test_every_layer_in_the_original_numbering(tv_ckpt, enc):
    net, _ = tv_ckpt
    assert enc.layer_names[:22] == list(V.LAYER_NAMES) and len(V.LAYER_NAMES) == 22
    assert enc.layer_names[22:] == ["conv3_2_relu_pooled", "conv4_2_relu_pooled"]
    ex = np.concatenate([R.reference_examples(s) for s in _signals()[1:3]])        # 5 examples
    ref = R.reference_layers(net, ex)
    with torch.inference_mode():
        out = enc.network(R.to_frames(ex))
    assert list(out) == enc.layer_names and len(out) == 24
    for i, name in enumerate(V.LAYER_NAMES):
        want = R.per_step(ref[i])
        got = out[name][0]
        assert got.shape == want.shape == (5 * 96 // enc.network.layer_strides[name], enc.layer_dims[name]), name
        assert rel_err(got, want) < 1e-5, name
    for name in ("conv1", "fc1_1", "fc1_2", "embedding"):                   # pre-activations stay intact
        assert rel_err(out[name][0], R.per_step(ref[V.LAYER_NAMES.index(name)])) < 1e-5, name
    assert enc.layer_dims["pool4"] == 2048 and enc.layer_dims["fc1_1_relu"] == 4096
    assert enc.network.out_frames(250, "conv3_2_relu") == 48 and enc.network.out_frames(250, "embedding") == 2


def test_fusion_is_the_eusipco_recipe(tv_ckpt, enc):
    net, _ = tv_ckpt
    x = _signals()[4]                                                           # 5.07 s: 5 examples
    fused = enc.embed(torch.from_numpy(x), sr=16000, layers="fusion")
    ref = R.eusipco_fusion(net, R.reference_examples(x))
    assert fused.frames.shape == ref.shape == (30, 8192) == (30, enc.output_size("fusion"))
    assert rel_err(fused.frames, ref) < 1e-4
    assert torch.allclose(fused.clip, ref.mean(0) + ref.amax(0), rtol=1e-4, atol=1e-4 * float(ref.abs().max()))
    # 160 ms steps, each stamped at the centre of its 16 frames (175 ms of audio)
    assert torch.equal(fused.timestamps_ms, 87.5 + 160.0 * torch.arange(30, dtype=torch.float64))
    assert fused.layer_slices == {"conv3_2_relu_pooled": (0, 4096), "conv4_2_relu_pooled": (4096, 8192)}
    # the raw layers by their EUSIPCO numbers, aligned to the coarser one's 80 ms grid
    raw = enc.embed(torch.from_numpy(x), sr=16000, layers=[9, 14])
    assert raw.layers == ["conv3_2_relu", "conv4_2_relu"] and raw.frames.shape == (60, 8192)


def test_vggish_4k(tv_ckpt):
    net, path = tv_ckpt
    enc4k = audio_repr.load("vggish-4k", weights=path)
    assert enc4k.embedding_size == 4096 and enc4k.card.default_layer == "fc1_1_relu"
    x = _signals()[1]
    e = enc4k.embed(torch.from_numpy(x), sr=16000)
    ref = R.reference_layers(net, R.reference_examples(x))[17]
    assert e.frames.shape == (2, 4096) and rel_err(e.frames, ref) < 1e-4


def test_batch_equals_alone_and_pieces(enc):
    clips = [noise(s, seed=20 + i) for i, s in enumerate([1.0, 4.3, 2.9, 0.99, 6.5])]
    batch = enc.embed(clips, sr=16000, batch_size=4, layers=["embedding", "conv4_2_relu_pooled"])
    tiling = enc.tiling
    enc.tiling = dataclasses.replace(tiling, chunk_frames=96 * 2)               # many pieces
    try:
        pieces = enc.embed(clips, sr=16000, batch_size=3, layers=["embedding", "conv4_2_relu_pooled"])
    finally:
        enc.tiling = tiling
    for c, b, p in zip(clips, batch, pieces):
        alone = enc.embed(c, sr=16000, layers=["embedding", "conv4_2_relu_pooled"])
        E = (1 + (len(c) - 400) // 160) // 96
        assert b.frames.shape == alone.frames.shape == p.frames.shape == (E, 128 + 4096)
        for name, (s0, s1) in alone.layer_slices.items():     # embedding: fan-in 12288 (fc1), depth 10
            acc = accumulations(enc, name)                     # conv4_2: fan-in 4608 (512 x 3 x 3), depth 7
            assert_same_arithmetic(b.frames[:, s0:s1], alone.frames[:, s0:s1], *acc, what=f"batch {name}")
            assert_same_arithmetic(p.frames[:, s0:s1], alone.frames[:, s0:s1], *acc, what=f"pieces {name}")
        assert torch.equal(b.timestamps_ms, p.timestamps_ms)


def test_forward_is_differentiable_and_lazy(enc):
    wavs = torch.stack([noise(1.5, seed=1), noise(1.5, seed=2)]).requires_grad_(True)
    out = enc(wavs, lengths=[24000, 20000])
    assert isinstance(out, V.LayerOutputs) and out["embedding"].shape == (2, 1, 128)
    out["embedding"].sum().backward()
    assert wavs.grad is not None and torch.isfinite(wavs.grad).all()
    with torch.inference_mode():
        lazy = enc(wavs.detach())
    assert not lazy._cache and lazy["pool2"].shape == (2, 24, 2048) and list(lazy._cache) == ["pool2"]
    with pytest.raises(KeyError):
        lazy["postprocessed"]


def test_tcvrick_and_tf_variable_layouts(tv_ckpt, tmp_path):
    net, _ = tv_ckpt
    sd = net.state_dict()
    # tcvrick's port (EVAR's pytorch_vggish.pth): fc.* instead of embeddings.*, here behind a prefix
    tcv = V.convert_state_dict({"module." + k.replace("embeddings.", "fc."): v for k, v in sd.items()})
    assert tcv.keys() == sd.keys() and all(torch.equal(tcv[k], sd[k]) for k in sd)
    # TF variables exported to .npz: HWIO kernels, [in, out] matrices
    tf_names = {"features.0": "conv1", "features.3": "conv2", "features.6": "conv3/conv3_1",
                "features.8": "conv3/conv3_2", "features.11": "conv4/conv4_1", "features.13": "conv4/conv4_2",
                "embeddings.0": "fc1/fc1_1", "embeddings.2": "fc1/fc1_2", "embeddings.4": "fc2"}
    tf = {}
    for mod, scope in tf_names.items():
        w = sd[mod + ".weight"].numpy()
        tf[f"vggish/{scope}/weights"] = w.transpose(2, 3, 1, 0) if w.ndim == 4 else w.T
        tf[f"vggish/{scope}/biases"] = sd[mod + ".bias"].numpy()
    np.savez(tmp_path / "vggish_tf_vars.npz", **tf)
    conv = V.load_state(tmp_path / "vggish_tf_vars.npz")
    assert conv.keys() == sd.keys() and all(torch.equal(conv[k], sd[k]) for k in sd)
    (tmp_path / "vggish_model.ckpt").write_bytes(b"\x00" * 64)
    with pytest.raises(WeightsError, match="TensorFlow"):
        audio_repr.load("vggish", weights=tmp_path / "vggish_model.ckpt")
    torch.save({"features.0.weight": torch.zeros(3, 3)}, tmp_path / "other.pth")
    with pytest.raises(WeightsError, match="does not fit"):
        audio_repr.load("vggish", weights=tmp_path / "other.pth")


# ---------------- postprocessor ----------------

@pytest.fixture(scope="module")
def pca():
    g = np.random.default_rng(5)
    q, _ = np.linalg.qr(g.standard_normal((128, 128)))
    return {"pca_eigen_vectors": q * g.uniform(0.05, 0.5, (128, 1)), "pca_means": g.standard_normal(128)}


def _save_numpy_pickle(obj, path, legacy=False, numpy1_names=False):
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    if numpy1_names:                   # as written under numpy 1.x (the release file's era)
        raw = path.read_bytes()
        assert b"numpy._core.multiarray" in raw
        path.write_bytes(raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))


@pytest.mark.parametrize("fmt", ["pth", "pth-legacy-numpy1", "npz"])
def test_postprocessor_equals_tf(enc, pca, tmp_path, fmt):
    path = tmp_path / ("vggish_pca_params-970ea276.pth" if fmt != "npz" else "vggish_pca_params.npz")
    if fmt == "npz":
        np.savez(path, **pca)
    else:
        _save_numpy_pickle(pca, path, legacy=fmt != "pth", numpy1_names=fmt != "pth")
    x = _signals()[4]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", DeprecationWarning)
            V.enable_postprocessor(enc, path)
        assert "postprocessed" in enc.layer_names and enc.layer_dims["postprocessed"] == 128
        e = enc.embed(torch.from_numpy(x), sr=16000, layers=["embedding", "postprocessed"])
        raw, post = e.frames[:, :128], e.frames[:, 128:]
        ref = R.tf_postprocess(raw.numpy(), pca["pca_eigen_vectors"], pca["pca_means"])
        assert post.dtype == torch.float32 and (post == post.round()).all() and post.min() >= 0 and post.max() <= 255
        assert np.abs(post.numpy() - ref).max() <= 1 and (post.numpy() != ref).mean() < 0.01
    finally:
        V.disable_postprocessor(enc)
    assert "postprocessed" not in enc.layer_names


def test_postprocessor_file_from_the_cache_and_unsafe_files_refused(enc, pca, tmp_path, monkeypatch):
    import copy
    import hashlib

    from audio_repr import weights as W

    W.cache_dir().mkdir(parents=True, exist_ok=True)
    ours = W.cache_dir() / "vggish_pca_params-970ea276.pth"
    _save_numpy_pickle(pca, ours)
    # the digits in the official name were never confirmed upstream: a file without them is used (and reported)
    assert not hashlib.sha256(ours.read_bytes()).hexdigest().startswith("970ea276")
    V.enable_postprocessor(enc)                              # found through the manifest entry "vggish-pca"
    assert "postprocessed" in enc.layer_names
    V.disable_postprocessor(enc)
    # the cache is verified: once the manifest pins a hash, another file is refused
    man = copy.deepcopy(W.manifest())
    man["files"]["vggish_pca_params-970ea276.pth"]["sha256"] = "0" * 64
    monkeypatch.setattr(W, "manifest", lambda: man)
    with pytest.raises(W.HashMismatchError, match="0000000000"):
        V.enable_postprocessor(enc)

    class Boom:
        def __reduce__(self):
            return (os.system, ("echo unsafe > " + str(tmp_path / "ran"),))

    evil = tmp_path / "evil.pth"
    torch.save({"pca_eigen_vectors": Boom(), "pca_means": np.zeros(128)}, evil)
    with pytest.raises(WeightsError, match="safely"):
        V.enable_postprocessor(enc, evil)
    evil2 = tmp_path / "evil.npz"
    np.savez(evil2, pca_eigen_vectors=np.array([Boom()], dtype=object), pca_means=np.zeros(128))
    with pytest.raises(WeightsError, match="without pickle"):
        V.enable_postprocessor(enc, evil2)
    assert not (tmp_path / "ran").exists() and "postprocessed" not in enc.layer_names
    with pytest.raises(ValueError, match="PCA parameters must be"):
        V.enable_postprocessor(enc, {"pca_eigen_vectors": np.eye(64), "pca_means": np.zeros(64)})


def test_cards_and_manifest():
    for name in ("vggish", "vggish-4k"):
        c = audio_repr.get_card(name)
        assert c.family == "vggish" and c.sample_rate == 16000 and c.resampler == "kaiser_best"
        assert c.fusion_layers == ("conv3_2_relu_pooled", "conv4_2_relu_pooled")
        e = audio_repr.weights.manifest_entry(name)
        assert e["url"].endswith("/v0.1/vggish-10086976.pth") and e["filename"] == "vggish-10086976.pth"
    assert audio_repr.weights.manifest_entry("vggish-pca")["url"].endswith("/v0.1/vggish_pca_params-970ea276.pth")


def test_long_stereo_file_in_bounded_memory(tmp_path):
    """10 minutes of 44.1 kHz stereo through VGGish by its path (block reading, downmix, kaiser_best
    resampling, front end, network): the peak RSS grows by about 0.4 GB, not by the interleaved float
    copies and float64 temporaries of a whole-file pass (1.23 GB here before reading went by blocks)."""
    import soundfile as sf

    from conftest import peak_rss_growth_mb

    path = tmp_path / "long.wav"
    g = np.random.default_rng(0)
    with sf.SoundFile(str(path), "w", samplerate=44100, channels=2, subtype="PCM_16") as f:
        for _ in range(10):
            f.write((0.1 * g.standard_normal((44100 * 60, 2))).astype(np.float32))
    grew_mb = peak_rss_growth_mb(
        prepare="""
            enc = audio_repr.load("vggish", pretrained=False)
            enc.embed(torch.randn(44100), sr=44100)""",
        measure=f"e = enc.embed({str(path)!r}, batch_size=8)",
        check="assert e.frames.shape == (624, 128), e.frames.shape", cwd=tmp_path)
    assert grew_mb < 800, f"embedding a 10-minute 44.1 kHz stereo file grew the peak RSS by {grew_mb} MB"
