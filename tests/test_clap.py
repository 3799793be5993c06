"""LAION-CLAP (``laion-clap-htsat``): audio tower, text tower, tokenizer and zero-shot probabilities against the
original ``laion_clap`` code (seeded random weights in the original's checkpoint layout; see reference_clap.py),
the full-size layer tables on the meta device, determinism and batch invariance, the API's errors."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest
import torch

import audio_repr
from audio_repr.frontends.clap import ClapLogMel
from audio_repr.inference.encoder import Encoder
from audio_repr.inference.loader import _apply_state
from audio_repr.models.clap import BpeTokenizer, ClapNet, convert_state_dict, load_state

import reference_clap

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SR = 48000
SMALL_TEXT = dict(vocab_size=300, hidden=768, layers=2, heads=12, intermediate=512, max_positions=80, type_vocab=1,
                  pad_id=1, eps=1e-5)
CORPUS = ["a dog barking", "the sound of rain on a window", "an engine idling", "a bird sings in the morning",
          "This is a sound of speech.", "children playing, laughing and shouting", "music: piano, violin",
          "CAPITAL Letters and numbers 12345", "  spaces   everywhere ", "émigré café naïve", "a cat meows"]


def _roberta_config(text):
    import transformers

    return transformers.RobertaConfig(vocab_size=text["vocab_size"], hidden_size=text["hidden"],
                                      num_hidden_layers=text["layers"], num_attention_heads=text["heads"],
                                      intermediate_size=text["intermediate"],
                                      max_position_embeddings=text["max_positions"], type_vocab_size=text["type_vocab"],
                                      pad_token_id=1, bos_token_id=0, eos_token_id=2, layer_norm_eps=text["eps"])


def make_tokenizer_files(folder):
    """A small RoBERTa-style byte-level BPE (``<s>``=0, ``<pad>``=1, ``</s>``=2, ``<unk>``=3), as vocab.json +
    merges.txt (the files ``RobertaTokenizer`` reads), trained on a few sentences."""
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(CORPUS * 20, vocab_size=300, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"], show_progress=False)
    folder.mkdir(parents=True, exist_ok=True)
    bpe.save_model(str(folder))
    return folder / "vocab.json", folder / "merges.txt"


@pytest.fixture(scope="module")
def tok_files(tmp_path_factory):
    return make_tokenizer_files(tmp_path_factory.mktemp("tok"))


@pytest.fixture(scope="module")
def original():
    if not reference_clap.available():
        why = "laion_clap is not installed (pip install --no-deps laion_clap h5py)"
        if os.environ.get("AUDIO_REPR_REQUIRE_LAION_CLAP"):     # CI's reference step: the comparison must run
            pytest.fail(why, pytrace=False)
        pytest.skip(why)
    pytest.importorskip("transformers")
    return reference_clap.original_clap(_roberta_config(SMALL_TEXT))


@pytest.fixture(scope="module")
def ckpt(request, tmp_path_factory):
    """The original's seeded model saved as its trainer saves it; without laion_clap, our network's seeded weights in
    the same layout (the tests of determinism, batches, search and errors run either way)."""
    path = tmp_path_factory.mktemp("ckpt") / "630k-audioset-best.pt"
    if reference_clap.available():
        model = request.getfixturevalue("original")
    else:
        torch.manual_seed(0)
        model = ClapNet(**dict(audio_repr.get_card("laion-clap-htsat").arch, text=SMALL_TEXT))
    torch.save(reference_clap.checkpoint(model), path)
    return path


def small_encoder(ckpt, tok_files) -> Encoder:
    card = audio_repr.get_card("laion-clap-htsat")
    card = dataclasses.replace(card, arch=dict(card.arch, text=SMALL_TEXT))
    net = ClapNet(**card.arch)
    _apply_state(net, load_state(ckpt), ckpt, card.name)
    net.set_tokenizer_files(*tok_files)
    return Encoder(card, ClapLogMel(**card.frontend), net).eval()


@pytest.fixture(scope="module")
def enc(ckpt, tok_files):
    return small_encoder(ckpt, tok_files)


def _clip(seconds, seed):
    g = np.random.default_rng(seed)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    x = 0.3 * np.sin(2 * np.pi * (300 + 200 * seed) * t) + 0.05 * g.standard_normal(n)
    return (x * np.linspace(0.2, 1.0, n)).astype(np.float32)


def _rel(a, b):
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    return float((a - b).norm() / b.norm())


# ---- fidelity ---------------------------------------------------------------------------------------------------
def test_tokenizer_equals_robertatokenizer(tok_files):
    from transformers import RobertaTokenizer

    ref = RobertaTokenizer.from_pretrained(str(tok_files[0].parent))
    ours = BpeTokenizer(*tok_files, length=77)
    texts = CORPUS + ["unseen wörds ☃ and emoji 🐶!", "x " * 100]      # the last one is truncated to 77 tokens
    want = ref(texts, padding="max_length", truncation=True, max_length=77, return_tensors="pt")
    ids, mask = ours(texts)
    assert torch.equal(ids, want["input_ids"]) and torch.equal(mask, want["attention_mask"])
    assert ids.shape == (len(texts), 77) and int(mask[-1].sum()) == 77 and int(mask[0].sum()) < 77


def test_audio_tower_equals_original(original, enc):
    for seconds, seed in ((3.0, 0), (10.0, 1)):           # repeated 3x + zero tail; exactly 10 s
        wav = _clip(seconds, seed)
        with torch.no_grad():
            inp = reference_clap.audio_input(wav)
            want_latent = original.encode_audio({k: v[None] for k, v in inp.items()}, device="cpu")["embedding"][0]
            want = original.get_audio_embedding([inp])[0]
        got = enc.embed(wav, sr=SR, layers=["latent", "joint"])
        latent, joint = got.clip[:768], got.clip[768:]
        assert got.frames.shape == (1, 768 + 512)
        assert _rel(latent, want_latent) < 1e-4, seconds
        assert _rel(joint, want) < 1e-4, seconds
        assert abs(float(joint.norm()) - 1.0) < 1e-5


def test_text_tower_and_zero_shot_equal_original(original, enc, tok_files):
    from transformers import RobertaTokenizer

    ref_tok = RobertaTokenizer.from_pretrained(str(tok_files[0].parent))
    labels = ["dog", "rain", "engine", "bird"]
    texts = [f"This is a sound of {x}." for x in labels]
    with torch.no_grad():
        t = ref_tok(texts, padding="max_length", truncation=True, max_length=77, return_tensors="pt")
        want_text = original.get_text_embedding({"input_ids": t["input_ids"], "attention_mask": t["attention_mask"]})
        wavs = [_clip(2.0, 3), _clip(5.0, 4)]
        want_audio = original.get_audio_embedding([reference_clap.audio_input(w) for w in wavs])
        # the original's zero-shot scoring (evaluate/eval_zeroshot_classification.py): exp(logit_scale_a) * a @ t.T
        want_probs = (original.logit_scale_a.exp() * want_audio @ want_text.T).softmax(dim=-1)
    got_text = enc.embed_text(texts)
    assert got_text.shape == (4, 512)
    assert _rel(got_text, want_text) < 1e-4
    probs = audio_repr.zero_shot(enc, wavs, labels, sr=SR)
    assert probs.shape == (2, 4)
    assert torch.allclose(probs, want_probs.float(), rtol=1e-4, atol=1e-6)
    assert torch.allclose(probs.sum(dim=1), torch.ones(2))
    one = audio_repr.zero_shot(enc, wavs[0], labels, sr=SR, template="{}")          # another template: other texts
    assert one.shape == (4,) and not torch.allclose(one, probs[0])


def test_checkpoint_layouts(original, ckpt, tmp_path):
    sd = original.state_dict()
    want = load_state(ckpt)
    bare = tmp_path / "bare.pt"
    torch.save(sd, bare)                                   # a bare state dict without module. loads the same
    got = load_state(bare)
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)
    net = ClapNet(**dict(audio_repr.get_card("laion-clap-htsat").arch, text=SMALL_TEXT))
    assert set(net.state_dict()) == set(want)             # every parameter we use comes from the checkpoint


@pytest.mark.parametrize("name,model_name", [("laion-clap-htsat", "tiny"), ("laion-clap-htsat-music-speech", "base")])
def test_full_size_layer_tables(name, model_name):
    """The full-size original (HTSAT tiny/base + roberta-base) and our network have the same tensors (the text
    towers and ours on the meta device: nothing allocated)."""
    if not reference_clap.available():
        pytest.skip("laion_clap is not installed")
    full = dict(vocab_size=50265, hidden=768, layers=12, heads=12, intermediate=3072, max_positions=514, type_vocab=1,
                eps=1e-5)
    orig = reference_clap.original_clap(_roberta_config(full), model_name=model_name, meta_text=True)
    with torch.device("meta"):
        ours = ClapNet(**audio_repr.get_card(name).arch)
    want = {k: tuple(v.shape) for k, v in convert_state_dict(orig.state_dict()).items()}
    got = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert got == want
    assert sum(int(np.prod(s)) for s in got.values()) > 100_000_000


# ---- determinism, batches, long audio -----------------------------------------------------------------------------
def test_deterministic_and_batch_invariant(enc):
    clips = [_clip(12.5, 5), _clip(1.0, 6)]
    first = enc.embed(clips, sr=SR, batch_size=3)
    again = enc.embed(clips, sr=SR, batch_size=3)
    for a, b in zip(first, again):                       # run after run: the same bits
        assert torch.equal(a.frames, b.frames) and torch.equal(a.clip, b.clip)
    other = enc.embed(clips[::-1], sr=SR, batch_size=1)[::-1]     # another batch composition and order
    for a, b in zip(first, other):
        assert torch.allclose(a.frames, b.frames, rtol=0, atol=2e-6)
        assert torch.allclose(a.clip, b.clip, rtol=0, atol=2e-6)
    texts = enc.embed_text(CORPUS, batch_size=None)                # texts: run after run, in any batch
    assert torch.equal(texts, enc.embed_text(CORPUS, batch_size=None))
    assert torch.allclose(enc.embed_text(CORPUS, batch_size=3), texts, rtol=0, atol=2e-6)
    assert torch.allclose(enc.embed_text(CORPUS[4]), texts[4:5], rtol=0, atol=2e-6)
    long = first[0]
    assert long.frames.shape == (2, 512)                 # 12.5 s: two windows
    assert torch.allclose(long.timestamps_ms, torch.tensor([0.0, 10000.0], dtype=torch.float64))
    # the first window is the first 10 s read as one clip (up to its edge frames, where the STFT reads the real
    # audio past 10 s instead of reflecting), the clip vector the owned-frames-weighted mean of the windows
    head = enc.embed(clips[0][: 10 * SR], sr=SR)
    assert _rel(long.frames[0], head.clip) < 1e-2 < _rel(long.frames[1], head.clip)
    n = enc.frontend.frames_for(len(clips[0]))
    w = torch.tensor([1000.0, n - 1000.0])
    assert torch.allclose(long.clip, (long.frames * (w / w.sum())[:, None]).sum(0), atol=1e-6)


def test_similarity_and_search(enc):
    a = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    s = audio_repr.similarity(a, torch.tensor([0.0, 2.0]))
    assert torch.allclose(s, torch.tensor([[0.8], [0.0]]))
    with pytest.raises(ValueError, match="different sizes"):
        audio_repr.similarity(a, torch.ones(3))
    clips = torch.stack([e.clip for e in enc.embed([_clip(1.0, 8), _clip(2.0, 9), _clip(3.0, 10)], sr=SR)])
    scores, idx = audio_repr.search(enc, clips, ["a dog barking", "rain"], top_k=2)
    assert scores.shape == idx.shape == (2, 2)
    full = audio_repr.similarity(enc.embed_text(["a dog barking", "rain"]), clips)
    assert torch.equal(idx, torch.argsort(-full, dim=1, stable=True)[:, :2])
    assert (scores[:, 0] >= scores[:, 1]).all()


def test_errors(enc):
    with pytest.raises(ValueError, match="at least two labels"):
        audio_repr.zero_shot(enc, _clip(1.0, 0), ["dog"], sr=SR)
    with pytest.raises(ValueError, match="repeated"):
        audio_repr.zero_shot(enc, _clip(1.0, 0), ["dog", "dog"], sr=SR)
    with pytest.raises(ValueError, match=r"contain '\{\}'"):
        audio_repr.zero_shot(enc, _clip(1.0, 0), ["dog", "cat"], sr=SR, template="a sound")
    with pytest.raises(ValueError, match="non-empty strings"):
        enc.embed_text(["ok", ""])
    other = audio_repr.load("vggish", pretrained=False)
    with pytest.raises(ValueError, match="has no text tower.*laion-clap-htsat"):
        other.embed_text("a dog")
    with pytest.raises(ValueError, match="has no text tower"):
        audio_repr.zero_shot(other, _clip(1.0, 0), ["dog", "cat"], sr=SR)


def test_tokenizer_files_from_the_cache(tok_files, tmp_path, monkeypatch):
    """Without set_tokenizer_files the manifest's files are found in the cache (as `audio-repr download` puts them)."""
    import shutil

    monkeypatch.setenv("AUDIO_REPR_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    net = ClapNet(**dict(audio_repr.get_card("laion-clap-htsat").arch, text=SMALL_TEXT))
    with pytest.raises(audio_repr.WeightsNotFoundError, match="roberta-base-vocab.json"):
        net.embed_text(["a dog"])
    shutil.copy(tok_files[0], tmp_path / "roberta-base-vocab.json")
    shutil.copy(tok_files[1], tmp_path / "roberta-base-merges.txt")
    assert net.embed_text(["a dog"]).shape == (1, 512)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "vocab.json").write_text(json.dumps({"a": 0}))
    (bad / "merges.txt").write_text("#version: 0.2\n")
    with pytest.raises(audio_repr.WeightsError, match="not a RoBERTa vocabulary"):
        net.set_tokenizer_files(bad / "vocab.json", bad / "merges.txt")
