"""The wav2vec 2.0 family (wav2vec2, HuBERT, data2vec-audio, WavLM) against transformers on random weights.

Each variant is a small random transformers model (the real conv geometry: 400-sample frames every 320 samples;
reduced widths) saved with ``save_pretrained`` and read back by the library: every hidden state equals
transformers' (1e-4 of the output scale), a clip equals itself in a padded batch next to a ten-times-longer one
(to float32 reordering: conftest's bound), where transformers' own padded GroupNorm models do not; the
checkpoint layouts of the Hub (task prefixes, legacy weight-norm names, .bin); long audio in pieces; the large
models' layer tables on the meta device. transformers is a test-only dependency.
"""

import dataclasses
import warnings

import numpy as np
import pytest
import torch

import audio_repr
import audio_repr.inference.loader
from audio_repr import Encoder
from audio_repr.frontends import Waveform
from audio_repr.models import _meta_network, layer_table
from audio_repr.models import wav2vec2 as W
from audio_repr.models.base import Tiling
from audio_repr.registry import get_card
from audio_repr.weights import WeightsError
from conftest import accumulations, assert_same_arithmetic, noise, rel_err

transformers = pytest.importorskip("transformers")
T = transformers

SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, conv_dim=(16,) * 7,
             num_conv_pos_embedding_groups=4, hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
             feat_proj_dropout=0.0, layerdrop=0.0, mask_time_prob=0.0)
LARGE = dict(feat_extract_norm="layer", conv_bias=True, do_stable_layer_norm=True)

#: variant -> (transformers model class, config class, extra config, card it stands for, the card's normalize)
VARIANTS = {
    "wav2vec2-base": ("Wav2Vec2Model", "Wav2Vec2Config", dict(num_conv_pos_embeddings=16), "wav2vec2-base"),
    "wav2vec2-large": ("Wav2Vec2Model", "Wav2Vec2Config", dict(LARGE, num_conv_pos_embeddings=16), "wav2vec2-base"),
    "hubert-base": ("HubertModel", "HubertConfig", dict(num_conv_pos_embeddings=16, feat_proj_layer_norm=False),
                    "hubert-base-ls960"),
    "hubert-large": ("HubertModel", "HubertConfig", dict(LARGE, num_conv_pos_embeddings=16), "hubert-large-ll60k"),
    "data2vec-audio": ("Data2VecAudioModel", "Data2VecAudioConfig",
                       dict(num_conv_pos_embeddings=3, conv_pos_kernel_size=5), "data2vec-audio-base"),
    "wavlm-base": ("WavLMModel", "WavLMConfig", dict(num_conv_pos_embeddings=16, num_buckets=32,
                                                     max_bucket_distance=80), "wavlm-base-plus"),
    "wavlm-large": ("WavLMModel", "WavLMConfig", dict(LARGE, num_conv_pos_embeddings=16, num_buckets=32,
                                                      max_bucket_distance=80), "wavlm-large"),
}


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def randomise(model, seed):
    """Random weights everywhere, norms near 1 (transformers initialises them to exactly 1 and 0)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight") and "pos_conv" not in name:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith("gru_rel_pos_const"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model.eval()


def hf_model(variant, seed=0):
    model_cls, cfg_cls, extra, _ = VARIANTS[variant]
    cfg = getattr(T, cfg_cls)(**SMALL, **extra)
    return randomise(getattr(T, model_cls)(cfg), seed)


def small_encoder(variant, model, path, normalize=None):
    """The library's encoder for the small transformers ``model`` saved at ``path`` (card of the variant, arch
    from the model's config.json)."""
    card = get_card(VARIANTS[variant][3])
    arch = W.arch_from_config(model.config.to_dict())
    fe = dict(card.frontend) if normalize is None else dict(card.frontend, normalize=normalize)
    card = dataclasses.replace(card, arch=arch, frontend=fe, default_layer=f"layer{arch['depth']}",
                               fusion_layers=("layer1", f"layer{arch['depth']}"))
    net = W.Wav2Vec2Net(**arch)
    audio_repr.inference.loader._apply_state(net, W.load_state(path), path, card.name)
    return Encoder(card, Waveform(**fe), net).eval()


def _hear_checkpoint(folder, name):
    """Random weights of the full-size ``wav2vec2-base`` as ``save_pretrained`` writes them (tests/test_hear.py)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = randomise(T.Wav2Vec2Model(T.Wav2Vec2Config(mask_time_prob=0.0)), seed=1)
    model.save_pretrained(folder / "wav2vec2-base")
    return folder / "wav2vec2-base"


#: tests/test_hear.py's maker for this family: one model, random weights in the original layout
HEAR_CHECKPOINT = ("wav2vec2-base", _hear_checkpoint)


@pytest.fixture(scope="module", params=list(VARIANTS))
def pair(request, tmp_path_factory):
    model = hf_model(request.param, seed=list(VARIANTS).index(request.param))
    folder = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(folder)
    return request.param, model, small_encoder(request.param, model, folder)


def hf_states(model, x, normalize):
    """transformers' hidden states of one clip (as its feature extractor prepares it) and the conv output."""
    fe = T.Wav2Vec2FeatureExtractor(do_normalize=normalize, return_attention_mask=True)
    inp = torch.from_numpy(fe(x.numpy(), sampling_rate=16000, return_tensors="np").input_values)
    with torch.no_grad():
        out = model(inp, output_hidden_states=True)
        conv = model.feature_extractor(inp).transpose(1, 2)
    return out, conv


def test_every_hidden_state_equals_transformers(pair):
    variant, model, enc = pair
    x = noise(1.3, seed=7) + 0.05                                    # an offset: normalising matters
    e = enc.embed(x, sr=16000, layers="all")
    out, conv = hf_states(model, x, enc.frontend.normalize)
    n = model.config.num_hidden_layers
    T_ = out.last_hidden_state.shape[1]
    assert e.frames.shape[0] == T_ == W.conv_out_length(len(x)) == 64
    assert rel_err(e.layer("features"), conv[0]) < 1e-4
    for i in range(n):
        assert rel_err(e.layer(f"layer{i}"), out.hidden_states[i][0]) < 1e-4, (variant, i)
    # the last layer is transformers' last_hidden_state (after the pre-norm models' final LayerNorm)
    assert rel_err(e.layer(f"layer{n}"), out.last_hidden_state[0]) < 1e-4
    if not getattr(model.config, "do_stable_layer_norm", False):
        assert rel_err(e.layer(f"layer{n}"), out.hidden_states[n][0]) < 1e-4
    # 20 ms frames centred on their 400 samples; the clip is the mean of the frames
    assert torch.allclose(e.timestamps_ms, 12.5 + 20.0 * torch.arange(T_, dtype=torch.float64))
    d = enc.embed(x, sr=16000)
    assert torch.allclose(d.clip, d.frames.mean(0), atol=1e-6)


def test_batch_equals_alone_where_transformers_does_not(pair):
    """A 1.3-s clip alone = in a padded batch next to a 13-s one (and a 6.7-s one)."""
    variant, model, enc = pair
    short, long_, mid = noise(1.3, seed=1), noise(13.0, seed=2), noise(6.7, seed=3)
    alone = enc.embed(short, sr=16000, layers="all")
    batch = enc.embed([long_, short, mid], sr=16000, layers="all", batch_size=3)
    fan_in, depth = accumulations(enc)
    assert batch[1].frames.shape == alone.frames.shape
    assert torch.equal(batch[1].timestamps_ms, alone.timestamps_ms)
    assert_same_arithmetic(batch[1].frames, alone.frames, fan_in, depth, what=f"{variant} batched")
    assert_same_arithmetic(batch[1].clip, alone.clip, fan_in, depth, what=f"{variant} clip")
    alone_mid = enc.embed(mid, sr=16000, layers="all")
    assert_same_arithmetic(batch[2].frames, alone_mid.frames, fan_in, depth, what=f"{variant} batched 6.7 s")
    if getattr(model.config, "feat_extract_norm", "layer") == "group":
        # transformers' processor returns no attention mask for these models: zero-padded in a batch, the GroupNorm's
        # statistics run over the padding and every frame of the short clip changes
        pad = torch.zeros(1, len(long_))
        pad[0, : len(short)] = short
        with torch.no_grad():
            ref_alone = model(short[None]).last_hidden_state[0]
            ref_batch = model(torch.cat([long_[None], pad])).last_hidden_state[1, : ref_alone.shape[0]]
        assert rel_err(ref_batch, ref_alone) > 1e-2


def test_padded_frames_never_reach_a_clip(pair):
    """What lies past a clip's end in the padded batch (zeros or loud noise) does not change it."""
    variant, model, enc = pair
    x = noise(1.3, seed=4)
    n = len(x)
    wavs = torch.zeros(2, 3 * n)
    wavs[0, :n] = x
    wavs[1] = noise(3 * 1.3, seed=5)[: 3 * n] * 50
    lens = torch.tensor([n, 3 * n])
    loud = wavs.clone()
    loud[0, n:] = 10.0
    with torch.no_grad():
        a = enc.network(wavs[:, None], lens)
        b = enc.network(loud[:, None], lens)
    k = W.conv_out_length(n)
    for name in a:
        assert torch.equal(a[name][0, :k], b[name][0, :k]) or rel_err(b[name][0, :k], a[name][0, :k]) < 1e-6, name


def test_hub_layouts_load(tmp_path):
    """The Hub's files: Wav2Vec2ForPreTraining (``wav2vec2.`` prefix, quantiser, project heads) as
    ``pytorch_model.bin`` with the weight norm under its legacy names ``weight_g``/``weight_v`` (as the
    2021 files hold it), given as a file; and a ForCTC model's folder."""
    cfg = T.Wav2Vec2Config(**SMALL, num_conv_pos_embeddings=16, codevector_dim=8, proj_codevector_dim=8,
                           num_codevectors_per_group=4, num_codevector_groups=2)
    pre = randomise(T.Wav2Vec2ForPreTraining(cfg), seed=11)
    sd = {}
    for k, v in pre.state_dict().items():
        k = k.replace("parametrizations.weight.original0", "weight_g").replace("parametrizations.weight.original1",
                                                                             "weight_v")
        sd[k] = v.clone()
    assert any(k.endswith("pos_conv_embed.conv.weight_g") for k in sd) and any(k.startswith("quantizer.") for k in sd)
    f = tmp_path / "pytorch_model.bin"
    torch.save(sd, f)
    enc = small_encoder("wav2vec2-base", pre.wav2vec2, f, normalize=False)
    x = noise(1.0, seed=8)
    with torch.no_grad():
        ref = pre.wav2vec2(x[None]).last_hidden_state[0]
    assert rel_err(enc.embed(x, sr=16000).frames, ref) < 1e-4

    ctc = randomise(T.HubertForCTC(T.HubertConfig(**SMALL, num_conv_pos_embeddings=16, vocab_size=12)), seed=12)
    folder = tmp_path / "ctc"
    folder.mkdir()
    ctc.config.save_pretrained(folder)            # a folder as transformers 4 wrote it: config.json + pytorch_model.bin
    torch.save(ctc.state_dict(), folder / "pytorch_model.bin")
    enc = small_encoder("hubert-base", ctc.hubert, folder, normalize=False)
    with torch.no_grad():
        ref = ctc.hubert(x[None]).last_hidden_state[0]
    assert rel_err(enc.embed(x, sr=16000).frames, ref) < 1e-4


def test_wrong_checkpoint_is_refused(tmp_path):
    with pytest.raises(WeightsError, match="no model.safetensors"):
        W.load_state(tmp_path)
    tmp_path = tmp_path / "w"
    tmp_path.mkdir()
    (tmp_path / "config.json").write_text('{"model_type": "whisper"}')
    torch.save({}, tmp_path / "pytorch_model.bin")
    with pytest.raises(WeightsError, match="not one of the wav2vec 2.0 family"):
        W.load_state(tmp_path)
    torch.save({"encoder.conv1.weight": torch.zeros(3)}, tmp_path / "whisper.bin")
    with pytest.raises(WeightsError, match="does not fit"):
        audio_repr.load("wav2vec2-base", weights=tmp_path / "whisper.bin")


def test_long_audio_in_pieces_with_context(tmp_path):
    """Past the piece length a clip is cut into pieces read with real context on both sides: each piece's
    frames are transformers' frames of its context window, stitched on one 20-ms grid (also when the clip ends
    less than 80 samples after a piece: the whole clip has no frame there either)."""
    model = hf_model("wavlm-base", seed=21)
    model.save_pretrained(tmp_path)
    enc = small_encoder("wavlm-base", model, tmp_path, normalize=True)   # one normalisation for the whole clip
    chunk, ctx = 320 * 50, 320 * 20                                  # 1-s pieces, 0.4 s of context
    enc.tiling = Tiling(chunk_frames=chunk, context_frames=ctx)
    for n in (3 * chunk + 12345, 2 * chunk + 50):
        x = noise(n / 16000 + 1, seed=n)[:n] + 0.03 * torch.linspace(-1, 3, n)     # a drifting offset
        e = enc.embed(x, sr=16000)
        k = W.conv_out_length(n)
        assert e.frames.shape[0] == k
        assert torch.allclose(e.timestamps_ms, 12.5 + 20.0 * torch.arange(k, dtype=torch.float64))
        xn = enc.frontend.edge_pad(x)                                 # the whole clip, normalised once
        for a in range(0, n, chunk):
            lo, hi = max(0, a - ctx), min(n, a + chunk + ctx)
            with torch.no_grad():
                ref = model(xn[None, lo:hi]).last_hidden_state[0]
            first = (a - lo) // 320
            own = min(a // 320 + chunk // 320, k) - a // 320
            if own <= 0:                              # the last 50 samples: no frame of the whole clip starts there
                assert n - a < 400 - 320 and a // 320 >= k
                continue
            assert rel_err(e.frames[a // 320: a // 320 + own], ref[first: first + own]) < 1e-4, (n, a)
    # within one piece (30 s by default) the clip is computed whole
    assert _meta_network("wavlm-base-plus").tiling == Tiling(chunk_frames=480000, context_frames=80000)


@pytest.mark.parametrize("name, cfg_cls, model_cls, extra", [
    ("wavlm-large", "WavLMConfig", "WavLMModel", dict(LARGE, hidden_size=1024, num_hidden_layers=24,
                                                      num_attention_heads=16, intermediate_size=4096)),
    ("hubert-large-ll60k", "HubertConfig", "HubertModel", dict(LARGE, hidden_size=1024, num_hidden_layers=24,
                                                               num_attention_heads=16, intermediate_size=4096)),
    ("wav2vec2-base", "Wav2Vec2Config", "Wav2Vec2Model", {}),
    ("data2vec-audio-base", "Data2VecAudioConfig", "Data2VecAudioModel", {}),
    ("wavlm-base-plus", "WavLMConfig", "WavLMModel", {}),
])
def test_full_size_networks_on_the_meta_device(name, cfg_cls, model_cls, extra):
    """The full-size networks (built on the meta device: no memory) have the layer table and exactly the
    tensors (names, shapes) of transformers' full-size models, so the Hub's checkpoints load."""
    with torch.device("meta"):
        ref = getattr(T, model_cls)(getattr(T, cfg_cls)(**extra, mask_time_prob=0.0))
        net = W.Wav2Vec2Net(**get_card(name).arch)
    ours = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in W.convert_state_dict(ref.state_dict()).items()}
    assert ours == theirs
    dim, depth = ref.config.hidden_size, ref.config.num_hidden_layers
    assert layer_table(name) == {"features": 512, **{f"layer{i}": dim for i in range(depth + 1)}}
    card = get_card(name)
    assert card.default_layer == f"layer{depth}" and card.fusion_layers == (f"layer{depth // 2}", f"layer{depth}")


def test_cards():
    for name in ("wav2vec2-base", "hubert-base-ls960", "hubert-large-ll60k", "data2vec-audio-base",
                 "wavlm-base-plus", "wavlm-large"):
        c = get_card(name)
        assert c.family == "wav2vec2" and c.sample_rate == 16000 and c.licence and c.citation
        net = _meta_network(name)                                   # 20-ms frames reading 400 samples
        assert set(net.layer_strides.values()) == {320} and set(net.layer_windows.values()) == {400}
        assert net.min_frames == 400 and net.clip_pooling == "mean"
    assert "MIT" in get_card("wavlm-base-plus").licence and "Apache-2.0" in get_card("wav2vec2-base").licence
    assert get_card("wavlm-base-plus").frontend["normalize"] is False
    assert np.isclose(get_card("wavlm-base-plus").published["SUPERB SID acc"], 89.42)
