import json
import zipfile

import pytest
import torch

import audio_repr
from audio_repr.models import msm_mae
from audio_repr.weights import WeightsError
from conftest import ROOT, accumulations, assert_same_arithmetic, chirp, noise, rel_err
from reference_msm_mae import encode_lms, mae_sincos, official_checkpoint, random_model

EPS = float(torch.finfo(torch.float32).eps)
RELEASE = {208: ("msm-mae-80x208", "80x208p16x16_0422"), 512: ("msm-mae-80x512", "80x512p16x16_0425")}
LENGTHS = {208: (0.5, 2.1, 13.0), 512: (5.11, 13.0)}   # 5.11 s = exactly 512 frames (the original pads a whole unit)


def nnaudio_lms(wav):
    """The original runtime's front end: nnAudio's MelSpectrogram, then log(x + eps)."""
    from nnAudio.features import MelSpectrogram

    spec = MelSpectrogram(sr=16000, n_fft=400, win_length=400, hop_length=160, n_mels=80, fmin=50, fmax=8000,
                          center=True, power=2, verbose=False)(wav[None])
    return (spec + EPS).log()[0]


def reference(net, wav, stats=None):
    """One clip as the original runtime encodes a batch of one: LMS, normalised by its own mean/std
    (torch's x.std()) unless dataset ``stats`` are given, whole units, trimmed. -> (layers, raw block12)."""
    lms = nnaudio_lms(wav)
    mean, std = stats if stats is not None else (lms.mean(), lms.std())
    with torch.no_grad():
        return encode_lms(net, (lms - mean) / std)


@pytest.fixture(scope="module", params=[208, 512])
def model(request, tmp_path_factory):
    """A real-size MSM-MAE with random weights, saved as the official training checkpoint."""
    unit = request.param
    name, release = RELEASE[unit]
    net = random_model(seed=unit, unit=unit)
    path = tmp_path_factory.mktemp("w") / release / "checkpoint-100.pth"
    path.parent.mkdir()
    torch.save(official_checkpoint(net, unit=unit), path)
    enc = audio_repr.load(name, weights=path)
    clips = [noise(s, seed=i) for i, s in enumerate(LENGTHS[unit])]
    embs = enc.embed(clips, sr=16000, layers="all", batch_size=16)
    refs = [reference(net, c) for c in clips]
    return unit, net, enc, clips, embs, refs


def test_official_checkpoint_loads_and_batch_matches_per_clip_reference(model):
    unit, net, enc, clips, embs, refs = model
    assert enc.layer_names == [f"block{i}" for i in range(1, 13)] + ["output"]
    for c, e, (layers, raw12) in zip(clips, embs, refs):
        T = enc.frontend.frames_for(len(c))
        assert e.frames.shape == (-(-T // 16), 13 * 3840)
        for i, ref in enumerate(layers[:-1]):
            a, b = e.layer_slices[f"block{i + 1}"]
            assert rel_err(e.frames[:, a:b], ref) < 1e-5, f"block{i + 1}"
        a, b = e.layer_slices["block12"]
        assert rel_err(e.frames[:, a:b], raw12) < 1e-5
        a, b = e.layer_slices["output"]
        assert rel_err(e.frames[:, a:b], layers[-1]) < 1e-5
    # the standard output alone and its clip embedding (mean over time, as the original)
    for e, s, (layers, _) in zip(embs, enc.embed(clips[:1], sr=16000), refs):
        a, b = e.layer_slices["output"]                   # alone vs in the batch: fan-in 3072, depth 74
        assert_same_arithmetic(s.frames, e.frames[:, a:b], *accumulations(enc, "output"), what="output")
        assert s.layers == ["output"]
        assert rel_err(s.clip, layers[-1].mean(0)) < 1e-5


def test_frames_and_timestamps_of_13_seconds(model):
    unit, _, enc, clips, embs, _ = model
    e = embs[LENGTHS[unit].index(13.0)]
    # 13 s -> 1301 frames of 10 ms -> 82 steps of 160 ms (the last one partial, kept as the original)
    assert enc.frontend.frames_for(13 * 16000) == 1301 and e.frames.shape[0] == 82
    assert enc.frame_hop_ms() == 160.0 and enc.embedding_size == 3840
    # centre of each patch's 16 frames (centred STFT: frame k is at 10 k ms)
    assert torch.equal(e.timestamps_ms, 75.0 + 160.0 * torch.arange(82, dtype=torch.float64))
    assert [x.frames.shape[0] for x in embs] == [{0.5: 4, 2.1: 14, 5.11: 32, 13.0: 82}[s] for s in LENGTHS[unit]]


def test_fusion_is_block7_and_output(model):
    unit, _, enc, clips, embs, _ = model
    if unit != 208:
        pytest.skip("layer selection does not depend on the unit size")
    fused = enc.embed(clips[0], sr=16000, layers="fusion")
    assert fused.layers == ["block7", "output"] and enc.output_size("fusion") == 7680
    e = embs[0]
    want = torch.cat([e.frames[:, slice(*e.layer_slices["block7"])], e.frames[:, slice(*e.layer_slices["output"])]], 1)
    assert fused.frames.shape == (4, 7680)
    for name, (a, b) in fused.layer_slices.items():      # clip alone vs in the batch of three
        assert_same_arithmetic(fused.frames[:, a:b], want[:, a:b], *accumulations(enc, name), what=name)
    assert torch.allclose(fused.clip, fused.frames.mean(0))
    # the original's return_layers indices [6, 11] name the same layers
    assert enc._layers([6, -1]) == enc._layers("fusion") == ["block7", "output"]


def test_forward_on_padded_batch(model):
    """Encoder.forward (differentiable, whole padded batch, per-clip statistics) gives the same steps."""
    unit, net, enc, clips, _, refs = model
    two = clips[:2] if unit == 208 else clips[:1]
    n = max(len(c) for c in two)
    with torch.no_grad():
        out = enc(torch.stack([torch.nn.functional.pad(c, (0, n - len(c))) for c in two]), [len(c) for c in two])
    for i, c in enumerate(two):
        ref = refs[i][0][-1]
        assert rel_err(out["output"][i, : len(ref)], ref) < 1e-5


def test_fixed_statistics_and_calibrate(model):
    unit, net, enc, clips, _, _ = model
    if unit != 208:
        pytest.skip("one unit size is enough")
    c = clips[0]
    try:
        mean, std = enc.calibrate([c, torch.from_numpy(chirp(0.7))], sr=16000)
        assert not enc.normalisation.per_clip and enc.norm_stats == (mean, std)
        ref = reference(net, c, stats=(mean, std))[0][-1]
        assert rel_err(enc.embed(c, sr=16000).frames, ref) < 1e-5
    finally:
        enc.normalisation = enc.card.normalisation                  # back to per-clip statistics


def test_frontend_is_nnaudio():
    enc = audio_repr.load("msm-mae-80x208", pretrained=False)
    for x in (torch.from_numpy(chirp(1.3)), noise(0.7, seed=4)):
        ours = enc.frontend(x[None])[0]
        ref = nnaudio_lms(x)
        assert ours.shape == ref.shape == (80, len(x) // 160 + 1)
        assert (ours.exp() - ref.exp()).abs().max() <= 1e-4 * ref.exp().max()
        assert (ours - ref).abs().max() < 1e-3


@pytest.mark.parametrize("unit", [208, 512])
def test_random_init_has_the_fixed_sincos_embedding(unit):
    net = msm_mae.MSMMAEEncoder(**audio_repr.get_card(RELEASE[unit][0]).arch)
    assert torch.equal(net.pos_embed, mae_sincos(768, 5, unit // 16, True))


def test_release_folder_zip_and_errors(tmp_path):
    net = random_model(seed=3, unit=208, dim=64, depth=2, heads=4, dec_dim=32, dec_depth=1, dec_heads=4)
    folder = tmp_path / "80x208p16x16_0422"
    folder.mkdir()
    torch.save(official_checkpoint(net, epoch=80), folder / "checkpoint-80.pth")
    torch.save(official_checkpoint(net, epoch=100), folder / "checkpoint-100.pth")
    archive = tmp_path / "80x208p16x16_0422.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(folder / "checkpoint-100.pth", "80x208p16x16_0422/checkpoint-100.pth")
    want = {k: v for k, v in net.state_dict().items() if not k.startswith(("decoder", "mask_token"))}
    for src in (folder, archive, folder / "checkpoint-100.pth"):
        got = msm_mae.load_state(src)
        assert sorted(got) == sorted(want) and all(torch.equal(got[k], want[k]) for k in want)
    assert not any(k.startswith(("decoder", "mask_token")) for k in got)
    # DDP-prefixed bare state dict
    assert sorted(msm_mae.convert_state_dict({"module." + k: v for k, v in net.state_dict().items()})) == sorted(want)
    # a checkpoint of another size does not silently load
    with pytest.raises(WeightsError, match="shape mismatch"):
        audio_repr.load("msm-mae-80x208", weights=archive)
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="cannot read"):
        audio_repr.load("msm-mae-80x208", weights=bad)


def test_cards_and_manifest():
    manifest = json.loads((ROOT / "weights_manifest.json").read_text())["files"]
    for name, unit, release in [("msm-mae-80x208", 208, "80x208p16x16_0422"),
                                ("msm-mae-80x512", 512, "80x512p16x16_0425"),
                                ("msm-mae-80x512-paper", 512, "80x512p16x16_paper")]:
        card = audio_repr.get_card(name)
        net = audio_repr.load(name, pretrained=False).network      # the network states its tiling and pooling
        assert card.family == "msm_mae" and card.arch["unit_frames"] == unit and net.clip_pooling == "mean"
        assert net.tiling.chunk_frames == net.tiling.min_piece_frames == unit and net.tiling.independent_windows
        assert card.normalisation.per_clip and card.frontend["n_fft"] == 400 and card.frontend["mel_scale"] == "slaney"
        assert card.weights == f"{release}.zip"
        entry = manifest[card.weights]
        assert entry["url"].startswith("https://github.com/nttcslab/msm-mae/releases/download/")
        assert release in entry["url"]


def test_per_clip_statistics_of_long_audio_in_blocks():
    """Per-clip normalisation statistics of long audio are accumulated block by block (bounded memory),
    and equal the whole clip's features' mean and Bessel-corrected std (the original's x.std())."""
    enc = audio_repr.load("msm-mae-80x208", pretrained=False)
    g = torch.Generator().manual_seed(0)
    wav = 0.1 * torch.randn(16000 * 50, generator=g) + 0.3 * torch.sin(torch.arange(16000 * 50) / 7.0)
    feats = enc._features(wav).double()
    assert feats.shape[-1] > 4096                                   # more than one block
    mean, std = enc._clip_stats(wav)
    assert abs(mean - float(feats.mean())) < 1e-9 * abs(float(feats.mean()))
    assert abs(std - float(feats.std())) < 1e-9 * float(feats.std())
