"""M2D against a re-statement of its original runtime (tests/reference_m2d.py): random weights saved in the original
checkpoint layouts under the original run-folder names, real recordings of 0.5 s, 6 s and 30 s."""

import json
import zipfile
from dataclasses import replace

import numpy as np
import pytest
import torch

import audio_repr
from audio_repr.models import m2d
from audio_repr.weights import WeightsError
from conftest import AUDIO, ROOT, accumulations, assert_same_arithmetic, rel_err
from reference_m2d import PortableRuntime, encoder_only_state, random_training_model, training_checkpoint

RUN = "m2d_vit_base-80x608p16x16-221006-mr7"
NORM_STATS = (-6.25, 3.875)                     # not the default [-7.1, 4.2]: the checkpoint's must be used
SECONDS = (0.5, 6.0, 30.0)
SMALL = dict(dim=64, depth=2, heads=4)          # a narrow, shallow ViT for the layout and geometry tests


def real_audio(seconds=30.0):
    """16 kHz real recordings (cat, dog, spoken digits of ../shared/audio; else examples/example.wav), joined
    end to end to ``seconds``."""
    if (AUDIO / "cat-meow-44k.wav").is_file():
        files = [AUDIO / "cat-meow-44k.wav", AUDIO / "dog-bark-44k-stereo.wav"]
        files += sorted((AUDIO / "fsdd" / "recordings").glob("*.wav"))[::97]
    else:
        files = [ROOT / "examples" / "example.wav"]
    parts, n = [], 0
    while n < seconds * 16000:
        for f in files:
            wav, _ = audio_repr.load_audio(f, 16000)
            parts.append(wav)
            n += len(wav)
    return torch.cat(parts)[: int(seconds * 16000)]


def clips():
    wav = real_audio(max(SECONDS) + 1.0)
    return [wav[:8000], wav[16000: 16000 + 96000], wav[:480000]]       # 0.5 s, 6 s (another part), 30 s


def save_run(tmp, run, net, name="checkpoint-300.pth", **kw):
    folder = tmp / run
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(training_checkpoint(net, **kw), folder / name)
    return folder / name


def small_load(monkeypatch, model, weights, **arch):
    """``audio_repr.load`` of a card whose network is ``arch`` (a smaller ViT than the card's)."""
    card = audio_repr.get_card(model)
    small = replace(card, arch={**card.arch, **arch})
    monkeypatch.setattr("audio_repr.inference.loader.get_card", lambda name: small if name == model else card)
    return audio_repr.load(model, weights=weights)


def small_arch(dim, depth, heads):
    return dict(embed_dim=dim, depth=depth, num_heads=heads)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A real-size ViT-Base M2D with random weights and non-default norm_stats, saved as the training
    checkpoint in its run folder, loaded by us and by the reference; the three clips embedded in one batch."""
    net = random_training_model(seed=7, norm_stats=NORM_STATS, target_depth=1)
    path = save_run(tmp_path_factory.mktemp("w"), RUN, net)
    del net
    enc = audio_repr.load("m2d-vit-base", weights=path)
    ref = PortableRuntime(path)
    cs = clips()
    embs = enc.embed(cs, sr=16000, layers="all", batch_size=16)
    return enc, ref, cs, embs


def test_every_layer_equals_the_original_in_a_batch(base):
    enc, ref, cs, embs = base
    assert enc.layer_names == [f"block{i}" for i in range(1, 13)] + ["output"]
    for c, e in zip(cs, embs):
        layers, raw12 = ref.encode(c, layers=True)
        T = enc.frontend.frames_for(len(c))
        assert e.frames.shape == (-(-T // 16), 13 * 3840) and layers[-1].shape[0] == e.frames.shape[0]
        for i, want in enumerate(layers[:-1]):
            assert rel_err(e.layer(f"block{i + 1}"), want) < 1e-5, (len(c), i + 1)
        assert rel_err(e.layer("block12"), raw12) < 1e-5
        assert rel_err(e.layer("output"), layers[-1]) < 1e-5


def test_frames_and_clip_equal_encode_and_get_scene_embeddings(base):
    enc, ref, cs, embs = base
    assert enc.norm_stats == tuple(float(v) for v in np.float32(NORM_STATS))   # the checkpoint's, not the card's
    for c, b in zip(cs, embs):
        alone = enc.embed(c, sr=16000, batch_size=1)
        assert alone.layers == ["output"] and alone.frames.shape[1] == 3840
        assert rel_err(alone.frames, ref.encode(c)) < 1e-5
        assert rel_err(alone.clip, ref.get_scene_embeddings(c)) < 1e-5
        # alone vs in the padded batch of three (a 0.5 s unit beside whole 6.08 s units): float reordering only
        assert_same_arithmetic(alone.frames, b.layer("output"), *accumulations(enc, "output"), what="output")
        assert_same_arithmetic(alone.clip, b.layer("output").mean(0), *accumulations(enc, "output"), what="clip")


def test_steps_and_timestamps(base):
    enc, _, cs, embs = base
    # 0.5 s: 51 frames -> 4 steps; 6 s: 601 -> 38; 30 s: 3001 frames = 4 units of 608 + 569 -> 188 steps
    assert [e.frames.shape[0] for e in embs] == [4, 38, 188]
    assert enc.frame_hop_ms() == 160.0 and enc.embedding_size == 3840
    assert torch.equal(embs[2].timestamps_ms, 75.0 + 160.0 * torch.arange(188, dtype=torch.float64))
    assert enc.network.tiling.chunk_frames == 608 and enc.network.tiling.min_piece_frames == 0


def test_fusion_is_block7_and_output(base):
    enc, _, cs, embs = base
    fused = enc.embed(cs[0], sr=16000, layers="fusion")
    assert fused.layers == ["block7", "output"] and fused.frames.shape == (4, 7680)
    for name in fused.layers:
        assert_same_arithmetic(fused.layer(name), embs[0].layer(name), *accumulations(enc, name), what=name)
    assert torch.allclose(fused.clip, fused.frames.mean(0))


def test_forward_on_a_padded_batch_of_several_units(tmp_path, monkeypatch):
    """Encoder.forward (whole padded batch, units of every row at once, short last units masked) equals the
    original on each clip; so does embed with the 40 ms model's 16x4 patches (units of 200 frames)."""
    net = random_training_model(seed=2, norm_stats=(-7.5, 4.5), **SMALL)
    path = save_run(tmp_path, RUN, net)
    enc = small_load(monkeypatch, "m2d-vit-base", path, **small_arch(**SMALL))
    ref = PortableRuntime(path, **SMALL)
    wav = real_audio(14.0)
    two = [wav[:int(13.3 * 16000)], wav[int(0.7 * 16000):int(2.9 * 16000)]]   # 1331 and 221 frames
    with torch.no_grad():
        out = enc(torch.stack([torch.nn.functional.pad(c, (0, len(two[0]) - len(c))) for c in two]),
                  [len(c) for c in two])
    for i, c in enumerate(two):
        want = ref.encode(c)
        assert rel_err(out["output"][i, : len(want)], want) < 1e-5
    monkeypatch.undo()

    run40 = "m2d_vit_base-80x200p16x4-230529"
    net = random_training_model(seed=4, input_size=(80, 200), patch=(16, 4), norm_stats=(-7.0, 4.0), **SMALL)
    path = save_run(tmp_path, run40, net)
    enc = small_load(monkeypatch, "m2d-vit-base-40ms", path, **small_arch(**SMALL))
    ref = PortableRuntime(path, **SMALL)
    cs = [wav[:8000], wav[:96000]]                       # 51 frames; 601 = 3 units of 200 + 1 frame
    embs = enc.embed(cs, sr=16000, layers="all")
    for c, e in zip(cs, embs):
        layers, raw = ref.encode(c, layers=True)
        assert e.frames.shape[0] == -(-enc.frontend.frames_for(len(c)) // 4)
        assert rel_err(e.layer("block1"), layers[0]) < 1e-5 and rel_err(e.layer("block2"), raw) < 1e-5
        assert rel_err(e.layer("output"), layers[-1]) < 1e-5
        assert rel_err(e.clip[slice(*e.layer_slices["output"])], layers[-1].mean(0)) < 1e-5
    assert enc.frame_hop_ms() == 40.0
    assert torch.equal(embs[0].timestamps_ms, 15.0 + 40.0 * torch.arange(13, dtype=torch.float64))


def test_every_release_layout_loads(tmp_path):
    """The zip, the run folder (newest epoch), the .pth, the encoder-only weights, runtime/EVAR prefixes; the
    training-only tensors (target encoder, decoder, offline predictor, CLAP projectors) are dropped."""
    for extra in (None, "as", "clap"):
        net = random_training_model(seed=5, norm_stats=(-6.0, 4.0), extra=extra, **SMALL)
        run = {None: RUN, "as": "m2d_as_vit_base-80x608p16x16-240213",
               "clap": "m2d_clap_vit_base-80x608p16x16-240128"}[extra]
        root = tmp_path / str(extra)
        save_run(root, run, net, name="checkpoint-250.pth", epoch=250)
        pth = save_run(root, run, net, name="checkpoint-300.pth")
        archive = root / f"{run}.zip"
        with zipfile.ZipFile(archive, "w") as z:
            z.write(pth, f"{run}/checkpoint-300.pth")
        ref = PortableRuntime(pth, **SMALL)
        want = encoder_only_state(ref)
        enconly = root / f"{run}_enconly" / "checkpoint-300.pth"
        enconly.parent.mkdir()
        torch.save(want, enconly)
        evar = root / run / "weights_ep10.pth"
        torch.save({"module.ar.runtime.backbone." + k: v for k, v in want.items()}, evar)
        runtime = root / run / "runtime.pth"
        torch.save({"backbone." + k: v for k, v in want.items()}, runtime)
        for src in (archive, pth.parent, pth, enconly, evar, runtime):
            got = m2d.load_state(src)
            assert sorted(got) == sorted(want), src
            assert all(torch.equal(got[k], want[k]) for k in want), src
    # an old checkpoint without norm_stats gets the original's default
    old = random_training_model(seed=6, **SMALL)
    got = m2d.load_state(save_run(tmp_path / "old", RUN, old, drop_norm_stats=True))
    assert torch.equal(got["norm_stats"], torch.tensor([-7.1, 4.2]))


def test_old_checkpoint_uses_the_default_statistics(tmp_path, monkeypatch):
    path = save_run(tmp_path, RUN, random_training_model(seed=8, **SMALL), drop_norm_stats=True)
    enc = small_load(monkeypatch, "m2d-vit-base", path, **small_arch(**SMALL))
    assert enc.norm_stats == tuple(float(v) for v in np.float32([-7.1, 4.2]))
    assert audio_repr.load("m2d-vit-base", pretrained=False).norm_stats == (-7.1, 4.2)


def test_run_name_is_parsed_and_checked(tmp_path):
    assert m2d.parse_run_name(RUN) == ([80, 608], [16, 16], "16k", "m2d_vit_base")
    assert m2d.parse_run_name("m2d_as_vit_base-80x608p16x16p32k-240413_enconly")[2] == "32k"
    assert m2d.parse_run_name("checkpoint-300") is None
    net = random_training_model(seed=9, **SMALL)
    with pytest.raises(WeightsError, match="80x200 input in 16x4 patches"):         # the name disagrees
        m2d.load_state(save_run(tmp_path, "m2d_vit_base-80x200p16x4-230529", net))
    with pytest.raises(WeightsError, match="32kHz"):
        m2d.load_state(save_run(tmp_path, "m2d_as_vit_base-80x608p16x16p32k-240413", net))
    # a checkpoint of another input size does not load into this card
    with pytest.raises(WeightsError, match="shape mismatch"):
        audio_repr.load("m2d-vit-base", weights=save_run(tmp_path, RUN, net))


def test_cards_and_manifest():
    manifest = json.loads((ROOT / "weights_manifest.json").read_text())["files"]
    msm = audio_repr.get_card("msm-mae-80x512")
    for name, run in [("m2d-vit-base", RUN), ("m2d-as-vit-base", "m2d_as_vit_base-80x608p16x16-240213"),
                      ("m2d-clap-vit-base", "m2d_clap_vit_base-80x608p16x16-240128"),
                      ("m2d-vit-base-40ms", "m2d_vit_base-80x200p16x4-230529")]:
        card = audio_repr.get_card(name)
        size, patch, _, _ = m2d.parse_run_name(run)
        assert card.family == ("m2d_clap" if "clap" in name else "m2d")
        assert card.frontend == msm.frontend and card.licence.startswith("NTT")
        assert card.arch["unit_frames"] == size[1] and tuple(card.arch["patch_size"]) == tuple(patch)
        assert not card.normalisation.per_clip and card.norm_stats == (-7.1, 4.2)
        assert card.fusion_layers == ("block7", "output") and card.weights == f"{run}.zip"
        assert manifest[card.weights]["url"] == f"https://github.com/nttcslab/m2d/releases/download/v0.1.0/{run}.zip"
    assert audio_repr.get_card("m2d-vit-base").published["ESC-50"] == 89.8
