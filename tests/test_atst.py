"""ATST-Frame against a re-statement of the original (tests/reference_atst.py): seeded random weights in the
Lightning training layout (teacher and student, projector, predictor, BatchNorm buffers), saved as Lightning saves
them (hyper-parameters as an ``AttributeDict``, optimizer state, callbacks, numpy), read without Lightning."""

from dataclasses import replace

import numpy as np
import pytest
import torch

import audio_repr
import audio_repr.inference.loader
from audio_repr.models import atst
from audio_repr.weights import WeightsError
from conftest import accumulations, assert_same_arithmetic, chirp, noise, rel_err
from reference_atst import (TrainingFrameATST, get_scene_embedding, get_timestamp_embedding, lightning_checkpoint,
                            mel_db, mel_power)

SMALL = dict(dim=64, depth=2, heads=4)           # the original FrameAST with a narrow, shallow stack
ARCH = dict(embed_dim=64, depth=2, num_heads=4)


def _clip(seconds, seed):
    """A chirp with noise and a quiet stretch, so that the 80 dB floor binds in some mel bands."""
    x = torch.from_numpy(chirp(seconds, f0=200.0, f1=7000.0, amp=0.3)) + noise(seconds, seed=seed) * 0.05
    x[: len(x) // 5] *= 1e-4
    return x


def _hear_checkpoint(folder, name):
    """Random weights of the released ATST-Frame (ViT-Base) in Lightning's training layout (tests/test_hear.py)."""
    path = folder / "atstframe_base.ckpt"
    lightning_checkpoint(TrainingFrameATST(seed=3), path=path)
    return path


#: tests/test_hear.py's maker for this family: one model, random weights in the original layout
HEAR_CHECKPOINT = ("atst-frame", _hear_checkpoint)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    module = TrainingFrameATST(seed=3, **SMALL)
    path = tmp_path_factory.mktemp("atst") / "atstframe_base.ckpt"
    lightning_checkpoint(module, path=path)
    return module, path


def small_load(monkeypatch, weights, **arch):
    card = audio_repr.get_card("atst-frame")
    small = replace(card, arch={**card.arch, **ARCH, **arch}, fusion_layers=("block1", "block2"),
                    default_layer="block2")
    monkeypatch.setattr(audio_repr.inference.loader, "get_card", lambda name: small if name == "atst-frame" else card)
    return audio_repr.load("atst-frame", weights=weights)


def test_front_end_is_torchaudios_mel_in_db():
    fe = atst.ATSTLogMel(**atst.FRONTEND)
    wav = _clip(1.3, 1)
    ours = fe(wav[None])[0]
    ref = 10.0 * torch.log10(torch.clamp(mel_power(wav[None, None])[0, 0], min=1e-10))
    assert ours.shape == ref.shape == (64, len(wav) // 160 + 1)
    assert float((ours - ref).abs().max()) < 1e-3                  # dB: float32 STFT and mel sums
    # the normalisation is the original's MinMax
    enc = audio_repr.load("atst-frame", pretrained=False)
    n = enc.normalisation
    assert (0.0 - n.mean) / n.divisor == pytest.approx((0.0 - atst.DB_MIN) / (atst.DB_MAX - atst.DB_MIN) * 2 - 1)


def test_matches_the_original_alone_and_next_to_a_ten_times_longer_clip(saved, monkeypatch):
    module, path = saved
    enc = small_load(monkeypatch, path)
    short, longer = _clip(0.93, 1), _clip(9.3, 2)
    for wav in (short, longer):
        mel = mel_db(wav[None, None])
        assert float((mel == mel.amin()).float().mean()) > 0.01     # the 80 dB floor binds: it is tested
    batch = enc.embed([short, longer], sr=16000, layers="all", batch_size=2)
    alone = [enc.embed(w, sr=16000, layers="all", batch_size=1) for w in (short, longer)]
    fan_in, depth = accumulations(enc)
    for wav, b, a in zip((short, longer), batch, alone):
        ref = get_timestamp_embedding(wav[None], module.teacher, n_blocks=2)[0]
        assert b.frames.shape == ref.shape == ((len(wav) // 160 + 1) // 4, 128)
        assert rel_err(a.frames, ref) < 1e-4 and rel_err(b.frames, ref) < 1e-4
        scene = get_scene_embedding(wav[None], module.teacher, n_blocks=2)[0]
        assert rel_err(a.clip, scene) < 1e-4
        assert_same_arithmetic(b.frames, a.frames, fan_in, depth, what="atst batch")
        assert_same_arithmetic(b.clip, a.clip, fan_in, depth, what="atst batch clip")
        assert np.allclose(a.timestamps_ms.numpy(), 15.0 + 40.0 * np.arange(a.frames.shape[0]))
    # the default is the last block, through norm_frame
    d = enc.embed(short, sr=16000)
    ref = get_timestamp_embedding(short[None], module.teacher, n_blocks=1)[0]
    assert d.layers == ["block2"] and rel_err(d.frames, ref) < 1e-4


def test_long_audio_windows_of_250_patches(saved, monkeypatch):
    """Past 10 s: windows of 1000 frames (the last up to 1003), each with its own 80 dB floor (the original takes
    the whole file's; its 1001-frame chunks drop a frame every 10 s)."""
    module, path = saved
    enc = small_load(monkeypatch, path)
    wav = _clip(23.57, 4)
    e = enc.embed(wav, sr=16000, layers="all")
    n = len(wav) // 160 + 1
    assert e.frames.shape[0] == n // 4
    assert np.allclose(np.diff(e.timestamps_ms.numpy()), 40.0)
    power = mel_power(wav[None, None])
    for start, stop in ((0, 1003), (1000, 2003), (2000, n)):
        db = 10.0 * torch.log10(torch.clamp(power[..., start:stop], min=1e-10))
        db = torch.maximum(db, db.amax() - 80.0)
        mel = (db - atst.DB_MIN) / (atst.DB_MAX - atst.DB_MIN) * 2 - 1
        ref = module.teacher.get_intermediate_layers(mel, torch.tensor([stop - start]), n=2, scene=False)[0]
        own = min(250, ref.shape[0]) if stop < n else ref.shape[0]
        got = e.frames[start // 4: start // 4 + own]
        assert rel_err(got, ref[:own].detach()) < 1e-4, (start, stop)


def test_checkpoint_is_read_without_lightning_and_uses_the_teacher(saved, tmp_path):
    module, path = saved
    # the file names Lightning's class (not importable here), and numpy, as a real Lightning checkpoint does
    assert "lightning_fabric.utilities.data.AttributeDict" in torch.serialization.get_unsafe_globals_in_checkpoint(path)
    with torch.serialization.safe_globals([(dict, "lightning_fabric.utilities.data.AttributeDict")]):
        with pytest.raises(Exception):
            torch.load(path, weights_only=True)                    # numpy's arrays: not allowed by default
    state = atst.load_state(path)
    net = atst.FrameATSTNet(**ARCH)
    net.load_state_dict(state)                                     # strict: every parameter, nothing else
    teacher = module.model.teacher.encoder
    assert torch.equal(state["blocks.0.attn.qkv.weight"], teacher.blocks[0].attn.qkv.weight)
    assert not torch.equal(state["blocks.0.attn.qkv.weight"], module.model.student.encoder.blocks[0].attn.qkv.weight)
    # the pytorch_lightning 1.x name of AttributeDict is read too
    other = tmp_path / "pl1.ckpt"
    lightning_checkpoint(TrainingFrameATST(seed=4, **SMALL), attribute_dict_module="pytorch_lightning.utilities.parsing",
                         path=other)
    assert set(atst.load_state(other)) == set(state)


def test_other_networks_are_refused(tmp_path):
    bad = tmp_path / "interp.ckpt"
    lightning_checkpoint(TrainingFrameATST(seed=5, **SMALL), hparams=dict(pos_type="interpolate"), path=bad)
    with pytest.raises(WeightsError, match="pos_type"):
        atst.load_state(bad)
    clip = tmp_path / "atst_clip.ckpt"
    torch.save({"state_dict": {"model.teacher.encoder.cls_token": torch.zeros(1, 1, 8)}}, clip)
    with pytest.raises(WeightsError, match="not an ATST-Frame checkpoint"):
        atst.load_state(clip)


def test_rows_shorter_than_a_patch_are_refused():
    net = atst.FrameATSTNet(**ARCH)
    with pytest.raises(ValueError, match="needs >= 4 frames"):
        net(torch.zeros(2, 64, 8), torch.tensor([8, 3]))


def test_window_edges_never_leave_a_piece_without_a_patch(saved, monkeypatch):
    """Around the 1000-frame window edges every clip gives floor(frames / 4) frames on one 40 ms grid (the last window
    takes up to 1003 frames, so none is left with fewer than 4)."""
    _, path = saved
    enc = small_load(monkeypatch, path)
    for frames in (1000, 1001, 1003, 1004, 1007, 2003, 2004, 2007):
        wav = noise((frames - 1) * 0.01 + 1e-4, seed=frames)          # centred STFT: 1 + samples // 160 frames
        assert len(wav) // 160 + 1 == frames
        e = enc.embed(wav, sr=16000)
        assert e.frames.shape[0] == frames // 4 and torch.isfinite(e.frames).all(), frames
        assert np.allclose(e.timestamps_ms.numpy(), 15.0 + 40.0 * np.arange(frames // 4))
