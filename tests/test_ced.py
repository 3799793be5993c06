"""CED (re-implemented; the original's code is GPL-3.0) against the original run as a reference program in a separate
environment: golden outputs on seeded random checkpoints (``tests/data/ced_golden.npz``, made by
``tests/make_golden_ced.py``; checkpoints remade here bit for bit from numpy seeds, ``tests/reference_dasheng.py``)."""

from dataclasses import replace

import numpy as np
import pytest
import torch

import audio_repr
from audio_repr.models import _meta_network, ced, dasheng, layer_table
from audio_repr.weights import WeightsError
from conftest import ROOT, rel_err
import reference_dasheng as R

GOLDEN = ROOT / "tests" / "data" / "ced_golden.npz"
TOL = 1e-4


def _hear_checkpoint(folder, name):
    """Random weights of ``ced-tiny`` in the released checkpoint layout (for tests/test_hear.py)."""
    path = folder / "audiotransformer_tiny_mAP_4814.pt"
    torch.save(R.ced_checkpoint("tiny"), path)
    return path


#: tests/test_hear.py's maker for this family: one model, random weights in the original layout
HEAR_CHECKPOINT = ("ced-tiny", _hear_checkpoint)


@pytest.fixture(scope="module")
def golden():
    return dict(np.load(GOLDEN))


@pytest.fixture(scope="module")
def clips():
    return {k: torch.from_numpy(v) for k, v in R.clips("ced").items()}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """The ``ced-tiny`` card with a 3-block, 64-d network, weights read from the original layout by the loader."""
    path = tmp_path_factory.mktemp("ced") / "small.pt"
    torch.save(R.ced_checkpoint("small"), path)
    card = audio_repr.get_card("ced-tiny")
    card = replace(card, arch=dict(card.arch, embed_dim=R.CED_SMALL["embed_dim"], depth=3,
                                   num_heads=R.CED_SMALL_HEADS), fusion_layers=("block2", "output"))
    net = ced.CEDNet(**card.arch)
    net.load_state_dict(ced.load_state(path))
    return audio_repr.Encoder(card, dasheng.build_frontend(**card.frontend), net).eval()


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def test_every_layer_and_the_logits_equal_the_original(small, golden, clips):
    """1.3 s, 6.1 s with 1.5 s of silence, 10.1 s (one whole 63-patch input), alone and in one batch: every block
    (the frequency-mean of its tokens per 160-ms step), the output, the clip logits (the original's
    ``pooling='logit'``), their sigmoid (its default output) and the frame-wise scores (its ``pooling='dm'``)."""
    for batch in (False, True):
        embs = (small.embed(list(clips.values()), sr=16000, layers="all", batch_size=3) if batch
                else [small.embed(w, sr=16000, layers="all") for w in clips.values()])
        for name, e in zip(clips, embs):
            for layer in ("block1", "block2", "block3", "output"):
                ref = golden[f"small_{name}_{layer}"]
                assert e.layer(layer).shape == ref.shape, (name, layer)
                assert rel_err(e.layer(layer).numpy(), ref) < TOL, (name, layer, batch)
            a, b = e.layer_slices["logits"]
            logits = e.clip[a:b].numpy()
            assert rel_err(logits, golden[f"small_{name}_logits"]) < TOL
            assert rel_err(sigmoid(logits), golden[f"small_{name}_prob"]) < TOL
            assert rel_err(sigmoid(e.layer("logits").numpy()).mean(0), golden[f"small_{name}_dm"]) < TOL
            assert np.allclose(e.timestamps_ms[:2].numpy(), [75.0, 235.0])


def _hf_layout(state):
    """The Hugging Face port's names: the encoder under ``encoder.``, its batch norm without the Sequential index."""
    out = {}
    for k, v in state.items():
        if k.startswith("outputlayer."):
            out[k] = v
        elif not k.startswith("front_end."):
            out["encoder." + k.replace("init_bn.1.", "init_bn.")] = v
    return out


@pytest.mark.parametrize("layout", ["wrapped", "bare", "hub"])
def test_ced_tiny_from_each_layout_tags_as_the_original(tmp_path, golden, clips, layout):
    ck = R.ced_checkpoint("tiny", wrapped=layout == "wrapped")
    if layout == "hub":
        ck = _hf_layout(ck)
    path = tmp_path / "ced_tiny.pt"
    torch.save(ck, path)
    enc = audio_repr.load("ced-tiny", weights=path)
    embs = enc.embed(list(clips.values()), sr=16000, batch_size=3)
    tags = enc.tag(list(clips.values()), sr=16000, top_k=3)
    for name, e, t in zip(clips, embs, tags):
        f = e.frames.numpy()
        assert rel_err(f @ R.projection(f.shape[1]), golden[f"tiny_{name}_proj"]) < TOL, name
        assert rel_err(e.clip.numpy(), golden[f"tiny_{name}_clip"]) < TOL, name
        prob = golden[f"tiny_{name}_prob"]
        assert t.windows == 1 and rel_err(t.probabilities.numpy(), prob) < TOL
        assert t.indices.tolist() == np.argsort(-prob)[:3].tolist()
        assert t.labels == [audio_repr.inference.tagging.label_names("audioset")[i] for i in t.indices.tolist()]


def test_long_audio_runs_in_63_patch_windows(small):
    """Past 1023 frames the clip is cut into windows of 63 patches on one 160-ms grid, each encoded alone; a
    window's frames are those of its own audio encoded alone (same dB floor: the loud part is in the first one)."""
    g = torch.Generator().manual_seed(8)
    wav = 0.05 * torch.randn(16000 * 25, generator=g)
    wav[:16000] *= 10.0
    e = small.embed(wav, sr=16000, layers=["output"])
    assert e.frames.shape[0] == (1 + wav.shape[0] // 160) // 16 == 156
    assert np.allclose(np.diff(e.timestamps_ms.numpy()), 160.0)
    # the second window (frames 1008..2015) from its own samples, with the whole clip's floor
    fe = small.frontend
    padded = fe.edge_pad(wav)
    feats = fe.apply_reference(fe.window_frames(padded[None], 1008, 2016), [fe.clip_reference(padded)])
    with torch.inference_mode():
        second = small.network(feats, torch.tensor([1008]))["output"][0]
    assert rel_err(e.frames[63:126].numpy(), second.numpy()) < 1e-5


@pytest.mark.parametrize("mutate, message", [
    (lambda s: {"model": {k: v for k, v in s.items() if not k.startswith("outputlayer.")}}, "no classifier"),
    (lambda s: {"model": dict(s, cls_token=torch.zeros(1, 1, 64))}, r"\[CLS\]"),
    (lambda s: {"model": {k: v for k, v in s.items() if not k.startswith("blocks.")}}, "not a CED"),
])
def test_refusals(mutate, message):
    with pytest.raises(WeightsError, match=message):
        ced.convert_checkpoint(mutate(R.ced_checkpoint("small", wrapped=False)))


def test_a_dasheng_checkpoint_is_not_a_ced_one_and_back():
    with pytest.raises(WeightsError, match="no classifier"):
        ced.convert_checkpoint(R.dasheng_checkpoint("small"))
    with pytest.raises(WeightsError, match="classifier"):
        dasheng.convert_checkpoint(dict(R.ced_checkpoint("small"), config={}))


@pytest.mark.parametrize("name, dim, params", [("ced-tiny", 192, 5.5e6), ("ced-mini", 256, 9.6e6),
                                               ("ced-small", 384, 22e6), ("ced-base", 768, 86e6)])
def test_cards_and_sizes(name, dim, params):
    table = layer_table(name)
    assert list(table) == [f"block{i + 1}" for i in range(12)] + ["output", "logits"]
    assert table["output"] == dim and table["logits"] == 527
    n = sum(p.numel() for p in _meta_network(name).parameters())
    assert abs(n - params) < 0.1 * params, n
    card = audio_repr.get_card(name)
    assert card.labels == "audioset" and "Apache-2.0" in card.licence and "GPL" in card.licence


def test_hearvalidator_passes_ced_tiny(tmp_path):
    """The HEAR module of ced-tiny with weights in the released layout passes hear-eval-kit's validator."""
    import importlib
    import warnings

    validate = pytest.importorskip("hearvalidator.validate")
    from audio_repr.hear import module_name

    path = tmp_path / "audiotransformer_tiny_mAP_4814.pt"
    torch.save(R.ced_checkpoint("tiny"), path)
    mod = importlib.import_module(module_name("ced-tiny"))
    assert mod.scene_embedding_size == 192 and mod.sample_rate == 16000
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # the > 50 ms hop advice is a warning, not a failure
        validate.ValidateModel(module_name("ced-tiny"), str(path), device="cpu")()
