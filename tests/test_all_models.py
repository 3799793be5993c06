"""Every registered model, random weights: what the encoder promises for each, read from the registry (a new
family is covered by registering it). Output sizes, timestamps on the model's frame grid, batch equals alone,
every layer readable, ``forward`` agrees with ``embed``, the HEAR module exists and says the same."""

import importlib
import pkgutil

import numpy as np
import pytest
import torch

import audio_repr
from audio_repr.hear import hear_sample_rate, module_name
from conftest import accumulations, assert_same_arithmetic, noise

MODELS = audio_repr.list_models()


@pytest.fixture(scope="module", params=MODELS)
def enc(request):
    torch.manual_seed(0)
    return audio_repr.load(request.param, pretrained=False)


SECONDS = (1.7, 12.3)       # not multiples of anything; the longer one past a 10.24 s window / piece


@pytest.fixture(scope="module")
def runs(enc):
    """The two clips embedded in one batch and each alone (computed once per model)."""
    clips = [noise(s, seed=i + 1) for i, s in enumerate(SECONDS)]
    return clips, enc.embed(clips, sr=16000, batch_size=3), [enc.embed(c, sr=16000, batch_size=1) for c in clips]


def test_sizes_and_timestamps(enc, runs):
    _, batch, _ = runs
    hop = enc.frame_hop_ms()
    for e, seconds in zip(batch, SECONDS):
        T = e.frames.shape[0]
        assert e.frames.shape == (T, enc.embedding_size) and e.clip.shape == (enc.embedding_size,)
        assert e.frames.dtype == e.clip.dtype == torch.float32 and torch.isfinite(e.frames).all()
        assert e.layers == [enc.card.default_layer] and e.duration_s == pytest.approx(seconds)
        assert T >= 1 and e.timestamps_ms.shape == (T,)
        if T > 1:                                           # on the model's grid, from indices: no drift
            assert np.allclose(np.diff(e.timestamps_ms.numpy()), hop, rtol=0, atol=1e-9)
        assert 0 <= e.timestamps_ms[0] < 1000 * seconds and e.timestamps_ms[-1] < 1000 * seconds + hop
    # the frame count follows the audio: ~ duration / hop (the models' own edge rules differ by a few frames)
    assert abs(batch[1].frames.shape[0] - 12300 / hop) <= 1100 / hop + 2


def test_batch_equals_alone(enc, runs):
    clips, batch, alone = runs
    fan_in, depth = accumulations(enc)
    for b, a in zip(batch, alone):
        assert b.frames.shape == a.frames.shape
        assert torch.equal(b.timestamps_ms, a.timestamps_ms)
        assert_same_arithmetic(b.frames, a.frames, fan_in, depth, what=f"{enc.name} frames")
        assert_same_arithmetic(b.clip, a.clip, fan_in, depth, what=f"{enc.name} clip")


def test_every_layer_is_readable(enc):
    x = noise(2.2, seed=3)
    e = enc.embed(x, sr=16000, layers="all")
    assert e.layers == enc.layer_names and e.frames.shape[1] == enc.output_size("all")
    for name, dim in enc.layer_dims.items():
        assert e.layer(name).shape == (e.frames.shape[0], dim), name
    first, last = enc.layer_names[0], enc.layer_names[-1]
    single = enc.embed(x, sr=16000, layers=[first, last])
    assert single.layers == [first, last] and single.frames.shape[1] == enc.layer_dims[first] + enc.layer_dims[last]
    fused = enc.embed(x, sr=16000, layers="fusion")
    assert fused.frames.shape[1] == enc.output_size("fusion") == sum(enc.layer_dims[n] for n in enc.card.fusion_layers)


def test_forward_agrees_with_embed(enc):
    """The differentiable ``forward`` (a padded batch at the model's rate) gives ``embed``'s frames for a
    clip that fits in one piece."""
    wav = noise(2.2, seed=4)
    e = enc.embed(wav, sr=enc.sample_rate)                  # the same samples forward() reads at the model rate
    outs = enc(torch.stack([wav, torch.cat([wav[:16000], torch.zeros(len(wav) - 16000)])]), [len(wav), 16000])
    got = outs[enc.card.default_layer][0, : e.frames.shape[0]].detach().float()
    fan_in, depth = accumulations(enc)
    # per-clip statistics: embed accumulates them in float64, forward in float32 on the batch
    tol = 1e-4 if enc.normalisation.per_clip else None
    if tol is None:
        assert_same_arithmetic(got, e.frames, fan_in, depth, what=f"{enc.name} forward")
    else:
        assert float((got - e.frames).abs().max()) <= tol * float(e.frames.abs().max())


def test_hear_module_matches_the_model(enc):
    mod = importlib.import_module(module_name(enc.name))
    assert mod.sample_rate == hear_sample_rate(enc.sample_rate)     # the model's, or an accepted one above it
    assert mod.scene_embedding_size == mod.timestamp_embedding_size == enc.embedding_size
    assert callable(mod.load_model) and callable(mod.get_scene_embeddings) and callable(mod.get_timestamp_embeddings)


def test_hear_modules_and_models_match_both_ways():
    import audio_repr.hear as H

    modules = {m.name for m in pkgutil.iter_modules(H.__path__)}
    assert modules == {module_name(n).rsplit(".", 1)[1] for n in MODELS}


def test_layer_table_is_the_networks_without_building_it(enc):
    """HEAR sizes and the command line's layer checks read the layer table: the network built on the meta
    device (no memory, no weights), which must state the same layers as the real one."""
    from audio_repr.models import _meta_network, layer_table

    assert layer_table(enc.name) == enc.layer_dims
    # weights stay on the meta device (a fixed table made from numpy, as MSM-MAE's positional one, is real but small)
    params = list(_meta_network(enc.name).parameters())
    real = sum(p.numel() for p in params if p.device.type != "meta")
    assert real < 0.01 * sum(p.numel() for p in params)


def test_saved_embedding_splits_by_layer(tmp_path):
    """A saved file keeps each layer's columns (``layer_slices``), so it can be split by layer after loading."""
    enc = audio_repr.load("byola-v1-512", pretrained=False)
    e = enc.embed(noise(1.5, seed=5), sr=16000, layers="fusion")
    back = audio_repr.Embedding.load(e.save(tmp_path / "x.npz"))
    assert back.layers == e.layers and back.layer_slices == e.layer_slices
    for name in e.layers:
        assert torch.equal(back.layer(name), e.layer(name)) and back.layer(name).shape[1] == enc.layer_dims[name]
    assert torch.equal(back.timestamps_ms, e.timestamps_ms) and torch.equal(back.clip, e.clip)
