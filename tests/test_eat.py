"""EAT / SSLAM against a re-statement of the original (tests/reference_eat.py): seeded random weights in fairseq's
pre-training checkpoint (student, EMA teacher, decoder, cfg, optimiser and trainer state) and in the Hub's layout."""

from dataclasses import replace

import numpy as np
import pytest
import torch

import audio_repr
import audio_repr.inference.loader
from audio_repr.models import eat, layer_table
from audio_repr.weights import WeightsError
from conftest import accumulations, assert_same_arithmetic, chirp, noise, rel_err
from reference_eat import (Data2VecMulti, fairseq_checkpoint, frames_and_cls, hub_state, kaldi_fbank, model_cfg,
                           preprocess)

SMALL = dict(dim=64, depth=2, heads=4)
ARCH = dict(embed_dim=64, depth=2, num_heads=4)


def _clip(seconds, seed):
    return torch.from_numpy(chirp(seconds, f0=150.0, f1=7500.0, amp=0.3)) + noise(seconds, seed=seed) * 0.1


def _hear_checkpoint(folder, name):
    """Random weights of the released EAT-base in fairseq's checkpoint layout (tests/test_hear.py)."""
    path = folder / "EAT-base_epoch30_pt.pt"
    fairseq_checkpoint(Data2VecMulti(seed=7), path)
    return path


#: tests/test_hear.py's maker for this family: one model, random weights in the original layout
HEAR_CHECKPOINT = ("eat-base", _hear_checkpoint)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model = Data2VecMulti(seed=7, **SMALL)
    path = tmp_path_factory.mktemp("eat") / "EAT-base_epoch30_pt.pt"
    fairseq_checkpoint(model, path)
    return model, path


def small_load(monkeypatch, weights, name="eat-base"):
    card = audio_repr.get_card(name)
    small = replace(card, arch={**card.arch, **ARCH}, default_layer="block2", fusion_layers=("block1", "block2"))
    monkeypatch.setattr(audio_repr.inference.loader, "get_card", lambda n: small if n == name else card)
    return audio_repr.load(name, weights=weights)


def reference(model, wav):
    x = preprocess(wav)
    last, outs = model.extract_features(x, layers=True)
    return [frames_and_cls(o) for o in outs]


def test_matches_the_original_alone_and_next_to_a_ten_times_longer_clip(saved, monkeypatch):
    model, path = saved
    enc = small_load(monkeypatch, path)
    short, longer = _clip(0.97, 1), _clip(9.7, 2)                    # neither a multiple of 16 frames
    batch = enc.embed([short, longer], sr=16000, layers="all", batch_size=2)
    alone = [enc.embed(w, sr=16000, layers="all", batch_size=1) for w in (short, longer)]
    assert batch[0].layers == ["block1", "block2", "block2_mean"]
    fan_in, depth = accumulations(enc)
    for wav, b, a in zip((short, longer), batch, alone):
        ref = reference(model, wav)
        n = kaldi_fbank(wav[None]).shape[0]
        assert n % 16 and a.frames.shape[0] == -(-n // 16) == ref[0][0].shape[0]
        for name, (frames, cls) in zip(("block1", "block2"), ref):
            assert rel_err(a.layer(name), frames) < 1e-4 and rel_err(b.layer(name), frames) < 1e-4, name
        # the clip: each block's [CLS], then the frame mean (block2_mean)
        d = enc.layer_dims["block1"]
        assert rel_err(a.clip[:d], ref[0][1]) < 1e-4 and rel_err(a.clip[d: 2 * d], ref[1][1]) < 1e-4
        assert rel_err(a.clip[2 * d:], ref[1][0].mean(dim=0)) < 1e-4
        assert torch.equal(a.layer("block2_mean"), a.layer("block2"))
        assert_same_arithmetic(b.frames, a.frames, fan_in, depth, what="eat batch")
        assert_same_arithmetic(b.clip, a.clip, fan_in, depth, what="eat batch clip")
        assert np.allclose(a.timestamps_ms.numpy(), 12.5 + 10 * (16 * np.arange(a.frames.shape[0]) + 7.5))
    d = enc.embed(short, sr=16000)                                  # default: the last block, its [CLS]
    assert d.layers == ["block2"] and rel_err(d.clip, reference(model, short)[1][1]) < 1e-4


def test_long_audio_windows_of_1024_frames(saved, monkeypatch):
    model, path = saved
    enc = small_load(monkeypatch, path)
    wav = _clip(23.1, 3)
    e = enc.embed(wav, sr=16000)
    fb = kaldi_fbank((wav - wav.mean())[None])
    n = fb.shape[0]
    frames, clips, weights = [], [], []
    for s in range(0, n, 1024):
        piece = fb[s: s + 1024]
        m = piece.shape[0]
        piece = torch.nn.functional.pad(piece, (0, 0, 0, -(-m // 16) * 16 - m))
        x = ((piece - eat.FBANK_MEAN) / (2 * eat.FBANK_STD))[None, None]
        f, c = frames_and_cls(model.extract_features(x))
        frames.append(f)
        clips.append(c)
        weights.append(m)
    ref = torch.cat(frames)
    w = torch.tensor(weights, dtype=torch.float32)
    assert e.frames.shape == ref.shape and rel_err(e.frames, ref) < 1e-4
    assert rel_err(e.clip, (torch.stack(clips) * (w / w.sum())[:, None]).sum(0)) < 1e-4
    assert np.allclose(np.diff(e.timestamps_ms.numpy()), 160.0)


def test_hub_and_fairseq_layouts_give_the_same_weights(saved, tmp_path):
    from safetensors.torch import save_file

    model, path = saved
    fair = eat.load_state(path)
    hub = tmp_path / "model.safetensors"
    save_file(hub_state(model), str(hub))
    assert fair.keys() == eat.load_state(hub).keys()
    for k, v in eat.load_state(hub).items():
        assert torch.equal(v, fair[k]), k
    net = eat.EATNet(**ARCH)
    net.load_state_dict(fair)                                      # strict: every parameter, nothing else
    # the student, not the EMA teacher
    assert torch.equal(fair["blocks.0.attn.qkv.weight"], model.blocks[0].attn.qkv.weight)
    # a table of another max_length (512 steps here) loads row for row
    other = Data2VecMulti(seed=7, max_length=512, **SMALL)
    assert other.modality_encoders["IMAGE"].fixed_positional_encoder.positions.shape[1] == 512 * 8
    save_file(hub_state(other), str(tmp_path / "short_table.safetensors"))
    net2 = eat.EATNet(**ARCH)
    net2.load_state_dict(eat.load_state(tmp_path / "short_table.safetensors"))
    assert torch.equal(net2.pos_embed, net.pos_embed)
    # a fine-tuned Hub checkpoint's head is dropped
    ft = dict(hub_state(model), **{"model.fc_norm.weight": torch.ones(64), "model.head.weight": torch.zeros(527, 64)})
    save_file(ft, str(tmp_path / "ft.safetensors"))
    assert eat.load_state(tmp_path / "ft.safetensors").keys() == fair.keys()


def test_other_networks_are_refused(tmp_path):
    model = Data2VecMulti(seed=8, **SMALL)
    cfg = {"model": model_cfg(**SMALL)}
    cfg["model"]["layer_norm_first"] = True
    fairseq_checkpoint(model, tmp_path / "prenorm.pt", cfg=cfg)
    with pytest.raises(WeightsError, match="layer_norm_first"):
        eat.load_state(tmp_path / "prenorm.pt")
    torch.save({"model": {"encoder.layers.0.fc1.weight": torch.zeros(2, 2)}, "cfg": {}}, tmp_path / "beats.pt")
    with pytest.raises(WeightsError, match="not an EAT checkpoint"):
        eat.load_state(tmp_path / "beats.pt")


def test_large_and_sslam_tables_on_the_meta_device():
    table = layer_table("eat-large")
    assert list(table) == [f"block{i + 1}" for i in range(24)] + ["block24_mean"]
    assert set(table.values()) == {1024}
    assert audio_repr.get_card("eat-large").fusion_layers == ("block14", "block24")
    assert layer_table("sslam-base") == layer_table("eat-base")
    assert len(layer_table("eat-base")) == 13


def test_positional_table_is_data2vecs():
    from reference_eat import get_2d_sincos_flexible

    ours = eat.sincos_table(64, 768, 8)
    assert torch.equal(ours, torch.from_numpy(get_2d_sincos_flexible(64, (768, 8))).float())
