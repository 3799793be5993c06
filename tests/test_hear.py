"""HEAR 2021 API: every model has its module, declaring a rate the API accepts; one model of every family
(read from the registry) passes what ``hearvalidator`` checks, on random weights saved in the family's original
checkpoint layout.

Two runs of those checks: ``test_hear_api_contract`` re-states them (fast, always runs: batches of 3 and 2
instead of the validator's 16 and 8), ``test_hearvalidator_passes`` runs the real tool. hearvalidator imports
tensorflow, so it is not in the ``test`` extra but in ``hear`` (``pip install ".[hear]"``); its tests skip
without it, except with ``AUDIO_REPR_REQUIRE_HEARVALIDATOR=1`` (CI's HEAR step, ``.ci/run``), where they fail.

A family added to the registry joins by construction: the tests below are parametrised by the registry's
families, and a family without a checkpoint maker (``CHECKPOINTS`` here, or ``HEAR_CHECKPOINT`` in its own
``tests/test_<family>.py``) fails them."""

import importlib
import importlib.util
import math
import os
import sys
import types
import warnings
from pathlib import Path

import pytest
import torch

import audio_repr
from audio_repr.audio import get_resampler
from audio_repr.hear import hear_sample_rate, module_name
from conftest import SHARED, accumulations, assert_same_arithmetic
from reference_byola import OriginalV1, OriginalV2, randomise

#: what hearvalidator accepts (``hearvalidator/validate.py``, ``ValidateModel.ACCEPTABLE_SAMPLE_RATE``), stated
#: here, not read from the library
ACCEPTABLE_SAMPLE_RATE = (16000, 22050, 44100, 48000)
MN04 = SHARED / "weights" / "mn04_as_mAP_432.pt"


# ---- random weights in each family's original checkpoint layout -------------------------------------------------
def _byola_v1(folder, name):
    d = int(name.rsplit("-", 1)[1])
    path = folder / f"AudioNTT2020-BYOLA-64x96d{d}.pth"
    torch.save(randomise(OriginalV1(d)).state_dict(), path)                 # the released state dict
    return path


def _byola_v2(folder, name):
    path = folder / "AudioNTT2022-BYOLA-64x96d2048.pth"
    torch.save(randomise(OriginalV2()).state_dict(), path)
    return path


def _vggish(folder, name):
    from reference_vggish import torchvggish_network

    path = folder / "vggish-10086976.pth"
    torch.save(torchvggish_network().state_dict(), path)                    # torchvggish's file
    return path


def _msm_mae(folder, name):
    from reference_msm_mae import official_checkpoint, random_model

    unit = int(name.split("x")[1].split("-")[0])
    path = folder / "checkpoint-100.pth"
    torch.save(official_checkpoint(random_model(seed=0, unit=unit), unit=unit), path)   # the trainer's layout
    return path


def _m2d(folder, name):
    from reference_m2d import random_training_model, training_checkpoint

    run = folder / "m2d_vit_base-80x608p16x16-221006-mr7"                   # the run folder names the geometry
    run.mkdir()
    path = run / "checkpoint-300.pth"
    torch.save(training_checkpoint(random_training_model(seed=0, target_depth=1)), path)  # model, optimizer, args
    return path


def _ast(folder, name):
    transformers = pytest.importorskip("transformers")
    a = audio_repr.get_card(name).arch
    cfg = transformers.ASTConfig(patch_size=16, frequency_stride=a["fstride"], time_stride=a["tstride"],
                                 max_length=a["max_frames"], num_mel_bins=128, layer_norm_eps=1e-6)
    torch.manual_seed(0)
    path = folder / "ast_saved"
    transformers.ASTModel(cfg).save_pretrained(path)                        # a folder saved by transformers
    return path


def _random_bn_net(sd, seed):
    """``sd`` (a CNN's state dict) with seeded random weights: He-scaled kernels, BatchNorm near the identity with
    plausible statistics (activations stay at unit scale through the blocks)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in sd.items():
        if k.endswith("num_batches_tracked"):
            v = torch.tensor(1000)
        elif k.endswith("running_var"):
            v = torch.rand(v.shape, generator=g) + 0.5
        elif k.endswith(("running_mean", ".bias")):
            v = 0.1 * torch.randn(v.shape, generator=g)
        elif v.ndim == 1:                                                   # BatchNorm scale
            v = 1.0 + 0.1 * torch.randn(v.shape, generator=g)
        elif v.is_floating_point():
            v = torch.randn(v.shape, generator=g) * math.sqrt(2.0 / v[0].numel())
        out[k] = v.clone()
    return out


def _efficientat(folder, name):
    # the released file is the MobileNetV3's state dict, under the key names ours keeps (test_efficientat checks
    # them against the official file)
    net = audio_repr.load(name, pretrained=False).network
    path = folder / "mn04_as_mAP_432.pt"
    torch.save(_random_bn_net(net.state_dict(), seed=1), path)
    return path


def _panns(folder, name):
    # the original Cnn14 (panns_inference's models.py, imported without its package __init__, which downloads a
    # label list), saved as the released checkpoints are: {"model": state dict, "iteration": ...}
    spec = importlib.util.find_spec("panns_inference")
    if spec is None or importlib.util.find_spec("torchlibrosa") is None:
        pytest.skip("panns_inference / torchlibrosa (the reference) not installed")
    if "_panns_reference" not in sys.modules:
        pkg = types.ModuleType("_panns_reference")
        pkg.__path__ = [str(Path(spec.origin).parent)]
        sys.modules["_panns_reference"] = pkg
    models = importlib.import_module("_panns_reference.models")
    fe = audio_repr.get_card(name).frontend
    ref = models.Cnn14(sample_rate=fe["sample_rate"], window_size=fe["n_fft"], hop_size=fe["hop_length"],
                       mel_bins=fe["n_mels"], fmin=fe["f_min"], fmax=fe["f_max"], classes_num=527)
    sd = ref.state_dict()
    keep = ("spectrogram_extractor.", "logmel_extractor.")                  # the front end's fixed buffers
    sd = {**_random_bn_net({k: v for k, v in sd.items() if not k.startswith(keep)}, seed=2),
          **{k: v for k, v in sd.items() if k.startswith(keep)}}
    path = folder / "Cnn14_mAP=0.431.pth"
    torch.save({"model": sd, "iteration": 600000}, path)
    return path


#: family -> (one of its models, a function ``(folder, model) -> path`` saving random weights of that model in the
#: layout the family's original code saves). A family's own test module may give its entry instead, as
#: ``HEAR_CHECKPOINT = (model, maker)`` in ``tests/test_<family>.py``; a family with neither fails the tests here.
CHECKPOINTS = {
    "ast": ("ast-speechcommands", _ast),
    "byola": ("byola-v1-512", _byola_v1),
    "efficientat": ("efficientat-mn04-as", _efficientat),
    "m2d": ("m2d-vit-base", _m2d),
    "msm_mae": ("msm-mae-80x208", _msm_mae),
    "panns": ("panns-cnn14", _panns),
    "vggish": ("vggish", _vggish),
}
FAMILIES = sorted({audio_repr.get_card(n).family for n in audio_repr.list_models()})
NO_MAKER = ("add a checkpoint maker for it: an entry in CHECKPOINTS in tests/test_hear.py, or HEAR_CHECKPOINT = "
            "(model, maker) in tests/test_<family>.py, where maker(folder, model) saves random weights in the "
            "family's original checkpoint layout and returns the path")


def checkpoint_maker(family):
    """``(model, maker)`` of ``family``: ``CHECKPOINTS``, else its test module's ``HEAR_CHECKPOINT``; else None."""
    if family in CHECKPOINTS:
        return CHECKPOINTS[family]
    if Path(__file__).with_name(f"test_{family}.py").is_file():
        return getattr(importlib.import_module(f"test_{family}"), "HEAR_CHECKPOINT", None)
    return None


def test_every_family_has_a_checkpoint_maker():
    missing = [f for f in FAMILIES if checkpoint_maker(f) is None]
    assert not missing, f"families without a checkpoint maker: {missing}; {NO_MAKER}"
    assert not set(CHECKPOINTS) - set(FAMILIES), "CHECKPOINTS names families that are not registered"
    for family in FAMILIES:
        name = checkpoint_maker(family)[0]
        assert audio_repr.get_card(name).family == family, (family, name)


@pytest.fixture(scope="module", params=FAMILIES)
def family_checkpoint(request, tmp_path_factory):
    """(model, checkpoint path) of one model of the family: random weights in the original layout."""
    maker = checkpoint_maker(request.param)
    if maker is None:
        pytest.fail(f"family {request.param!r} has no checkpoint maker: {NO_MAKER}", pytrace=False)
    name, make = maker
    return name, make(tmp_path_factory.mktemp(request.param), name)


# ---- every model's module ----------------------------------------------------------------------------------------
def test_the_declared_rate_rule():
    """The module's rate: the model's when accepted, else the accepted rate >= it with the simplest ratio."""
    assert [hear_sample_rate(r) for r in (16000, 22050, 44100, 48000)] == [16000, 22050, 44100, 48000]
    assert hear_sample_rate(32000) == 48000            # 3:2, not 44100 (441:320) though 44100 is nearer
    assert hear_sample_rate(8000) == 16000 and hear_sample_rate(24000) == 48000 and hear_sample_rate(11025) == 22050
    with pytest.raises(ValueError, match="96000 Hz has no HEAR 2021 rate"):
        hear_sample_rate(96000)


@pytest.mark.parametrize("name", audio_repr.list_models())
def test_every_model_has_a_hear_module(name):
    mod = importlib.import_module(module_name(name))
    for fn in ("load_model", "get_scene_embeddings", "get_timestamp_embeddings"):
        assert callable(getattr(mod, fn))
    card = audio_repr.get_card(name)
    assert mod.sample_rate in ACCEPTABLE_SAMPLE_RATE
    assert mod.sample_rate >= card.sample_rate                         # nothing the model uses is lost
    if card.sample_rate in ACCEPTABLE_SAMPLE_RATE:
        assert mod.sample_rate == card.sample_rate                     # no resampling when none is needed
    if card.sample_rate == 32000:                                      # EfficientAT, PANNs CNN14 (issue 30)
        assert mod.sample_rate == 48000
    assert type(mod.scene_embedding_size) is int and mod.scene_embedding_size == mod.timestamp_embedding_size > 0


# ---- the validator's checks: re-stated (always), and the real tool (the `hear` extra) ------------------------------
def _check_like_hearvalidator(module: str, weights: str, n_timestamp=3, n_scene=2):
    """What ``hearvalidator.validate.ValidateModel`` checks of a torch module, in its order, on its clip lengths
    (2.0 s, 3.74 s of white noise in [-1, 1] at the declared rate) but smaller batches."""
    mod = importlib.import_module(module)
    for fn in ("load_model", "get_timestamp_embeddings", "get_scene_embeddings"):
        assert hasattr(mod, fn), f"the API must include {fn}"
    model = mod.load_model(weights)
    assert isinstance(model, torch.nn.Module)
    model.to("cpu")
    assert model.sample_rate in ACCEPTABLE_SAMPLE_RATE, model.sample_rate
    assert isinstance(model.scene_embedding_size, int) and isinstance(model.timestamp_embedding_size, int)
    torch.manual_seed(0)
    audio = torch.rand(n_timestamp, int(2.0 * model.sample_rate)) * 2 - 1.0
    emb, ts = mod.get_timestamp_embeddings(audio, model)
    assert emb.dtype == torch.float32 and emb.shape[0] == n_timestamp
    assert emb.shape[:2] == ts.shape and emb.shape[2] == model.timestamp_embedding_size
    assert torch.isfinite(emb).all()
    diff = torch.diff(ts)
    assert torch.all(torch.abs(diff - diff.float().mean()) < 1e-3), "timestamps at regular intervals"
    audio = torch.rand(n_scene, int(3.74 * model.sample_rate)) * 2 - 1.0
    scene = mod.get_scene_embeddings(audio, model)
    assert scene.dtype == torch.float32 and scene.shape == (n_scene, model.scene_embedding_size)
    assert torch.isfinite(scene).all()


def test_hear_api_contract(family_checkpoint):
    name, ckpt = family_checkpoint
    _check_like_hearvalidator(module_name(name), str(ckpt))


def _hearvalidator():
    try:
        return importlib.import_module("hearvalidator.validate")
    except ImportError as e:
        if os.environ.get("AUDIO_REPR_REQUIRE_HEARVALIDATOR") == "1":
            pytest.fail(f"AUDIO_REPR_REQUIRE_HEARVALIDATOR=1 but hearvalidator cannot be imported: {e}", pytrace=False)
        pytest.skip("hearvalidator not installed (pip install \".[hear]\"; CI runs it in its own step)")


def _run_hearvalidator(module: str, weights: str):
    validate = _hearvalidator()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # the > 50 ms hop advice is a warning, not a failure
        validate.ValidateModel(module, weights, device="cpu")()


def test_hearvalidator_passes(family_checkpoint):
    name, ckpt = family_checkpoint
    _run_hearvalidator(module_name(name), str(ckpt))


def test_hearvalidator_passes_with_official_weights():
    """``hear-validator audio_repr.hear.efficientat_mn04_as --model mn04_as_mAP_432.pt`` (issue 30)."""
    if not MN04.is_file():
        pytest.skip(f"official weights not present ({MN04})")
    _check_like_hearvalidator(module_name("efficientat-mn04-as"), str(MN04))
    _run_hearvalidator(module_name("efficientat-mn04-as"), str(MN04))


# ---- what the modules compute ------------------------------------------------------------------------------------
def test_timestamps_and_scene_match_the_library(tmp_path):
    ckpt = _byola_v1(tmp_path, "byola-v1-512")
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


def test_a_32k_model_takes_48k_audio_through_the_cards_resampler(tmp_path):
    """EfficientAT declares 48 kHz; what it embeds is the audio resampled to 32 kHz by the card's resampler
    (librosa's kaiser_best, as the original's loading), then the model at its own rate."""
    name = "efficientat-mn04-as"
    mod = importlib.import_module(module_name(name))
    model = mod.load_model(str(_efficientat(tmp_path, name)))
    enc = model.encoder
    assert model.sample_rate == mod.sample_rate == 48000 and enc.sample_rate == 32000
    torch.manual_seed(1)
    audio = torch.rand(2, int(2.5 * 48000)) * 2 - 1.0
    emb, ts = mod.get_timestamp_embeddings(audio, model)
    scene = mod.get_scene_embeddings(audio, model)
    at32k = get_resampler(enc.card.resampler)(audio[1], 48000, 32000)
    assert at32k.shape[-1] == int(2.5 * 32000)
    ref = enc.embed(at32k, sr=32000)
    assert emb.shape == (2, len(ref.frames), 384) and torch.equal(ts[1], ref.timestamps_ms.float())
    acc = accumulations(enc)
    assert_same_arithmetic(emb[1], ref.frames, *acc, what="timestamp embeddings")
    assert_same_arithmetic(scene[1], ref.clip, *acc, what="scene embedding")


# ---- where the validator is installed (issue 21, item 8) ---------------------------------------------------------
def test_the_validator_is_in_its_own_extra_and_ci_runs_it():
    """hearvalidator pulls tensorflow (~1.2 GB): the README's ``.[test]`` leaves it out, the ``hear`` extra has it,
    and CI's HEAR step installs that extra and runs the real validator, where a missing one fails."""
    import re

    tomllib = pytest.importorskip("tomllib")                        # Python >= 3.11
    from conftest import ROOT

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = {k: {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in v} for k, v in extras.items()}
    assert not names["test"] & {"hearvalidator", "tensorflow", "tensorflow-cpu"}
    assert "hearvalidator" in names["hear"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert '.venv/bin/pip install ".[hear]"' in ci and "AUDIO_REPR_REQUIRE_HEARVALIDATOR=1" in ci
    assert "tests/test_hear.py -k hearvalidator" in ci
