"""EfficientAT (mn04, AudioSet): the golden outputs of the original pipeline (``../shared/golden/``, made with
the official weights: see its README) and checkpoint loading in the original's layout, with a reference
forward written here from the original's description (``models/mn`` of fschmid56/EfficientAT)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import audio_repr
from audio_repr.models import Tiling
from audio_repr.weights import WeightsError
from conftest import AUDIO, SHARED, accumulations, assert_same_arithmetic, chirp, noise, rel_err

EAT_GOLDEN = SHARED / "golden" / "efficientat_mn04_as.npz"
MN04 = SHARED / "weights" / "mn04_as_mAP_432.pt"
N_FILES = 8
TOL = 1e-4          # relative to each output's largest magnitude


@pytest.fixture(scope="module")
def eat_golden():
    if not EAT_GOLDEN.is_file():
        pytest.skip(f"golden outputs not present ({EAT_GOLDEN})")
    return dict(np.load(EAT_GOLDEN))


@pytest.fixture(scope="module")
def mn04():
    if not MN04.is_file():
        pytest.skip(f"official weights not present ({MN04})")
    return audio_repr.load("efficientat-mn04-as", weights=MN04)


def _wav(g, i):
    return torch.from_numpy(g[f"f{i}_wav32k"])


def _paths(g):
    out = []
    for name in g["files"]:
        p = AUDIO / str(name)
        out.append(p if p.is_file() else AUDIO / "fsdd" / "recordings" / str(name))
    if not all(p.is_file() for p in out):
        pytest.skip(f"shared recordings not present ({AUDIO})")
    return [str(p) for p in out]


def _mel(enc, wav):
    """Our front end and the card's normalisation: the original's ``AugmentMelSTFT`` output."""
    n = enc.normalisation
    return (enc.frontend(wav[None])[0] - n.mean) / n.divisor


# ---- the golden outputs -------------------------------------------------------------------------------------------
def test_resampler_gives_the_originals_waveform(eat_golden, mn04):
    """librosa 0.9's load: resampy kaiser_best, then ``ceil(n * 32000 / sr)`` samples (one zero more at 44.1 kHz)."""
    wavs = mn04.waveforms(_paths(eat_golden))
    for i, w in enumerate(wavs):
        ref = eat_golden[f"f{i}_wav32k"]
        assert w.shape == ref.shape, i
        assert rel_err(w, ref) < 1e-5, i


def test_front_end_matches_the_original(eat_golden, mn04):
    for i in range(N_FILES):
        mel = _mel(mn04, _wav(eat_golden, i))
        ref = eat_golden[f"f{i}_mel"]
        assert mel.shape == ref.shape and rel_err(mel, ref) < TOL, i


def test_every_block_matches_the_original(eat_golden, mn04):
    for i in range(N_FILES):
        with torch.no_grad():
            maps = mn04.network.feature_maps(_mel(mn04, _wav(eat_golden, i))[None])
        assert len(maps) == 17
        for k, m in enumerate(maps):
            ref = eat_golden[f"f{i}_fmap{k}"]
            assert m[0].shape == ref.shape and rel_err(m[0], ref) < TOL, (i, k)
        # the encoder's frames of every block (forward: every layer at its own stride): the map averaged over
        # frequency
        with torch.no_grad():
            outs = mn04(_wav(eat_golden, i)[None])
        for k in range(17):
            ref = eat_golden[f"f{i}_fmap{k}"].mean(axis=1).T
            assert rel_err(outs[f"block{k}"][0], ref) < TOL, (i, k)


def _check_clip(e, g, i):
    assert e.layers == ["features", "logits"]
    f, lg = e.clip[:384], e.clip[384:]
    assert rel_err(f, g[f"f{i}_features"]) < TOL, i
    assert rel_err(lg, g[f"f{i}_logits"]) < TOL, i


def test_features_and_logits_alone_and_in_a_batch(eat_golden, mn04):
    wavs = [_wav(eat_golden, i) for i in range(N_FILES)]
    for i, w in enumerate(wavs):
        _check_clip(mn04.embed(w, sr=32000, layers=["features", "logits"]), eat_golden, i)
    for i, e in enumerate(mn04.embed(wavs, sr=32000, layers=["features", "logits"], batch_size=N_FILES)):
        _check_clip(e, eat_golden, i)
    # the default output: 384-d frames every 320 ms, clip = the original's pooled embedding
    e = mn04.embed(wavs[0], sr=32000)
    T = math.ceil(eat_golden["f0_mel"].shape[1] / 32)
    assert e.frames.shape == (T, 384) and rel_err(e.clip, eat_golden["f0_features"]) < TOL
    assert torch.allclose(e.timestamps_ms, 10.0 * (32 * torch.arange(T, dtype=torch.float64) + 15.5))


def test_files_end_to_end(eat_golden, mn04):
    """From the recordings (44.1 kHz stereo, 8 kHz speech) with the card's resampler, in one batch."""
    embs = mn04.embed(_paths(eat_golden), layers=["features", "logits"])
    for i, e in enumerate(embs):
        _check_clip(e, eat_golden, i)


# ---- checkpoints in the original's layout ---------------------------------------------------------------------
# The original's MobileNetV3 table (models/mn/model.py): kernel, expanded, out, squeeze-excitation, activation,
# stride, before the width multiplier; the first block reads 16 channels.
_TABLE = [(3, 16, 16, False, "RE", 1), (3, 64, 24, False, "RE", 2), (3, 72, 24, False, "RE", 1),
          (5, 72, 40, True, "RE", 2), (5, 120, 40, True, "RE", 1), (5, 120, 40, True, "RE", 1),
          (3, 240, 80, False, "HS", 2), (3, 200, 80, False, "HS", 1), (3, 184, 80, False, "HS", 1),
          (3, 184, 80, False, "HS", 1), (3, 480, 112, True, "HS", 1), (3, 672, 112, True, "HS", 1),
          (5, 672, 160, True, "HS", 2), (5, 960, 160, True, "HS", 1), (5, 960, 160, True, "HS", 1)]


def _divisible(v, d=8):
    n = max(d, int(v + d / 2) // d * d)
    return n + d if n < 0.9 * v else n


def reference_forward(sd, mel, width=0.4):
    """The original network, functionally, from a state dict in its layout: ``mel`` [1, 128, T] (normalised)
    -> (maps, features, logits)."""
    def cba(x, pre, stride=1, groups=1, act=None):
        w = sd[f"{pre}.0.weight"]
        x = F.conv2d(x, w, None, stride, (w.shape[-1] - 1) // 2, 1, groups)
        x = F.batch_norm(x, sd[f"{pre}.1.running_mean"], sd[f"{pre}.1.running_var"], sd[f"{pre}.1.weight"],
                         sd[f"{pre}.1.bias"], False, 0.0, 1e-3)
        return act(x) if act is not None else x

    x = cba(mel[:, None], "features.0", 2, act=F.hardswish)
    maps, c_in = [x], _divisible(16 * width)
    for i, (k, exp, out, se, a, s) in enumerate(_TABLE, start=1):
        exp, out = _divisible(exp * width), _divisible(out * width)
        act = F.hardswish if a == "HS" else F.relu
        j, h = 0, x
        if exp != c_in:
            h = cba(h, f"features.{i}.block.{j}", act=act)
            j += 1
        h = cba(h, f"features.{i}.block.{j}", s, groups=exp, act=act)
        j += 1
        if se:
            p = f"features.{i}.block.{j}.conc_se_layers.0"
            z = F.relu(F.linear(h.mean(dim=(2, 3)), sd[f"{p}.fc1.weight"], sd[f"{p}.fc1.bias"]))
            h = h * torch.sigmoid(F.linear(z, sd[f"{p}.fc2.weight"], sd[f"{p}.fc2.bias"]))[:, :, None, None]
            j += 1
        h = cba(h, f"features.{i}.block.{j}")
        x = h + x if s == 1 and c_in == out else h
        c_in = out
        maps.append(x)
    x = cba(x, "features.16", act=F.hardswish)
    maps.append(x)
    feats = x.mean(dim=(2, 3))
    hidden = F.hardswish(F.linear(feats, sd["classifier.2.weight"], sd["classifier.2.bias"]))
    return maps, feats[0], F.linear(hidden, sd["classifier.5.weight"], sd["classifier.5.bias"])[0]


def _random_original_checkpoint(seed=1):
    """A state dict in the original's layout (its key names) with random weights and BN statistics."""
    torch.manual_seed(seed)
    net = audio_repr.load("efficientat-mn04-as", pretrained=False).network
    sd = {}
    for k, v in net.state_dict().items():
        if k.endswith("running_var"):
            v = torch.rand_like(v) + 0.5
        elif k.endswith("running_mean") or k.endswith(".bias"):
            v = 0.1 * torch.randn_like(v)
        elif k.endswith("num_batches_tracked"):
            v = torch.tensor(1000)
        elif v.ndim == 1:                                               # BN scale
            v = 1.0 + 0.1 * torch.randn_like(v)
        else:
            fan_in = v[0].numel()
            v = torch.randn_like(v) * math.sqrt(2.0 / fan_in)
        sd[k] = v.clone()
    return sd


@pytest.fixture(scope="module")
def original_ckpt(tmp_path_factory):
    sd = _random_original_checkpoint()
    path = tmp_path_factory.mktemp("w") / "mn04_as_mAP_432.pt"
    torch.save(sd, path)
    return sd, path


def test_our_names_are_the_official_checkpoints():
    if not MN04.is_file():
        pytest.skip(f"official weights not present ({MN04})")
    official = torch.load(MN04, map_location="cpu", weights_only=True)
    assert set(official) == set(_random_original_checkpoint())


def test_original_layout_loads_and_matches_the_reference(original_ckpt):
    sd, path = original_ckpt
    enc = audio_repr.load("efficientat-mn04-as", weights=path)
    clips = [torch.randn(n, generator=torch.Generator().manual_seed(n)) * 0.1 for n in (17000, 64000, 40321)]
    embs = enc.embed(clips, sr=32000, layers=["features", "logits"])
    block5 = enc.embed(clips, sr=32000, layers=["block5"])
    for c, e, b in zip(clips, embs, block5):
        with torch.no_grad():
            maps, feats, logits = reference_forward(sd, _mel(enc, c)[None])
        T = maps[-1].shape[-1]
        assert e.frames.shape[0] == T == math.ceil(enc.frontend.frames_for(len(c)) / 32)
        assert rel_err(e.layer("features"), maps[-1][0].mean(dim=1).T) < 1e-5
        assert rel_err(e.clip[:384], feats) < 1e-5 and rel_err(e.clip[384:], logits) < 1e-5
        assert rel_err(b.frames, maps[5][0].mean(dim=1).T) < 1e-5
        assert rel_err(b.clip, maps[5][0].mean(dim=(1, 2))) < 1e-5
    # behind a prefix, wrapped, as training code saves it: the same numbers
    ref = enc.embed(clips[0], sr=32000).clip
    for i, obj in enumerate([{"module." + k: v for k, v in sd.items()}, {"state_dict": sd}]):
        p = path.parent / f"wrapped{i}.pt"
        torch.save(obj, p)
        assert torch.equal(audio_repr.load("efficientat-mn04-as", weights=p).embed(clips[0], sr=32000).clip, ref)
    # the loading is strict
    p = path.parent / "incomplete.pt"
    torch.save({k: v for k, v in sd.items() if not k.startswith("classifier.5")}, p)
    with pytest.raises(WeightsError, match="missing"):
        audio_repr.load("efficientat-mn04-as", weights=p)


# ---- long audio, cards ----------------------------------------------------------------------------------------
def test_long_audio_runs_whole_up_to_ten_minutes_then_in_windows(original_ckpt):
    enc = audio_repr.load("efficientat-mn04-as", weights=original_ckpt[1])
    assert enc.tiling.chunk_frames == 60000 and enc.tiling.context_frames == 0   # the squeeze-excitation is global
    wav = torch.randn(32000 * 12, generator=torch.Generator().manual_seed(3)) * 0.1
    whole = enc.embed(wav, sr=32000)
    enc.tiling = Tiling(chunk_frames=320)                   # independent windows of 3.2 s
    pieces = enc.embed(wav, sr=32000)
    assert pieces.frames.shape == whole.frames.shape and torch.equal(pieces.timestamps_ms, whole.timestamps_ms)
    # each window its own averages: close to, not equal to, the whole clip
    assert 0 < rel_err(pieces.clip, whole.clip) < 0.5


def test_cards():
    card = audio_repr.get_card("efficientat-mn04-as")
    assert card.sample_rate == 32000 and card.resampler == "kaiser_best_librosa"
    assert card.published["AudioSet mAP"] == 43.2 and "ICASSP 2023" in card.citation
    assert audio_repr.load("efficientat-mn04-as", pretrained=False).layer_dims["features"] == 384
    for name, dim in (("efficientat-mn10-as", 960), ("efficientat-mn40-as", 3840)):
        from audio_repr.models import layer_table
        assert layer_table(name)["features"] == dim and layer_table(name)["logits"] == 527


# ---- DyMN (efficientat-dymn10-as): against the original re-stated (tests/reference_dymn.py), random weights ---------
DYMN = "efficientat-dymn10-as"


def _calibration_audio(sr=32000):
    """Audio whose log-mels set the random checkpoint's BN statistics: loud and quiet noise, a chirp in noise,
    bursts and silences."""
    c = torch.from_numpy(chirp(4.0, sr=sr, f0=50, f1=12000))
    bursts = c * (torch.arange(len(c)) // (sr // 2) % 2 == 0)
    return [c + 0.3 * noise(4.0, sr=sr, seed=9), noise(4.0, sr=sr, seed=8), 0.003 * noise(4.0, sr=sr, seed=7),
            0.05 * bursts + 0.001 * noise(4.0, sr=sr, seed=6)]


@pytest.fixture(scope="module")
def dymn(tmp_path_factory):
    """(the original network with random weights, its checkpoint, our encoder loaded from that file)."""
    from reference_dymn import OriginalDyMN, random_checkpoint

    plain = audio_repr.load(DYMN, pretrained=False)
    sd = random_checkpoint(torch.stack([_mel(plain, a) for a in _calibration_audio()])[:, None])
    path = tmp_path_factory.mktemp("w") / "dymn10_as.pt"
    torch.save(sd, path)
    ref = OriginalDyMN()
    ref.load_state_dict(sd)
    return ref.eval(), sd, audio_repr.load(DYMN, weights=path)


def _dymn_clips(enc):
    """Noise, a chirp in noise and quiet noise; the dog and cat recordings (44.1 kHz, the card's resampler) when
    present."""
    clips = [noise(3.1, sr=32000, seed=1), torch.from_numpy(chirp(2.3, sr=32000, f0=300, f1=9000))
             + 0.2 * noise(2.3, sr=32000, seed=4), 0.01 * noise(1.7, sr=32000, seed=5)]
    recordings = [AUDIO / "dog-bark-44k-stereo.wav", AUDIO / "cat-meow-44k.wav"]
    if all(p.is_file() for p in recordings):
        clips += enc.waveforms([str(p) for p in recordings])
    return clips


def test_dymn_matches_the_original_alone_and_in_a_batch(dymn):
    ref, _, enc = dymn
    clips = _dymn_clips(enc)
    layers = ["features", "logits"]
    batch = enc.embed(clips, sr=32000, layers=layers, batch_size=len(clips))
    fan_in, depth = accumulations(enc)
    for i, (c, b) in enumerate(zip(clips, batch)):
        alone = enc.embed(c, sr=32000, layers=layers, batch_size=1)
        mel = _mel(enc, c)
        with torch.no_grad():
            logits, maps = ref(mel[None, None], return_fmaps=True)
            outs = enc.network(mel[None])
        T = maps[-1].shape[-1]
        assert alone.frames.shape[0] == T == math.ceil(mel.shape[1] / 32)
        assert rel_err(alone.clip[:960], maps[-1][0].mean(dim=(1, 2))) < 1e-5, i      # the original's embedding
        assert rel_err(alone.clip[960:], logits[0]) < 1e-5, i
        assert rel_err(alone.layer("features"), maps[-1][0].mean(dim=1).T) < 1e-5, i
        for k, m in enumerate(maps):                                                   # every block's frames
            assert rel_err(outs[f"block{k}"][0], m[0].mean(dim=1).T) < 1e-5, (i, k)
        assert_same_arithmetic(b.frames, alone.frames, fan_in, depth, what=f"clip {i} frames")
        assert_same_arithmetic(b.clip, alone.clip, fan_in, depth, what=f"clip {i} clip")


def test_dymn_is_the_originals_arithmetic_in_float64(dymn):
    """In float64 the two agree to rounding (1e-12): the float32 differences above are rounding amplified by a deep
    random network, not a different computation."""
    import copy

    ref, _, enc = dymn
    ref64, net64 = copy.deepcopy(ref).double(), copy.deepcopy(enc.network).double()
    for c in _dymn_clips(enc)[:2]:
        mel = _mel(enc, c).double()[None]
        with torch.no_grad():
            logits, maps = ref64(mel[:, None], return_fmaps=True)
            ours = net64.feature_maps(mel)
            clip = net64(mel).clip
        for m, r in zip(ours, maps):
            assert rel_err(m, r) < 1e-12
        assert rel_err(clip["logits"][0], logits[0]) < 1e-12


def test_dymn_checkpoint_layout(dymn):
    """The original's names (``in_c``, ``layers.N``, ``out_c``, ``classifier``) load strictly; wrapped or behind a
    ``module.`` prefix they convert to the same tensors."""
    from audio_repr.models.efficientat import convert_state_dict

    _, sd, enc = dymn
    ours = convert_state_dict(sd)
    assert set(ours) == set(enc.network.state_dict())
    assert all(torch.equal(ours[k], v) for k, v in convert_state_dict({"module." + k: v for k, v in sd.items()}).items())
    assert set(convert_state_dict({"state_dict": sd})) == set(ours)
    assert ours["features.16.0.weight"] is sd["out_c.0.weight"] and ours["features.3.depth_conv.weight"] is \
        sd["layers.2.depth_conv.weight"]


def test_dymn_card():
    card = audio_repr.get_card(DYMN)
    assert card.arch["network"] == "dymn" and card.weights == "dymn10_as.pt" and card.labels == "audioset"
    assert card.published["AudioSet mAP"] == 47.7 and "Dynamic Convolutional" in card.citation
    from audio_repr.models import layer_table

    assert layer_table(DYMN)["features"] == 960 and layer_table(DYMN)["logits"] == 527
