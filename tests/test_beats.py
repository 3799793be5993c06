"""BEATs against the original code (tests/reference_beats.py, a faithful copy of microsoft/unilm ``beats/``) on
seeded random weights saved in the original checkpoint layout, and the shared gated relative-position layers
(audio_repr/layers/relpos.py) against both of their originals: BEATs' and transformers' WavLM."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from audio_repr.layers.relpos import RelPosEncoderLayer, deep_norm_alpha, relative_position_bucket  # noqa: E402
from conftest import rel_err  # noqa: E402
from reference_beats import random_model  # noqa: E402

#: a small BEATs (2 layers, 64-d patches, 96-d transformer): every switch of the real configuration on
SMALL = dict(input_patch_size=16, embed_dim=64, conv_bias=False, encoder_layers=2, encoder_embed_dim=96,
             encoder_ffn_embed_dim=192, encoder_attention_heads=4, activation_fn="gelu", layer_norm_first=False,
             deep_norm=True, conv_pos=16, conv_pos_groups=4, relative_position_embedding=True, num_buckets=320,
             max_distance=800, gru_rel_pos=True, finetuned_model=False, dropout=0.0, attention_dropout=0.0,
             encoder_layerdrop=0.05, layer_wise_gradient_decay_ratio=0.6)


# ---------------------------------------------------------------------------------------------------------------
# layers/relpos.py
# ---------------------------------------------------------------------------------------------------------------
def test_buckets_are_the_originals_at_every_distance():
    ref = random_model(SMALL).encoder.layers[0].self_attn
    rel = torch.arange(-5000, 5001)
    for buckets, distance in ((320, 800), (32, 128), (64, 1280)):
        ref.num_buckets, ref.max_distance = buckets, distance
        assert torch.equal(relative_position_bucket(rel, buckets, distance), ref._relative_positions_bucket(rel))
    b = relative_position_bucket(rel, 320, 800)
    assert b.min() == 0 and b.max() == 319 and b[5000] == 0 and b[4999] == 1 and b[5001] == 161  # d = 0, -1, +1


def _our_layers(n, dim, ffn, heads, **kw):
    return torch.nn.ModuleList([RelPosEncoderLayer(dim, ffn, heads, has_relative_attention_bias=i == 0, **kw)
                                for i in range(n)]).eval()


def test_beats_layers_equal_the_original_with_a_padding_mask():
    """Deep norm, GRU gate on the query projection, layer 0's bias reused: the original layer stack (its
    state dict, the shared embedding repeated under every layer, loads after dropping the repeats)."""
    ref = random_model(SMALL, seed=1)
    ours = _our_layers(2, 96, 192, 4, deep_norm_alpha=deep_norm_alpha(2), gru_rel_pos=True, gate_source="query")
    state = {k[len("encoder.layers."):]: v for k, v in ref.state_dict().items() if k.startswith("encoder.layers.")}
    state = {k: v for k, v in state.items() if k.startswith("0.") or "relative_attention_bias" not in k}
    ours.load_state_dict(state, strict=True)
    x = torch.randn(3, 70, 96, generator=torch.Generator().manual_seed(0))
    pad = torch.zeros(3, 70, dtype=torch.bool)
    pad[1, 41:] = True
    with torch.no_grad():
        h, pb = x.transpose(0, 1), None
        for layer in ref.encoder.layers:
            h, _, pb = layer(h, self_attn_padding_mask=pad, pos_bias=pb)
        y, pb = x, None
        for layer in ours:
            y, pb = layer(y, pad, pb)
    want = h.transpose(0, 1)
    assert rel_err(y[~pad], want[~pad]) < 1e-5
    assert pb.shape == (4, 70, 70)


@pytest.mark.parametrize("stable", [False, True])
def test_wavlm_layers_equal_transformers(stable):
    """The same layers in WavLM's form: the gate on the layer's input, post-norm (Base) or pre-norm (Large)."""
    tr = pytest.importorskip("transformers")
    from transformers.models.wavlm import modeling_wavlm as W

    cfg = tr.WavLMConfig(hidden_size=64, num_attention_heads=4, intermediate_size=128, num_buckets=320,
                         max_bucket_distance=800, hidden_act="gelu", do_stable_layer_norm=stable)
    Layer = W.WavLMEncoderLayerStableLayerNorm if stable else W.WavLMEncoderLayer
    torch.manual_seed(2)
    hf = torch.nn.ModuleList([Layer(cfg, has_relative_position_bias=i == 0) for i in range(3)]).eval()
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    ours = _our_layers(3, 64, 128, 4, layer_norm_first=stable, gru_rel_pos=True, gate_source="input")
    names = {"attention.rel_attn_embed": "self_attn.relative_attention_bias", "attention.gru_rel_pos_linear":
             "self_attn.grep_linear", "attention.gru_rel_pos_const": "self_attn.grep_a", "attention.": "self_attn.",
             "layer_norm": "self_attn_layer_norm", "feed_forward.intermediate_dense": "fc1",
             "feed_forward.output_dense": "fc2", "final_self_attn_layer_norm": "final_layer_norm"}
    state = {}
    for k, v in hf.state_dict().items():
        for a, b in names.items():
            k = k.replace(a, b)
        state[k] = v
    ours.load_state_dict(state, strict=True)
    x = torch.randn(2, 50, 64, generator=g)
    mask = torch.ones(2, 50, dtype=torch.long)
    mask[0, 33:] = 0
    with torch.no_grad():
        h, pb = x, None
        for i, layer in enumerate(hf):
            h, pb = layer(h, attention_mask=mask, position_bias=pb, index=i)
        y, pb = x, None
        for layer in ours:
            y, pb = layer(y, mask == 0, pb)
    keep = mask.bool()
    assert rel_err(y[keep], h[keep]) < 1e-5


# ---------------------------------------------------------------------------------------------------------------
# the family against the original
# ---------------------------------------------------------------------------------------------------------------
import dataclasses  # noqa: E402
import random  # noqa: E402

import numpy as np  # noqa: E402

import audio_repr  # noqa: E402
from audio_repr import Encoder  # noqa: E402
from audio_repr.inference.tagging import label_ids, label_names  # noqa: E402
from audio_repr.models import beats as B  # noqa: E402
from audio_repr.models import layer_table  # noqa: E402
from audio_repr.registry import get_card  # noqa: E402
from audio_repr.weights import WeightsError, manifest_entry  # noqa: E402
from conftest import accumulations, assert_same_arithmetic, chirp, noise  # noqa: E402
from reference_beats import checkpoint, kaldi_fbank  # noqa: E402

TOL = 1e-4            # the fidelity bound (relative to the largest magnitude)


def small_encoder(path, name="beats-iter3"):
    """An Encoder with ``name``'s card at the architecture of the checkpoint ``path`` (read from its cfg)."""
    ck = torch.load(path, weights_only=True)
    card = get_card(name)
    card = dataclasses.replace(card, arch=dict(card.arch, **B.arch_from_cfg(ck["cfg"])))
    net = B.BEATsNet(**card.arch)
    net.load_state_dict(B.load_state(path), strict=True)
    return Encoder(card, B.BEATsFbank(**card.frontend), net).eval()


def _hear_checkpoint(folder, name):
    """Random weights of ``name``'s released configuration in BEATs' checkpoint layout (for tests/test_hear.py)."""
    card = get_card(name)
    cfg = {k: v for k, v in card.arch.items() if k in B.CFG_DEFAULTS}
    path = folder / "BEATs_iter3.pt"
    checkpoint(random_model(cfg, seed=3), path)
    return path


#: tests/test_hear.py's maker for this family: one model, random weights in the original layout
HEAR_CHECKPOINT = ("beats-iter3", _hear_checkpoint)


@pytest.fixture(scope="module")
def ssl(tmp_path_factory):
    path = tmp_path_factory.mktemp("beats") / "BEATs_small.pt"
    ref = random_model(SMALL, seed=5)
    checkpoint(ref, path)
    return ref, small_encoder(path), path


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    """A fine-tuned checkpoint whose label_dict maps the predictor's outputs to AudioSet ids in a shuffled order."""
    path = tmp_path_factory.mktemp("beats_ft") / "BEATs_small_ft.pt"
    ref = random_model(dict(SMALL, finetuned_model=True, predictor_class=527), seed=6)
    perm = list(range(527))
    random.Random(0).shuffle(perm)
    mids = label_ids("audioset")
    labels = {i: mids[perm[i]] for i in range(527)}
    checkpoint(ref, path, label_dict=labels)
    return ref, small_encoder(path, "beats-iter3-plus-as2m-ft"), labels


def _clips():
    g = torch.Generator().manual_seed(11)
    c = [0.1 * torch.randn(int(1.37 * 16000), generator=g), torch.from_numpy(chirp(4.02)),
         0.05 * torch.randn(int(9.9 * 16000), generator=g)]
    c[1][20000:30000] = 0.0                    # digital silence inside a clip: the fbank's eps floor
    return c


def _ref_layers(ref, wav):
    """The original on one clip alone (no padding): every hidden state as frames [T', D] and clip vectors."""
    with torch.no_grad():
        out, _, hidden = ref.extract_features(wav[None], padding_mask=None, layers=True)
    frames, clips = [], []
    for h in hidden:
        t = h[0]
        frames.append(t.reshape(-1, 8, t.shape[-1]).mean(1))
        clips.append(t.mean(0))
    assert torch.equal(hidden[-1], out)
    return frames, clips


def test_fbank_is_the_originals_batched():
    fe = B.BEATsFbank(**B.FRONTEND)
    clips = _clips()
    lens = [len(c) for c in clips]
    wavs = torch.zeros(len(clips), max(lens))
    for i, c in enumerate(clips):
        wavs[i, : len(c)] = c
    ours = fe(wavs, lens)                                          # one batched call, no per-clip loop
    for i, c in enumerate(clips):
        ref = kaldi_fbank(c[None] * 2 ** 15)
        T = fe.frames_for(len(c))
        assert ref.shape == (T, 128)
        got = ours[i, :, :T].T
        assert rel_err((got - B.FBANK_MEAN) / (2 * B.FBANK_STD), (ref - B.FBANK_MEAN) / (2 * B.FBANK_STD)) < 1e-5
    # silence is floored at log(float32 eps) of the 16-bit-scaled waveform, as the original (not eps of [-1, 1])
    assert float(ours[1, :, 130:180].min()) == pytest.approx(float(np.log(np.finfo(np.float32).eps)), abs=1e-6)


def test_every_layer_equals_the_original_in_a_batch(ssl):
    ref, enc, _ = ssl
    clips = _clips()
    embs = enc.embed(clips, sr=16000, layers="all", batch_size=3)
    for wav, e in zip(clips, embs):
        frames, clip_vecs = _ref_layers(ref, wav)
        assert e.layers == ["patch_embed", "block1", "block2"]
        for name, f, c in zip(e.layers, frames, clip_vecs):
            assert e.layer(name).shape == f.shape
            assert rel_err(e.layer(name), f) < TOL, name
            d0, d1 = e.layer_slices[name]
            assert rel_err(e.clip[d0:d1], c) < TOL, name
        n = frames[0].shape[0]                     # one frame per whole 16-frame patch, at the patch centre
        assert np.allclose(e.timestamps_ms.numpy(), 12.5 + 10 * (16 * np.arange(n) + 7.5))


def test_fine_tuned_logits_and_tags_are_the_originals(finetuned):
    ref, enc, labels = finetuned
    clips = _clips()
    embs = enc.embed(clips, sr=16000, layers=["logits"], batch_size=3)
    tags = enc.tag(clips, sr=16000, top_k=5)
    mids, names = label_ids("audioset"), label_names("audioset")
    order = torch.tensor([{m: i for i, m in labels.items()}[mid] for mid in mids])   # csv class -> predictor row
    for wav, e, t in zip(clips, embs, tags):
        with torch.no_grad():
            lprobs, _ = ref.extract_features(wav[None])
        lprobs = lprobs[0][order]                   # the original's probabilities in the csv's class order
        assert rel_err(torch.sigmoid(e.clip), lprobs) < TOL
        assert rel_err(t.probabilities, lprobs) < TOL and t.windows == 1
        top = torch.topk(lprobs, 5).indices.tolist()
        assert t.labels == [names[j] for j in top]
        assert [labels[int(order[j])] for j in top] == [mids[j] for j in top]


def test_a_clip_alone_equals_it_in_a_batch_with_a_ten_times_longer_clip(ssl, finetuned):
    """unilm #1427: ours is batch-invariant; the original's padded batch (its padding mask) is not."""
    ref, enc, _ = ssl
    short, long_ = noise(0.95, seed=1), noise(9.5, seed=2)
    alone = enc.embed(short, sr=16000, layers="all")
    both = enc.embed([short, long_], sr=16000, layers="all", batch_size=2)
    fan_in, depth = accumulations(enc)
    assert both[0].frames.shape == alone.frames.shape
    assert_same_arithmetic(both[0].frames, alone.frames, fan_in, depth, what="frames")
    assert_same_arithmetic(both[0].clip, alone.clip, fan_in, depth, what="clip")
    fref, fenc, _ = finetuned
    a = fenc.tag(short, sr=16000).probabilities
    b = fenc.tag([short, long_], sr=16000)[0].probabilities
    assert_same_arithmetic(b, a, *accumulations(fenc), what="tag probabilities")
    # the original, as its README batches: zero-padded waveforms and a sample padding mask
    wavs = torch.zeros(2, len(long_))
    wavs[0, : len(short)], wavs[1] = short, long_
    mask = torch.zeros(2, len(long_), dtype=torch.bool)
    mask[0, len(short):] = True
    with torch.no_grad():
        solo, _ = ref.extract_features(short[None])
        batched, _ = ref.extract_features(wavs, padding_mask=mask)
        p_solo, _ = fref.extract_features(short[None])
        p_batched, _ = fref.extract_features(wavs, padding_mask=mask)
    n = solo.shape[1]
    assert rel_err(batched[0, :n], solo[0]) > 1e-2          # the original's batch changes the short clip
    assert rel_err(p_batched[0], p_solo[0]) > 1e-4
    assert rel_err(both[0].layer("block2"), solo[0].reshape(-1, 8, 96).mean(1)) < TOL     # ours: its alone numbers


def test_long_audio_runs_in_windows_of_62_patches(ssl):
    """Whole up to 62 time patches (10 s of AudioSet); longer: consecutive 62-patch windows, each as the original
    runs a clip of that length alone, stitched; clip = the mean of every token; timestamps on the whole clip's grid."""
    ref, enc, _ = ssl
    wav = noise(25.3, seed=7)
    e = enc.embed(wav, sr=16000, layers="all")
    T = enc.frontend.frames_for(len(wav))
    assert e.frames.shape[0] == T // 16 == 158
    assert np.allclose(e.timestamps_ms.numpy(), 12.5 + 10 * (16 * np.arange(158) + 7.5), rtol=0, atol=1e-9)
    fb = (kaldi_fbank(wav[None] * 2 ** 15) - B.FBANK_MEAN) / (2 * B.FBANK_STD)
    want = {n: [] for n in e.layers}
    tokens = {n: [] for n in e.layers}
    for a, b in ((0, 992), (992, 1984), (1984, T)):                      # 62 + 62 + 34 patches
        with torch.no_grad():
            _, _, hidden = ref.extract_features(None, fbank=fb[None, a:b], layers=True)
        for n, h in zip(e.layers, hidden):
            want[n].append(h[0].reshape(-1, 8, h.shape[-1]).mean(1))
            tokens[n].append(h[0])
    for n in e.layers:
        assert rel_err(e.layer(n), torch.cat(want[n])) < TOL, n
        d0, d1 = e.layer_slices[n]
        assert rel_err(e.clip[d0:d1], torch.cat(tokens[n]).mean(0)) < TOL, n
    # the bare network windows the same way (Encoder.forward)
    with torch.no_grad():
        outs = enc(wav[None])
    assert rel_err(outs["block2"][0], e.layer("block2")) < TOL
    # a clip of up to 62 patches (+15 frames) runs whole: 10.05 s = 1003 frames = 62 patches, one window
    assert enc.tiling.chunk_frames == 992 and enc.tiling.overlap_frames == 15


CFG_VARIANTS = {
    "no-deep-norm": dict(deep_norm=False),
    "pre-norm": dict(deep_norm=False, layer_norm_first=True),
    "no-gate": dict(gru_rel_pos=False),
    "no-relative-positions": dict(relative_position_embedding=False, gru_rel_pos=False),
    "few-buckets": dict(num_buckets=16, max_distance=40),
    "conv-pos-odd-kernel": dict(conv_pos=7, conv_pos_groups=2),
    "three-layers-relu-128": dict(encoder_layers=3, encoder_embed_dim=128, encoder_ffn_embed_dim=256,
                                  activation_fn="relu", embed_dim=128),
    "conv-bias-8-heads": dict(conv_bias=True, encoder_attention_heads=8),
}


@pytest.mark.parametrize("variant", sorted(CFG_VARIANTS))
def test_the_loader_honours_the_cfg(variant, tmp_path):
    cfg = dict(SMALL, **CFG_VARIANTS[variant])
    ref = random_model(cfg, seed=8)
    checkpoint(ref, tmp_path / "v.pt")
    net = B.BEATsNet.from_cfg(torch.load(tmp_path / "v.pt", weights_only=True)["cfg"]).eval()
    net.load_state_dict(B.load_state(tmp_path / "v.pt"), strict=True)
    fb = torch.randn(2, 700, 128, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        _, _, hidden = ref.extract_features(None, fbank=fb, layers=True)
        x, _ = ref.extract_features(None, fbank=fb)        # its output (pre-norm: after the final LayerNorm)
        outs = net(fb.transpose(1, 2), torch.tensor([700, 700]))
    hidden[-1] = x
    for i, name in enumerate(net.layer_dims):
        assert rel_err(outs[name], hidden[i].reshape(2, 43, 8, -1).mean(2)) < TOL, name
    # the same weights under another architecture are refused, naming what differs
    other = B.BEATsNet(**dict(B.arch_from_cfg(cfg), max_distance=cfg["max_distance"] + 1))
    with pytest.raises(WeightsError, match=f"max_distance={cfg['max_distance']} "):
        other.load_state_dict(B.load_state(tmp_path / "v.pt"))


def test_cfg_defaults_are_the_originals_and_bad_checkpoints_are_refused(tmp_path, ssl):
    from reference_beats import BEATsConfig

    original = BEATsConfig().__dict__
    assert B.arch_from_cfg({}) == {k: original[k] for k in B.CFG_DEFAULTS}
    # a released-style cfg without max_distance means the original's default, 1280
    assert B.arch_from_cfg({"num_buckets": 320})["max_distance"] == 1280
    _, _, path = ssl
    ck = torch.load(path, weights_only=True)
    torch.save(ck["model"], tmp_path / "bare.pt")
    with pytest.raises(WeightsError, match="'cfg'"):
        B.load_state(tmp_path / "bare.pt")
    torch.save({"cfg": ck["cfg"], "model": {"quantize.embedding.weight": torch.zeros(3, 3)}}, tmp_path / "tok.pt")
    with pytest.raises(WeightsError, match="not a BEATs checkpoint"):
        B.load_state(tmp_path / "tok.pt")
    with pytest.raises(WeightsError, match="glu"):
        B.arch_from_cfg(dict(ck["cfg"], activation_fn="glu"))
    # the architecture survives a cast of the network (an int64 buffer: 527 is not a bfloat16 number)
    net = B.BEATsNet.from_cfg(dict(ck["cfg"], finetuned_model=True)).to(torch.bfloat16)
    assert net.cfg.dtype == torch.int64 and B.cfg_from_tensor(net.cfg) == net.arch
    # the full-size models refuse the small checkpoint with the file's name
    with pytest.raises(WeightsError, match="does not fit"):
        audio_repr.load("beats-iter3", weights=path)


def test_full_size_layer_table_and_shapes_on_the_meta_device():
    """The released configuration: our parameter table equals the original model's state dict (its shared
    relative-position embedding once), built on the meta device."""
    from reference_beats import BEATs, BEATsConfig

    for name, ft in (("beats-iter3", False), ("beats-iter3-plus-as2m", False), ("beats-iter3-plus-as2m-ft", True)):
        card = get_card(name)
        table = layer_table(name)
        assert list(table) == ["patch_embed"] + [f"block{i}" for i in range(1, 13)] + (["logits"] if ft else [])
        assert set(table.values()) == ({768, 527} if ft else {768}) and table.get("logits", 527) == 527
        with torch.device("meta"):
            ours = B.BEATsNet(**card.arch)
        cfg = {k: v for k, v in card.arch.items() if k in B.CFG_DEFAULTS}
        with torch.device("meta"), pytest.MonkeyPatch.context() as mp:
            import reference_beats

            mp.setattr(reference_beats, "init_bert_params", lambda m: None)   # its init copies via the CPU
            mp.setattr(torch.nn.init, "xavier_normal_", lambda t, gain=1.0: t)
            ref = BEATs(BEATsConfig(cfg))
        with torch.device("meta"):
            want = B.convert_checkpoint({"cfg": cfg, "model": ref.state_dict()})
        got = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
        assert got == {k: tuple(v.shape) for k, v in want.items()}
        n_params = sum(v.numel() for k, v in ours.state_dict().items() if k != "cfg")
        assert 90e6 < n_params < 91e6 if not ft else 90e6 < n_params < 91.1e6       # the paper's 90M
        assert ours.window_patches * 8 <= card.arch["max_distance"]            # a window's tokens within the buckets


def test_cards_and_manifest():
    for name in ("beats-iter3", "beats-iter3-plus-as2m", "beats-iter3-plus-as2m-ft"):
        card = get_card(name)
        e = manifest_entry(name)
        assert e["url"].startswith("https://valle.blob.core.windows.net/share/BEATs/" + card.weights + "?")
        assert e["readme_url"].startswith("https://1drv.ms/") and "403" in e["note"] and e["sha256"] is None
        assert "403" in card.description and "weights=" in card.description
        assert card.normalisation.mean == 15.41663 and card.normalisation.divisor == pytest.approx(2 * 6.55582)
        assert card.licence.startswith("MIT") and card.published
        assert (card.labels == "audioset") == name.endswith("-ft")
        assert card.fusion_layers == ("block7", "block12") and card.default_layer == "block12"


def test_real_recordings_equal_the_original(shared_audio, ssl, finetuned):
    """Two recordings (resampled to 16 kHz once, the same samples for both sides), in one batch."""
    ref, enc, _ = ssl
    fref, fenc, labels = finetuned
    wavs = [audio_repr.load_audio(shared_audio / n, sr=16000)[0] for n in ("cat-meow-44k.wav", "dog-bark-44k-stereo.wav")]
    embs = enc.embed(wavs, sr=16000, layers="all", batch_size=2)
    tags = fenc.tag(wavs, sr=16000)
    order = torch.tensor([{m: i for i, m in labels.items()}[mid] for mid in label_ids("audioset")])
    for wav, e, t in zip(wavs, embs, tags):
        frames, clip_vecs = _ref_layers(ref, wav)
        for name, f, c in zip(e.layers, frames, clip_vecs):
            d0, d1 = e.layer_slices[name]
            assert rel_err(e.layer(name), f) < TOL and rel_err(e.clip[d0:d1], c) < TOL, name
        with torch.no_grad():
            lprobs = fref.extract_features(wav[None])[0][0][order]
        assert rel_err(t.probabilities, lprobs) < TOL
