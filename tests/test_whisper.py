"""Whisper's encoder against transformers on random weights: the log-mel equals ``WhisperFeatureExtractor``
(80 and 128 mels), every hidden state equals ``WhisperModel``'s encoder on the 30-s window sliced back to the
clip, batches are exact, long audio is 30-s windows stitched on one 20-ms grid, the Hub layouts load, and
whisper-large-v3's full-size network matches transformers' tensors on the meta device. transformers is a
test-only dependency."""

import dataclasses
import warnings

import numpy as np
import pytest
import torch

import audio_repr
import audio_repr.inference.loader
from audio_repr import Encoder
from audio_repr.frontends import Waveform, WhisperLogMel
from audio_repr.models import _meta_network, layer_table
from audio_repr.models import whisper as Wh
from audio_repr.registry import get_card
from audio_repr.weights import WeightsError
from conftest import accumulations, assert_same_arithmetic, chirp, noise, rel_err

transformers = pytest.importorskip("transformers")
T = transformers

SMALL = dict(d_model=32, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=64, decoder_layers=1,
             decoder_attention_heads=4, decoder_ffn_dim=64, vocab_size=100, pad_token_id=0, bos_token_id=1,
             eos_token_id=2, decoder_start_token_id=1, max_target_positions=16, dropout=0.0, attention_dropout=0.0,
             activation_dropout=0.0)


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def randomise(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "embed_positions" in name:
                continue
            if "layer_norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model.eval()


def small_encoder(path, n_mels=80):
    card = get_card("whisper-base" if n_mels == 80 else "whisper-large-v3")
    arch = dict(n_mels=n_mels, dim=SMALL["d_model"], depth=SMALL["encoder_layers"],
                heads=SMALL["encoder_attention_heads"], ffn=SMALL["encoder_ffn_dim"])
    card = dataclasses.replace(card, arch=arch, default_layer="layer2", fusion_layers=("layer1", "layer2"))
    net = Wh.WhisperEncoderNet(**arch)
    audio_repr.inference.loader._apply_state(net, Wh.load_state(path), path, card.name)
    return Encoder(card, Waveform(center=True), net).eval()


def _hear_checkpoint(folder, name):
    """Random weights of ``whisper-base`` (its full-size encoder, a one-layer decoder) as ``save_pretrained`` writes
    them (tests/test_hear.py)."""
    cfg = T.WhisperConfig(num_mel_bins=80, d_model=512, encoder_layers=6, encoder_attention_heads=8,
                          encoder_ffn_dim=2048, decoder_layers=1, decoder_attention_heads=8, decoder_ffn_dim=2048)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = randomise(T.WhisperForConditionalGeneration(cfg), seed=2)
    model.save_pretrained(folder / "whisper-base")
    return folder / "whisper-base"


#: tests/test_hear.py's maker for this family: one model, random weights in the original layout
HEAR_CHECKPOINT = ("whisper-base", _hear_checkpoint)


@pytest.fixture(scope="module", params=[80, 128])
def pair(request, tmp_path_factory):
    model = randomise(T.WhisperForConditionalGeneration(T.WhisperConfig(num_mel_bins=request.param, **SMALL)),
                      seed=request.param)
    folder = tmp_path_factory.mktemp(f"whisper{request.param}")
    model.save_pretrained(folder)
    return model, small_encoder(folder, request.param)


def hf_encoder(model, x, n_mels):
    """transformers' features of one clip (zero-padded / cut to 30 s) and its encoder's hidden states."""
    fe = T.WhisperFeatureExtractor(feature_size=n_mels)
    feats = torch.from_numpy(fe(np.asarray(x), sampling_rate=16000, return_tensors="np").input_features)
    with torch.no_grad():
        out = model.model.encoder(feats, output_hidden_states=True)
    return feats, out


@pytest.mark.parametrize("n_mels", [80, 128])
@pytest.mark.parametrize("n", [20800, 479900, 480000])
def test_log_mel_equals_the_feature_extractor(n_mels, n):
    x = torch.from_numpy(chirp(n / 16000 + 0.01)[:n]) + 0.01 * noise(n / 16000 + 0.01, seed=1)[:n]
    fe = T.WhisperFeatureExtractor(feature_size=n_mels)
    ref = fe(x.numpy(), sampling_rate=16000, return_tensors="np").input_features[0]
    got = WhisperLogMel(n_mels)(torch.nn.functional.pad(x[None], (0, 480000 - n)))[0]
    assert got.shape == ref.shape == (n_mels, 3000)
    assert float((got - torch.from_numpy(ref)).abs().max()) < 1e-4      # features of unit scale (log10 / 4)


def test_every_hidden_state_equals_transformers_sliced_to_the_clip(pair):
    model, enc = pair
    n_mels = enc.network.mel.n_mels
    for seconds in (1.3, 30.0):
        x = noise(seconds, seed=3)
        e = enc.embed(x, sr=16000, layers="all")
        _, out = hf_encoder(model, x, n_mels)
        k = -(-len(x) // 320)                                # the frames centred inside the clip
        assert e.frames.shape[0] == k == (65 if seconds == 1.3 else 1500)
        for i, h in enumerate(out.hidden_states):
            assert rel_err(e.layer(f"layer{i}"), h[0, :k]) < 1e-4, (seconds, i)
        assert rel_err(e.layer("layer2"), out.last_hidden_state[0, :k]) < 1e-4
        assert torch.equal(e.timestamps_ms, 20.0 * torch.arange(k, dtype=torch.float64))
        d = enc.embed(x, sr=16000)
        assert torch.allclose(d.clip, out.last_hidden_state[0, :k].mean(0), atol=1e-5 * float(d.clip.abs().max()))


def test_batch_equals_alone(pair):
    model, enc = pair
    short, mid, long_ = noise(1.3, seed=1), noise(6.7, seed=2), noise(13.0, seed=3)
    batch = enc.embed([long_, short, mid], sr=16000, layers="all", batch_size=3)
    fan_in, depth = accumulations(enc)
    for b, x in zip(batch[1:], (short, mid)):
        a = enc.embed(x, sr=16000, layers="all")
        assert torch.equal(b.timestamps_ms, a.timestamps_ms)
        assert_same_arithmetic(b.frames, a.frames, fan_in, depth, what="whisper batched")
        assert_same_arithmetic(b.clip, a.clip, fan_in, depth, what="whisper clip")


def test_long_audio_is_consecutive_30_s_windows(pair):
    model, enc = pair
    n_mels = enc.network.mel.n_mels
    n = 2 * 480000 + 12345                                   # two full windows and 0.77 s
    x = noise(n / 16000 + 0.01, seed=9)[:n]
    e = enc.embed(x, sr=16000)
    k = -(-n // 320)
    assert e.frames.shape[0] == k
    assert torch.equal(e.timestamps_ms, 20.0 * torch.arange(k, dtype=torch.float64))   # 30 000 k + 20 j ms
    for w in range(3):
        _, out = hf_encoder(model, x[480000 * w: 480000 * (w + 1)], n_mels)
        own = min(1500, k - 1500 * w)
        assert rel_err(e.frames[1500 * w: 1500 * w + own], out.last_hidden_state[0, :own]) < 1e-4, w
    # forward() on a long padded batch gives the same windows
    with torch.no_grad():
        f = enc(torch.stack([x, torch.zeros(n)]), [n, 16000])
    assert rel_err(f["layer2"][0, :k], e.frames) < 1e-5


def test_hub_layouts_load(tmp_path):
    """WhisperModel's folder (``encoder.*``) as well as WhisperForConditionalGeneration's (``model.encoder.*``),
    and a bare checkpoint file; the decoder is dropped."""
    model = randomise(T.WhisperModel(T.WhisperConfig(**SMALL)), seed=5)
    model.save_pretrained(tmp_path / "m")
    enc = small_encoder(tmp_path / "m")
    x = noise(2.0, seed=4)
    _, out = hf_encoder(type("M", (), {"model": model})(), x, 80)
    assert rel_err(enc.embed(x, sr=16000).frames, out.last_hidden_state[0, :100]) < 1e-4
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    assert set(Wh.load_state(tmp_path / "pytorch_model.bin")) == set(enc.network.state_dict())
    with pytest.raises(WeightsError, match="no Whisper encoder"):
        Wh.convert_state_dict({"feature_extractor.conv_layers.0.conv.weight": torch.zeros(1)})
    (tmp_path / "w2v").mkdir()
    (tmp_path / "w2v" / "config.json").write_text('{"model_type": "wav2vec2"}')
    torch.save({}, tmp_path / "w2v" / "pytorch_model.bin")
    with pytest.raises(WeightsError, match="not Whisper"):
        Wh.load_state(tmp_path / "w2v")


@pytest.mark.parametrize("name, cfg", [
    ("whisper-large-v3", dict(num_mel_bins=128, d_model=1280, encoder_layers=32, encoder_attention_heads=20,
                              encoder_ffn_dim=5120, decoder_layers=2, decoder_attention_heads=20,
                              decoder_ffn_dim=5120, vocab_size=51866)),
    ("whisper-base", dict(num_mel_bins=80, d_model=512, encoder_layers=6, encoder_attention_heads=8,
                          encoder_ffn_dim=2048, decoder_layers=6, decoder_attention_heads=8, decoder_ffn_dim=2048)),
    ("whisper-small", dict(num_mel_bins=80, d_model=768, encoder_layers=12, encoder_attention_heads=12,
                           encoder_ffn_dim=3072, decoder_layers=1, decoder_attention_heads=12,
                           decoder_ffn_dim=3072)),
])
def test_full_size_encoders_on_the_meta_device(name, cfg):
    """The full-size encoders (on the meta device) hold exactly transformers' encoder tensors (names, shapes)."""
    with torch.device("meta"):
        ref = T.WhisperForConditionalGeneration(T.WhisperConfig(**cfg))
    net = _meta_network(name)
    ours = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in Wh.convert_state_dict(ref.state_dict()).items()}
    assert ours == theirs
    depth, dim = cfg["encoder_layers"], cfg["d_model"]
    assert layer_table(name) == {f"layer{i}": dim for i in range(depth + 1)}
    assert net.mel.n_mels == cfg["num_mel_bins"]


def test_sinusoids_and_cards():
    pos = Wh.sinusoids(1500, 64)
    assert pos.shape == (1500, 64) and torch.equal(pos[0], torch.cat([torch.zeros(32), torch.ones(32)]))
    # transformers initialises its (stored) positions with the same sinusoids
    with torch.no_grad():
        m = T.WhisperModel(T.WhisperConfig(**dict(SMALL, d_model=64)))
    assert rel_err(pos, m.encoder.embed_positions.weight) < 1e-6
    for name in ("whisper-base", "whisper-small", "whisper-large-v3"):
        c = get_card(name)
        assert c.family == "whisper" and "MIT" in c.licence and "Radford" in c.citation
        net = _meta_network(name)
        assert set(net.layer_strides.values()) == {320} and net.clip_pooling == "mean"
        assert net.tiling.chunk_frames == net.tiling.min_piece_frames == 480000
