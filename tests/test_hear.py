"""HEAR 2021 API: every model has its module; hearvalidator passes on each family that has a
checkpoint maker in the original format (random weights made by the test)."""

import importlib
import warnings

import pytest
import torch

import audio_repr
from audio_repr.hear import module_name
from reference_byola import OriginalV1, OriginalV2, randomise


def _byola_v1(path, name):
    d = int(name.rsplit("-", 1)[1])
    torch.save(randomise(OriginalV1(d)).state_dict(), path)


def _byola_v2(path, name):
    torch.save(randomise(OriginalV2()).state_dict(), path)


CHECKPOINT_MAKERS = {"byola-v1-512": _byola_v1, "byola-v2-2048": _byola_v2}


@pytest.mark.parametrize("name", audio_repr.list_models())
def test_every_model_has_a_hear_module(name):
    mod = importlib.import_module(module_name(name))
    for fn in ("load_model", "get_scene_embeddings", "get_timestamp_embeddings"):
        assert callable(getattr(mod, fn))
    card = audio_repr.get_card(name)
    assert mod.sample_rate == card.sample_rate
    assert mod.scene_embedding_size == mod.timestamp_embedding_size > 0


@pytest.mark.parametrize("name", sorted(CHECKPOINT_MAKERS))
def test_hearvalidator_passes(name, tmp_path):
    validate = pytest.importorskip("hearvalidator.validate")
    ckpt = tmp_path / "weights.pth"
    CHECKPOINT_MAKERS[name](ckpt, name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # the > 50 ms hop advice is a warning, not a failure
        validate.ValidateModel(module_name(name), str(ckpt), device="cpu")()


def test_timestamps_and_scene_match_the_library(tmp_path):
    ckpt = tmp_path / "w.pth"
    _byola_v1(ckpt, "byola-v1-512")
    mod = importlib.import_module(module_name("byola-v1-512"))
    model = mod.load_model(str(ckpt))
    audio = torch.rand(3, 40000) - 0.5
    emb, ts = mod.get_timestamp_embeddings(audio, model)
    scene = mod.get_scene_embeddings(audio, model)
    ref = model.encoder.embed(audio[1], sr=16000)
    assert emb.shape == (3, len(ref.frames), 512) and ts.shape == (3, len(ref.frames))
    assert torch.allclose(emb[1], ref.frames) and torch.allclose(scene[1], ref.clip)
    assert torch.equal(ts[0], 35.0 + 80.0 * torch.arange(ts.shape[1], dtype=torch.float32))
    with pytest.raises(ValueError, match="n_sounds"):
        mod.get_scene_embeddings(torch.zeros(16000), model)
