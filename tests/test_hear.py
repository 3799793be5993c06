"""HEAR 2021 API: every model has its module; hearvalidator passes on each family that has a
checkpoint maker in the original format (random weights made by the test)."""

import importlib
import warnings

import pytest
import torch

import audio_repr
from audio_repr.hear import module_name
from conftest import accumulations, assert_same_arithmetic
from reference_byola import OriginalV1, OriginalV2, randomise


def _byola_v1(path, name):
    d = int(name.rsplit("-", 1)[1])
    torch.save(randomise(OriginalV1(d)).state_dict(), path)


def _byola_v2(path, name):
    torch.save(randomise(OriginalV2()).state_dict(), path)


def _vggish(path, name):
    from reference_vggish import torchvggish_network

    torch.save(torchvggish_network().state_dict(), path)      # vggish-10086976.pth layout


def _msm_mae(path, name):
    from reference_msm_mae import official_checkpoint, random_model

    unit = int(name.split("x")[1].split("-")[0])
    torch.save(official_checkpoint(random_model(seed=0, unit=unit), unit=unit), path)   # training layout


def _ast(path, name):
    transformers = pytest.importorskip("transformers")
    card = audio_repr.get_card(name)
    a = card.arch
    cfg = transformers.ASTConfig(patch_size=16, frequency_stride=a["fstride"], time_stride=a["tstride"],
                                 max_length=a["max_frames"], num_mel_bins=128, layer_norm_eps=1e-6)
    torch.manual_seed(0)
    folder = path.parent / "ast_saved"
    transformers.ASTModel(cfg).save_pretrained(folder)         # a folder saved by transformers
    return folder


# one model per family (real sizes, random weights, the original checkpoint layouts)
CHECKPOINT_MAKERS = {"byola-v1-512": _byola_v1, "byola-v2-2048": _byola_v2, "vggish": _vggish,
                     "msm-mae-80x208": _msm_mae, "ast-speechcommands": _ast}


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
    ckpt = CHECKPOINT_MAKERS[name](ckpt, name) or ckpt
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
    acc = accumulations(model.encoder)                      # a batch of 3 vs one clip: float32 reordering only
    assert_same_arithmetic(emb[1], ref.frames, *acc, what="timestamp embeddings")
    assert_same_arithmetic(scene[1], ref.clip, *acc, what="scene embedding")
    assert torch.equal(ts[0], 35.0 + 80.0 * torch.arange(ts.shape[1], dtype=torch.float32))
    with pytest.raises(ValueError, match="n_sounds"):
        mod.get_scene_embeddings(torch.zeros(16000), model)
