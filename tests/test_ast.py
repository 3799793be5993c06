"""AST: Kaldi fbank vs transformers' ASTFeatureExtractor, checkpoints in the original and the
transformers layouts vs transformers' ASTModel, short/long input rules, fusion, timestamps.

The networks are random (transformers' ``ASTModel`` with the real patch geometry, reduced width for
speed; the real size once); transformers is a test-only dependency.
"""

import dataclasses
import math
import warnings

import numpy as np
import pytest
import torch

import audio_repr
from audio_repr import Encoder
from audio_repr.frontends import KaldiFbank
from audio_repr.models import ast as A
from audio_repr.registry import get_card
from conftest import accumulations, assert_same_arithmetic, chirp, noise, rel_err

transformers = pytest.importorskip("transformers")
from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification, ASTModel  # noqa: E402

MEAN, STD = -4.2677393, 4.5689974
SMALL = dict(dim=64, depth=12, heads=4, mlp_dim=128)


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # transformers' mel filter notice
        yield


def hf_extractor(**kw):
    return ASTFeatureExtractor(**kw)


def hf_config(card, small=True, **kw):
    a = card.arch
    geo = dict(patch_size=16, frequency_stride=a["fstride"], time_stride=a["tstride"], max_length=a["max_frames"],
               num_mel_bins=128, layer_norm_eps=1e-6)
    if small:
        geo.update(hidden_size=SMALL["dim"], num_hidden_layers=SMALL["depth"], num_attention_heads=SMALL["heads"],
                   intermediate_size=SMALL["mlp_dim"])
    geo.update(kw)
    return ASTConfig(**geo)


def randomise(model, seed, scale=0.08):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            base = 1.0 if "layernorm" in name and name.endswith("weight") else 0.0
            p.copy_(base + scale * torch.randn(p.shape, generator=g))
    return model.eval()


def small_encoder(card_name, state):
    """An Encoder with the card's geometry at the reduced width, loaded from ``state``."""
    card = get_card(card_name)
    card = dataclasses.replace(card, arch=dict(card.arch, **SMALL))
    net = A.ASTNet(**card.arch)
    net.load_state_dict(state, strict=True)
    return Encoder(card, KaldiFbank(**card.frontend), net).eval()


@pytest.fixture(scope="module")
def hf_small(tmp_path_factory):
    """A random transformers ASTModel (10x10, 1024 frames, 64-d, 12 blocks) and its save_pretrained folder."""
    model = randomise(ASTModel(hf_config(get_card("ast-audioset"))), seed=3)
    folder = tmp_path_factory.mktemp("hf_small")
    model.save_pretrained(folder)
    return model, folder


@pytest.fixture(scope="module")
def enc_small(hf_small):
    return small_encoder("ast-audioset", A.load_state(hf_small[1]))


def hf_layers(model, input_values, layers=(12,)):
    """transformers' outputs as our layers: each hidden state through the final norm; frames = patch
    tokens averaged over frequency; clip = (cls + dist) / 2."""
    cfg = model.config
    f0 = (cfg.num_mel_bins - 16) // cfg.frequency_stride + 1
    with torch.no_grad():
        out = model(input_values, output_hidden_states=True)
        res = {}
        for l in layers:
            h = model.layernorm(out.hidden_states[l])
            t0 = (h.shape[1] - 2) // f0
            res[l] = (h[:, 2:].reshape(h.shape[0], f0, t0, -1).mean(1), (h[:, 0] + h[:, 1]) / 2)
    if 12 in layers and len(out.hidden_states) == 13:
        assert torch.allclose(res[12][1], out.pooler_output, atol=1e-6)
    return res


# ---------------------------------------------------------------------------------------------
# front end
# ---------------------------------------------------------------------------------------------
def _compare_frontend(clips):
    fe = KaldiFbank(**get_card("ast-audioset").frontend)
    lengths = [len(c) for c in clips]
    wavs = torch.zeros(len(clips), max(lengths))
    for i, c in enumerate(clips):
        wavs[i, : len(c)] = torch.as_tensor(c)
    ours = fe(wavs, lengths)                                  # one batched call
    assert ours.shape == (len(clips), 128, fe.frames_for(max(lengths)))
    ref = hf_extractor(max_length=max(fe.frames_for(n) for n in lengths))(
        [np.asarray(c, dtype=np.float32) for c in clips], sampling_rate=16000, return_tensors="np")["input_values"]
    for i, n in enumerate(lengths):
        T = fe.frames_for(n)
        got = ((ours[i, :, :T] - MEAN) / (2 * STD)).T.numpy()
        assert rel_err(got, ref[i, :T]) < 1e-4, (i, n, rel_err(got, ref[i, :T]))


def test_fbank_equals_transformers_feature_extractor_on_synthetic_batch():
    g = np.random.default_rng(0)
    silent_start = np.zeros(16000, np.float32)
    silent_start[7000:] = 0.3 * g.standard_normal(9000)
    clips = [chirp(3.0), noise(1.3, seed=1).numpy() + 0.05,   # a DC offset
             0.5 * np.sin(2 * np.pi * 440 * np.arange(12345) / 16000).astype(np.float32),
             silent_start, noise(0.026, seed=2).numpy()]      # 416 samples: one frame
    _compare_frontend(clips)


def test_fbank_equals_transformers_feature_extractor_on_real_audio(shared_audio):
    import soundfile as sf

    from audio_repr.audio import resample

    names = ["cat-meow-44k.wav", "dog-bark-44k-stereo.wav", "fsdd/recordings/0_george_0.wav",
             "fsdd/recordings/7_jackson_12.wav"]
    clips = []
    for n in names:
        w, sr = sf.read(str(shared_audio / n), dtype="float32", always_2d=True)
        clips.append(resample(torch.from_numpy(w.mean(1)), sr, 16000).numpy())
    _compare_frontend(clips)


def test_fbank_geometry_and_kaldi_filters():
    fe = KaldiFbank(**get_card("ast-audioset").frontend)
    assert (fe.win_length, fe.hop_length, fe.fft_size, fe.frame_length) == (400, 160, 512, 400)
    assert fe.frames_for(399) == 0 and fe.frames_for(400) == 1 and fe.frames_for(160000) == 998
    assert fe.min_samples(1) == 400 and fe.frames_for(fe.min_samples(98)) == 98
    assert fe.frame_offset_ms == 12.5
    # windows on the prepared waveform equal the whole computation
    x = fe.edge_pad(noise(2.0, seed=4))
    whole = fe.window_frames(x[None], 0, fe.frames_for(len(x)))
    assert torch.allclose(fe.window_frames(x[None], 57, 150), whole[..., 57:150], atol=1e-6)
    fb = fe.fb
    assert fb.shape == (257, 128) and float(fb[-1].abs().max()) == 0.0 and float(fb.min()) >= 0.0


# ---------------------------------------------------------------------------------------------
# checkpoints: transformers folders, the original layout
# ---------------------------------------------------------------------------------------------
def _check_hidden_states(net, hf_model, x, tol=1e-4):
    with torch.no_grad():
        ref = hf_model(x, output_hidden_states=True)
        ours = net.hidden_states(x.transpose(1, 2))
    assert len(ours) == len(ref.hidden_states) == hf_model.config.num_hidden_layers + 1
    for i, (a, b) in enumerate(zip(ours, ref.hidden_states)):
        assert rel_err(a, b) < tol, (i, rel_err(a, b))
    with torch.no_grad():
        out = net(x.transpose(1, 2))
    last = f"block{hf_model.config.num_hidden_layers}"
    f0 = net.f_patches
    frames = ref.last_hidden_state[:, 2:].reshape(x.shape[0], f0, net.t_patches, -1).mean(1)
    assert rel_err(out[last], frames) < tol
    assert rel_err(out.clip[last], ref.pooler_output) < tol


def test_transformers_folder_loads_and_every_hidden_state_matches(hf_small):
    model, folder = hf_small
    net = A.ASTNet(**dict(get_card("ast-audioset").arch, **SMALL))
    net.load_state_dict(A.load_state(folder), strict=True)
    x = torch.randn(2, 1024, 128, generator=torch.Generator().manual_seed(0))
    _check_hidden_states(net.eval(), model, x)


def test_original_layout_checkpoint_loads_and_matches(hf_small, tmp_path):
    """A checkpoint as the original repository saves it (DataParallel ``module.v.*`` timm names, fused qkv,
    the mlp_head and DeiT heads), made from the transformers model's weights."""
    model, _ = hf_small
    sd = model.state_dict()
    D = model.config.hidden_size
    orig = {"module.v.cls_token": sd["embeddings.cls_token"],
            "module.v.dist_token": sd["embeddings.distillation_token"],
            "module.v.pos_embed": sd["embeddings.position_embeddings"],
            "module.v.patch_embed.proj.weight": sd["embeddings.patch_embeddings.projection.weight"],
            "module.v.patch_embed.proj.bias": sd["embeddings.patch_embeddings.projection.bias"],
            "module.v.norm.weight": sd["layernorm.weight"], "module.v.norm.bias": sd["layernorm.bias"],
            "module.v.head.weight": torch.zeros(1000, D), "module.v.head.bias": torch.zeros(1000),
            "module.v.head_dist.weight": torch.zeros(1000, D), "module.v.head_dist.bias": torch.zeros(1000),
            "module.mlp_head.0.weight": torch.ones(D), "module.mlp_head.0.bias": torch.zeros(D),
            "module.mlp_head.1.weight": torch.zeros(527, D), "module.mlp_head.1.bias": torch.zeros(527)}
    for i in range(model.config.num_hidden_layers):
        h, o = f"layers.{i}.", f"module.v.blocks.{i}."
        for kind in ("weight", "bias"):
            orig[o + "attn.qkv." + kind] = torch.cat([sd[h + f"attention.{p}_proj.{kind}"] for p in "qkv"])
            orig[o + "attn.proj." + kind] = sd[h + f"attention.o_proj.{kind}"]
            orig[o + "norm1." + kind] = sd[h + f"layernorm_before.{kind}"]
            orig[o + "norm2." + kind] = sd[h + f"layernorm_after.{kind}"]
            orig[o + "mlp.fc1." + kind] = sd[h + f"mlp.fc1.{kind}"]
            orig[o + "mlp.fc2." + kind] = sd[h + f"mlp.fc2.{kind}"]
    path = tmp_path / "audioset_10_10_0.4593.pth"
    torch.save(orig, path)
    state = A.load_state(path)
    net = A.ASTNet(**dict(get_card("ast-audioset").arch, **SMALL))
    net.load_state_dict(state, strict=True)
    assert all(torch.equal(state[k], v) for k, v in A.load_state(_folder(model, tmp_path)).items())
    x = torch.randn(1, 1024, 128, generator=torch.Generator().manual_seed(1))
    _check_hidden_states(net.eval(), model, x)
    # in-memory transformers 5 names (layers.N.attention.q_proj ...) convert the same
    mem = A.convert_state_dict(model.state_dict())
    assert mem.keys() == state.keys() and all(torch.equal(mem[k], state[k]) for k in mem)


def _folder(model, tmp_path):
    f = tmp_path / "saved"
    model.save_pretrained(f)
    return f


def test_real_size_transformers_classifier_folder_through_load(tmp_path):
    """The real default size (768-d, 12 blocks) and transformers' own configuration, saved by
    ASTForAudioClassification, loaded through audio_repr.load(weights=folder).

    transformers' port uses LayerNorm eps 1e-12 where the original (timm DeiT) and we use 1e-6: outputs
    differ by about eps / (2 var) of a token. The tokens here have the scale of a trained model's
    (cls/dist/positions ~ N(0, 0.5^2)); with tiny random ones (var ~ 1e-3) the difference reaches 1e-4."""
    cfg = ASTConfig(num_labels=5)                      # defaults: the AudioSet 10x10 geometry, eps 1e-12
    model = randomise(ASTForAudioClassification(cfg), seed=5, scale=0.03)
    emb = model.audio_spectrogram_transformer.embeddings
    g = torch.Generator().manual_seed(8)
    with torch.no_grad():
        for p in (emb.cls_token, emb.distillation_token, emb.position_embeddings):
            p.copy_(0.5 * torch.randn(p.shape, generator=g))
    model.save_pretrained(tmp_path / "ast")
    enc = audio_repr.load("ast-audioset", weights=tmp_path / "ast")
    assert enc.embedding_size == 768 and enc.layer_names == [f"block{i}" for i in range(1, 13)]
    x = noise(10.24, seed=9).numpy()
    iv = hf_extractor()(x, sampling_rate=16000, return_tensors="pt")["input_values"]
    ref = hf_layers(model.audio_spectrogram_transformer, iv, layers=range(1, 13))
    e = enc.embed(x, sr=16000, layers="all")         # every block, one pass
    assert e.frames.shape == (101, 12 * 768)
    for i in range(1, 13):                           # every hidden state (through the final norm)
        a, b = e.layer_slices[f"block{i}"]
        assert rel_err(e.frames[:, a:b], ref[i][0][0]) < 1e-4, i
        assert rel_err(e.clip[a:b], ref[i][1][0]) < 1e-4, i


def test_wrong_checkpoint_is_refused(hf_small):
    with pytest.raises(audio_repr.WeightsError, match="does not fit"):
        audio_repr.load("ast-audioset", weights=hf_small[1])            # 64-d into the 768-d model
    with pytest.raises(audio_repr.WeightsError, match="no model.safetensors"):
        A.load_state(hf_small[1].parent)


# ---------------------------------------------------------------------------------------------
# the encoder: equals transformers' pipeline, any length
# ---------------------------------------------------------------------------------------------
def test_embed_equals_transformers_pipeline_for_a_batch_of_short_clips(hf_small, enc_small):
    model, _ = hf_small
    clips = [noise(1.0, seed=11).numpy(), chirp(4.3), noise(10.24, seed=12).numpy(), noise(0.3, seed=13).numpy()]
    embs = enc_small.embed(clips, sr=16000, batch_size=3)
    fe = hf_extractor()
    for c, e in zip(clips, embs):
        iv = fe(c, sampling_rate=16000, return_tensors="pt")["input_values"]   # padded to 1024 frames
        frames, clip = hf_layers(model, iv)[12]
        T = enc_small.frontend.frames_for(len(c))
        n = math.ceil(T / 10)                          # one frame per patch starting inside the clip
        assert e.frames.shape == (min(n, 101), 64)
        assert rel_err(e.frames, frames[0, : e.frames.shape[0]]) < 1e-4
        assert rel_err(e.clip, clip[0]) < 1e-4
        # centre of each 16-frame patch: 12.5 ms + 10 ms x (10 i + 7.5)
        assert torch.allclose(e.timestamps_ms, 87.5 + 100.0 * torch.arange(len(e.frames), dtype=torch.float64))
        if len(c) < 50000:                             # fan-in 1214 (tokens of a window), depth 74
            alone = enc_small.embed(c, sr=16000)
            assert_same_arithmetic(e.frames, alone.frames, *accumulations(enc_small), what="frames")
            assert_same_arithmetic(e.clip, alone.clip, *accumulations(enc_small), what="clip")


def test_fusion_is_blocks_5_and_12_through_the_final_norm(hf_small, enc_small):
    model, _ = hf_small
    x = noise(3.0, seed=14).numpy()
    e = enc_small.embed(x, sr=16000, layers="fusion")
    assert e.layers == ["block5", "block12"] and e.frames.shape[1] == 128 == enc_small.output_size("fusion")
    iv = hf_extractor()(x, sampling_rate=16000, return_tensors="pt")["input_values"]
    ref = hf_layers(model, iv, layers=(5, 12))
    n = e.frames.shape[0]
    assert rel_err(e.frames, torch.cat([ref[5][0][0, :n], ref[12][0][0, :n]], dim=1)) < 1e-4
    assert rel_err(e.clip, torch.cat([ref[5][1][0], ref[12][1][0]])) < 1e-4
    assert e.layer_slices == {"block5": (0, 64), "block12": (64, 128)}


def _hf_windows(model, wav, hop=1010, window=1024):
    """Reference for long audio: the whole fbank (HF extractor, padded with fbank 0), cut into windows of
    1024 frames every 1010 frames, each run through transformers; patches stitched; clip weighted."""
    T = 1 + (len(wav) - 400) // 160
    K = 1 if T <= window else 1 + math.ceil((T - window) / hop)
    iv = hf_extractor(max_length=hop * (K - 1) + window)(wav, sampling_rate=16000, return_tensors="pt")["input_values"]
    frames, clips, weights = [], [], []
    for k in range(K):
        f, c = hf_layers(model, iv[:, k * hop: k * hop + window])[12]
        frames.append(f[0])
        clips.append(c[0])
        weights.append(hop if k < K - 1 else T - k * hop)
    n = math.ceil(T / 10)
    w = torch.tensor(weights, dtype=torch.float32)
    return torch.cat(frames)[:n], (torch.stack(clips) * (w / w.sum())[:, None]).sum(0), K


def test_long_audio_is_windowed_stitched_and_pooled_never_interpolated(hf_small, enc_small):
    model, _ = hf_small
    long_wav, short_wav = noise(25.3, seed=15).numpy(), noise(2.0, seed=16).numpy()
    e_long, e_short = enc_small.embed([long_wav, short_wav], sr=16000, batch_size=2)
    frames, clip, K = _hf_windows(model, long_wav)
    T = enc_small.frontend.frames_for(len(long_wav))
    assert K == 3 and e_long.frames.shape == (math.ceil(T / 10), 64) == frames.shape
    assert rel_err(e_long.frames, frames) < 1e-4 and rel_err(e_long.clip, clip) < 1e-4
    # one regular grid across window boundaries: window k's patches start at 1010 k + 10 i
    assert torch.allclose(e_long.timestamps_ms, 87.5 + 100.0 * torch.arange(len(frames), dtype=torch.float64))
    # the differentiable path windows the same way inside the network
    wav = torch.from_numpy(long_wav)
    with torch.no_grad():
        outs = enc_small(wav[None])
    acc = accumulations(enc_small, "block12")
    assert_same_arithmetic(outs["block12"][0], e_long.frames, *acc, what="forward frames")
    assert_same_arithmetic(outs.clip["block12"][0], e_long.clip, *acc, what="forward clip")
    # 10.24 s (1022 frames) is one window, as transformers; 10.25 s needs a second
    assert A.ASTNet(**dict(get_card("ast-audioset").arch, **SMALL)).n_windows(1024) == 1
    assert enc_small.network.out_frames(1025) == 103 and enc_small.network.in_frames(1025) == 2034
    # a clip alone equals the clip in the batch
    alone = enc_small.embed(short_wav, sr=16000)
    assert_same_arithmetic(e_short.frames, alone.frames, *acc, what="alone frames")
    assert_same_arithmetic(e_short.clip, alone.clip, *acc, what="alone clip")


def test_crop_option_centre_crops_the_positional_embedding(hf_small):
    """ast-audioset-crop: a window of n frames gets ceil(n / 10) patches, completed with fbank 0, and the
    centre columns of the 12 x 101 positional grid (the original's shorter-input recipe)."""
    model, folder = hf_small
    enc = small_encoder("ast-audioset-crop", A.load_state(folder))
    clips = [noise(5.0, seed=17).numpy(), noise(1.0, seed=18).numpy(), noise(10.6, seed=19).numpy()]
    embs = enc.embed(clips, sr=16000, batch_size=3)
    pos = model.embeddings.position_embeddings.detach()
    grid = pos[0, 2:].reshape(12, 101, -1)
    for c, e in zip(clips[:2], embs[:2]):
        T = enc.frontend.frames_for(len(c))
        t = math.ceil(T / 10)
        length = 10 * (t - 1) + 16
        crop = grid[:, 50 - t // 2: 50 - t // 2 + t].reshape(12 * t, -1)
        ref_model = ASTModel(hf_config(get_card("ast-audioset"), max_length=length)).eval()
        sd = dict(model.state_dict(), **{"embeddings.position_embeddings": torch.cat([pos[:, :2], crop[None]], 1)})
        ref_model.load_state_dict(sd)
        iv = hf_extractor(max_length=length)(c, sampling_rate=16000, return_tensors="pt")["input_values"]
        frames, clip = hf_layers(ref_model, iv)[12]
        assert e.frames.shape == (t, 64)
        assert rel_err(e.frames, frames[0]) < 1e-4 and rel_err(e.clip, clip[0]) < 1e-4
    alone = enc.embed(clips[1], sr=16000)              # masked attention: batch == alone
    assert_same_arithmetic(embs[1].frames, alone.frames, *accumulations(enc), what="crop frames")
    assert_same_arithmetic(embs[1].clip, alone.clip, *accumulations(enc), what="crop clip")
    # 10.6 s: a full 1024-frame window, then a cropped one
    T = enc.frontend.frames_for(len(clips[2]))
    assert embs[2].frames.shape == (math.ceil(T / 10), 64)
    full = hf_layers(model, hf_extractor()(clips[2], sampling_rate=16000, return_tensors="pt")["input_values"])[12][0]
    assert rel_err(embs[2].frames[:101], full[0]) < 1e-4


@pytest.mark.parametrize("name", ["ast-audioset-12-12", "ast-audioset-14-14", "ast-audioset-16-16",
                                  "ast-speechcommands"])
def test_other_geometries(name, tmp_path):
    card = get_card(name)
    model = randomise(ASTModel(hf_config(card, num_hidden_layers=2)), seed=6)
    model.save_pretrained(tmp_path)
    net = A.ASTNet(**dict(card.arch, **dict(SMALL, depth=2)))
    net.load_state_dict(A.load_state(tmp_path), strict=True)
    W = card.arch["max_frames"]
    _check_hidden_states(net.eval(), model, torch.randn(1, W, 128, generator=torch.Generator().manual_seed(2)))
    s = card.arch["tstride"]
    t0 = (W - 16) // s + 1
    tiling = net.tiling                                  # the network states its own windows
    assert tiling.chunk_frames == t0 * s and tiling.chunk_frames + tiling.overlap_frames == W
    n = card.normalisation
    assert n.std == pytest.approx(5.5654526 if "speech" in name else STD) and n.scale == 2.0
    assert n.divisor == pytest.approx(2 * n.std)
    assert net.out_frames(3 * W) == math.ceil(3 * W / s)


def _small_speechcommands(tmp_path, seed):
    """A 2-block transformers AST with ast-speechcommands' geometry (saved in tmp_path) and our encoder of it."""
    card = get_card("ast-speechcommands")
    model = randomise(ASTModel(hf_config(card, num_hidden_layers=2)), seed=seed)
    model.save_pretrained(tmp_path)
    card = dataclasses.replace(card, arch=dict(card.arch, **dict(SMALL, depth=2)),
                               default_layer="block2", fusion_layers=("block2",))
    net = A.ASTNet(**card.arch)
    net.load_state_dict(A.load_state(tmp_path), strict=True)
    enc = Encoder(card, KaldiFbank(**card.frontend), net).eval()
    return model, enc


def test_speechcommands_windows_of_128_frames(tmp_path):
    model, enc = _small_speechcommands(tmp_path, seed=7)
    wav = noise(1.0, seed=20).numpy()
    e = enc.embed(wav, sr=16000)
    fe = hf_extractor(max_length=128, mean=-6.845978, std=5.5654526)
    frames, clip = hf_layers(model, fe(wav, sampling_rate=16000, return_tensors="pt")["input_values"], layers=(2,))[2]
    assert e.frames.shape == (10, 64)                  # 98 frames -> 10 patches
    assert rel_err(e.frames, frames[0, :10]) < 1e-4 and rel_err(e.clip, clip[0]) < 1e-4
    long = enc.embed(noise(3.0, seed=21).numpy(), sr=16000)
    assert long.frames.shape == (30, 64)               # 298 frames: windows at 0, 120, 240


def test_cards_manifest_and_offline_message():
    names = audio_repr.list_models("ast")
    assert names == ["ast-audioset", "ast-audioset-12-12", "ast-audioset-14-14", "ast-audioset-16-16",
                     "ast-audioset-crop", "ast-speechcommands"]
    from audio_repr import weights as W

    for n in names:
        entry = W.manifest_entry(n)
        assert entry["hf_repo"].startswith("MIT/ast-finetuned-") and entry["licence"].startswith("BSD-3-Clause")
        net = audio_repr.load(n, pretrained=False).network
        assert net.clip_pooling == "token" and net.tiling.pad_value == 0.0 and net.tiling.independent_windows
    assert W.manifest_entry("ast-audioset")["hf_filename"] == "model.safetensors"
    with pytest.raises(audio_repr.WeightsNotFoundError, match="MIT/ast-finetuned-audioset-10-10-0.4593"):
        audio_repr.load("ast-audioset")


def test_random_init_dtype_and_calibrate():
    enc = audio_repr.load("ast-speechcommands", pretrained=False)     # full size, 128-frame windows
    with pytest.raises(audio_repr.AudioError, match="needs at least 25 ms"):
        enc.embed(torch.zeros(300), sr=16000)                          # under one 25 ms frame
    assert enc.frame_hop_ms() == 100.0
    x = noise(1.5, seed=22)
    e32 = enc.embed(x, sr=16000)
    assert e32.frames.shape == (15, 768) and e32.clip.shape == (768,)
    enc16 = audio_repr.load("ast-speechcommands", pretrained=False, dtype=torch.bfloat16)
    enc16.network.load_state_dict(enc.network.state_dict())
    e16 = enc16.embed(x, sr=16000)
    assert e16.frames.dtype == torch.float32
    assert torch.nn.functional.cosine_similarity(e16.clip, e32.clip, dim=0) > 0.99
    mean, std = enc.calibrate([x], sr=16000)
    feats = enc._features(x).double()
    assert mean == pytest.approx(float(feats.mean())) and enc.norm_stats[1] == pytest.approx(std)


def test_calibrate_keeps_the_two_sigma_recipe(tmp_path):
    """calibrate() sets the statistics, not the recipe: AST still normalises by 2 std, as the transformers
    feature extractor does with the same mean and std (before, calibrate() stored the plain std as the
    divisor, so AST divided by one std)."""
    model, enc = _small_speechcommands(tmp_path, seed=8)
    train = [noise(1.0, seed=s).numpy() * (1 + s) for s in range(3)]
    mean, std = enc.calibrate(train, sr=16000)
    assert enc.norm_stats == (mean, std) and enc.normalisation.divisor == pytest.approx(2 * std)
    wav = noise(1.0, seed=30).numpy()
    e = enc.embed(wav, sr=16000)
    fe = hf_extractor(max_length=128, mean=mean, std=std)
    frames, clip = hf_layers(model, fe(wav, sampling_rate=16000, return_tensors="pt")["input_values"], layers=(2,))[2]
    assert rel_err(e.frames, frames[0, :10]) < 1e-4 and rel_err(e.clip, clip[0]) < 1e-4
