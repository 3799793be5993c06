"""PANNs CNN14 (``panns-cnn14``, ``panns-cnn14-16k``): fidelity against the original ``Cnn14`` as packaged by
``panns_inference`` (its ``models.py``, a copy of ``qiuqiangkong/audioset_tagging_cnn``'s, with torchlibrosa's
front end) on deterministic random weights saved in the original checkpoint layout, on real recordings
(``../shared/audio``, skipped when absent) and generated audio; checkpoint layouts; long audio; the cards."""

import importlib
import importlib.util
import math
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import audio_repr
from audio_repr.models import Tiling
from audio_repr.weights import WeightsError
from conftest import AUDIO, chirp, noise, panns_training_checkpoint, rel_err, save_as_numpy1

TOL = 1e-5          # relative to each output's largest magnitude
MODELS = {"panns-cnn14": dict(sample_rate=32000, window_size=1024, hop_size=320, mel_bins=64, fmin=50, fmax=14000),
          "panns-cnn14-16k": dict(sample_rate=16000, window_size=512, hop_size=160, mel_bins=64, fmin=50, fmax=8000)}
FILES = {"panns-cnn14": "Cnn14_mAP=0.431.pth", "panns-cnn14-16k": "Cnn14_16k_mAP=0.438.pth"}


def _reference_models():
    """``panns_inference/models.py`` without its package ``__init__`` (which downloads a label list on import)."""
    spec = importlib.util.find_spec("panns_inference")
    if spec is None or importlib.util.find_spec("torchlibrosa") is None:
        pytest.skip("panns_inference / torchlibrosa (the reference) not installed")
    name = "_panns_reference"
    if name not in sys.modules:
        pkg = types.ModuleType(name)
        pkg.__path__ = [str(Path(spec.origin).parent)]
        sys.modules[name] = pkg
    return importlib.import_module(f"{name}.models")


def _randomise(net, seed):
    """Deterministic random weights and BatchNorm statistics in ``net`` (the original's ``Cnn14``); the front
    end's frozen STFT / mel buffers are kept."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for k, v in net.state_dict().items():
            if k.startswith(("spectrogram_extractor.", "logmel_extractor.")):
                continue
            if k.endswith("num_batches_tracked"):
                v.fill_(1000)
            elif k.endswith("running_var"):
                v.copy_(torch.rand(v.shape, generator=g) + 0.5)
            elif k.startswith("bn0.running_mean"):
                v.copy_(-40.0 + 10.0 * torch.randn(v.shape, generator=g))       # dB scale of the log-mel
            elif k.endswith("running_mean") or k.endswith(".bias"):
                v.copy_(0.1 * torch.randn(v.shape, generator=g))
            elif v.ndim == 1:                                                   # BN scale
                v.copy_(1.0 + 0.1 * torch.randn(v.shape, generator=g))
            else:
                v.copy_(torch.randn(v.shape, generator=g) * math.sqrt(2.0 / v[0].numel()))
        net.bn0.running_var.copy_(100.0 + 50.0 * torch.rand(net.bn0.running_var.shape, generator=g))
    return net.eval()


@pytest.fixture(scope="module", params=list(MODELS))
def pair(request, tmp_path_factory):
    """(name, our encoder, the original's Cnn14, its state dict, the checkpoint path)."""
    ref_mod = _reference_models()
    name = request.param
    torch.manual_seed(0)
    ref = _randomise(ref_mod.Cnn14(classes_num=527, **MODELS[name]), seed=7)
    sd = {k: v.clone() for k, v in ref.state_dict().items()}
    path = tmp_path_factory.mktemp("w") / FILES[name]
    torch.save(panns_training_checkpoint(sd), path)                 # what the original trainer saves
    return name, audio_repr.load(name, weights=path), ref, sd, path


def _reference(ref, wav):
    """The original on one waveform: log-mel, every conv block's map [C, T, F], clip embedding and logits, and
    the framewise embedding of its ``Cnn14_DecisionLevelMax`` path from the last map."""
    maps = []
    hooks = [getattr(ref, f"conv_block{i}").register_forward_hook(lambda m, i_, o: maps.append(o[0]))
             for i in range(1, 7)]
    logits = []
    hooks.append(ref.fc_audioset.register_forward_hook(lambda m, i_, o: logits.append(o[0])))
    with torch.no_grad():
        x = torch.as_tensor(wav, dtype=torch.float32)[None]
        mel = ref.logmel_extractor(ref.spectrogram_extractor(x))[0, 0].T            # [64, T]
        out = ref(x)
        for h in hooks:
            h.remove()
        f = maps[-1].mean(dim=2)[None]                                              # [1, 2048, T']
        smooth = F.max_pool1d(f, 3, 1, 1) + F.avg_pool1d(f, 3, 1, 1)
        frames = F.relu(ref.fc1(smooth.transpose(1, 2)))[0]
        frame_logits = ref.fc_audioset(frames)
    return dict(mel=mel, maps=maps, embedding=out["embedding"][0], logits=logits[0], frames=frames,
                frame_logits=frame_logits)


def _clips(sr):
    """Generated audio (noise, a chirp, a quiet tone with silence) at the model's rate."""
    return [noise(3.3, sr=sr, seed=11), torch.from_numpy(chirp(4.1, sr=sr, f1=0.45 * sr)),
            torch.cat([torch.zeros(sr // 2), 0.01 * torch.sin(torch.arange(2 * sr) * 2 * math.pi * 440 / sr)])]


def _real(enc):
    paths = [AUDIO / "cat-meow-44k.wav", AUDIO / "dog-bark-44k-stereo.wav",
             AUDIO / "fsdd" / "recordings" / "8_lucas_0.wav", AUDIO / "fsdd" / "recordings" / "3_lucas_0.wav"]
    paths = [p for p in paths if p.is_file()]
    if not paths:
        pytest.skip(f"shared recordings not present ({AUDIO})")
    return [w for w in enc.waveforms([str(p) for p in paths])]


def _check(enc, ref, wavs, what):
    layers = ["embedding", "logits"]
    alone = [enc.embed(w, sr=enc.sample_rate, layers=layers) for w in wavs]
    batch = enc.embed(wavs, sr=enc.sample_rate, layers=layers, batch_size=len(wavs))
    b3 = enc.embed(wavs, sr=enc.sample_rate, layers=["conv_block3"], batch_size=len(wavs))
    b6 = enc.embed(wavs, sr=enc.sample_rate, layers=["conv_block6"], batch_size=len(wavs))
    errs = []
    for i, w in enumerate(wavs):
        r = _reference(ref, w)
        mel = enc.frontend(w[None])[0]
        assert mel.shape == r["mel"].shape, (what, i)
        errs.append(("mel", rel_err(mel, r["mel"])))
        with torch.no_grad():
            maps = enc.network.feature_maps(mel[None])
        for k, (m, rm) in enumerate(zip(maps, r["maps"]), start=1):
            assert m[0].shape == rm.shape, (what, i, k)
            errs.append((f"conv_block{k}", rel_err(m[0], rm)))
        T = r["maps"][-1].shape[1]
        for e in (alone[i], batch[i]):
            assert e.frames.shape == (T, 2048 + 527), (what, i)
            errs += [("embedding clip", rel_err(e.clip[:2048], r["embedding"])),
                     ("logits clip", rel_err(e.clip[2048:], r["logits"])),
                     ("embedding frames", rel_err(e.layer("embedding"), r["frames"])),
                     ("logits frames", rel_err(e.layer("logits"), r["frame_logits"]))]
        errs += [("conv_block3 frames", rel_err(b3[i].frames, r["maps"][2].mean(dim=2).T)),
                 ("conv_block3 clip", rel_err(b3[i].clip, r["maps"][2].mean(dim=(1, 2)))),
                 ("conv_block6 frames", rel_err(b6[i].frames, r["maps"][5].mean(dim=2).T)),
                 ("conv_block6 clip", rel_err(b6[i].clip, r["maps"][5].mean(dim=(1, 2))))]
    worst = max(errs, key=lambda t: t[1])
    for layer in dict(errs):
        print(f"  {layer}: {max(e for n, e in errs if n == layer):.2e}")
    print(f"{enc.name} {what}: worst relative error {worst[1]:.2e} ({worst[0]})")
    assert worst[1] < TOL, (what, worst)


def test_generated_audio_matches_the_original_alone_and_in_a_batch(pair):
    name, enc, ref, _, _ = pair
    _check(enc, ref, _clips(enc.sample_rate), "generated")


def test_recordings_match_the_original_alone_and_in_a_batch(pair):
    name, enc, ref, _, _ = pair
    _check(enc, ref, _real(enc), "recordings")


def test_resampler_is_librosa_kaiser_best():
    """The original reads audio with ``librosa.load(sr=...)`` under librosa 0.6.3: ``res_type="kaiser_best"``
    (resampy), then ``fix_length`` to ``ceil(n * sr_new / sr)`` samples."""
    librosa = pytest.importorskip("librosa")
    pytest.importorskip("resampy")
    from audio_repr.audio import get_resampler

    x = noise(1.37, sr=44100, seed=5)
    for sr in (32000, 16000):
        assert audio_repr.get_card("panns-cnn14" if sr == 32000 else "panns-cnn14-16k").resampler == \
            "kaiser_best_librosa"
        ours = get_resampler("kaiser_best_librosa")(x, 44100, sr)
        ref = librosa.resample(x.numpy().astype(np.float32), orig_sr=44100, target_sr=sr, res_type="kaiser_best")
        assert ours.shape[-1] == ref.shape[-1] == math.ceil(len(x) * sr / 44100)
        assert rel_err(ours, ref) < 1e-5


# ---- checkpoints in the original's layout -------------------------------------------------------------------------
def test_checkpoint_layouts(pair):
    name, enc, ref, sd, path = pair
    ours = set(enc.network.state_dict())
    assert ours == {k for k in sd if not k.startswith(("spectrogram_extractor.", "logmel_extractor."))}
    assert any(k.startswith("logmel_extractor.") for k in sd)      # present in the file, dropped on loading
    wav = noise(2.0, sr=enc.sample_rate, seed=2)
    clip = enc.embed(wav, sr=enc.sample_rate).clip
    for i, obj in enumerate([sd, {"model": {"module." + k: v for k, v in sd.items()}}]):
        p = path.parent / f"layout{i}.pth"
        torch.save(obj, p)
        assert torch.equal(audio_repr.load(name, weights=p).embed(wav, sr=enc.sample_rate).clip, clip)
    # the trainer's file as written in 2020 under numpy 1.x (legacy format, numpy.core names in the sampler's
    # arrays): read safely, the sampler's arrays intact (autrainer #66: the 16 kHz file was refused)
    p = save_as_numpy1(panns_training_checkpoint(sd), path.parent / "numpy1.pth")
    assert b"numpy.core.multiarray\n_reconstruct" in p.read_bytes()
    assert torch.equal(audio_repr.load(name, weights=p).embed(wav, sr=enc.sample_rate).clip, clip)
    from audio_repr.weights import load_checkpoint

    for f in (path, p):
        sampler = load_checkpoint(f)["sampler"]
        assert sampler["indexes_per_class"][3].dtype == np.int64 and len(sampler["queue"]) == 527
    p = path.parent / "incomplete.pth"
    torch.save({"model": {k: v for k, v in sd.items() if not k.startswith("fc_audioset")}}, p)
    with pytest.raises(WeightsError, match="missing"):
        audio_repr.load(name, weights=p)


# ---- short and long audio, cards -------------------------------------------------------------------------------
def test_shortest_clip_and_long_audio_windows(pair):
    name, enc, _, _, _ = pair
    assert enc.tiling.chunk_frames == 12000 and enc.tiling.context_frames == 0 and enc.tiling.overlap_frames == 32
    sr = enc.sample_rate
    e = enc.embed(torch.zeros(enc.frontend.min_samples(32)) + 0.01, sr=sr)
    assert e.frames.shape[0] == 1
    with pytest.raises(Exception, match="too short"):
        enc.embed(torch.zeros(enc.frontend.min_samples(32) - enc.frontend.hop_length), sr=sr)
    wav = noise(7.0, sr=sr, seed=3)
    whole, whole2 = enc.embed(wav, sr=sr), enc.embed(wav, sr=sr, layers=["conv_block2"])
    saved = enc.tiling
    try:
        enc.tiling = Tiling(chunk_frames=320, overlap_frames=32)             # windows of 3.2 s
        pieces, pieces2 = enc.embed(wav, sr=sr), enc.embed(wav, sr=sr, layers=["conv_block2"])
    finally:
        enc.tiling = saved
    assert pieces.frames.shape == whole.frames.shape and torch.equal(pieces.timestamps_ms, whole.timestamps_ms)
    # steps away from the windows' starts (every 80 steps of conv_block2) are the whole clip's (finite receptive
    # field); the clip embedding (max + mean per window, then averaged) is close, not equal
    a, b = whole2.frames, pieces2.frames
    assert a.shape == b.shape
    assert rel_err(b[:76], a[:76]) < 1e-5 and rel_err(b[86:156], a[86:156]) < 1e-5
    assert 0 < rel_err(pieces.clip, whole.clip) < 0.5


def test_cards():
    for name, sr, m in (("panns-cnn14", 32000, 43.1), ("panns-cnn14-16k", 16000, 43.8)):
        card = audio_repr.get_card(name)
        assert card.sample_rate == sr and card.published["AudioSet mAP"] == m
        assert "PANNs" in card.citation and "Transactions on Audio, Speech, and Language Processing" in card.citation
        assert card.normalisation.mean == 0.0 and card.normalisation.std == 1.0
        assert card.default_layer == "embedding"
    from audio_repr.models import layer_table

    t = layer_table("panns-cnn14")
    assert t["embedding"] == 2048 and t["logits"] == 527 and t["conv_block1"] == 64 and t["conv_block6"] == 2048
