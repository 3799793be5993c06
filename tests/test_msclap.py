"""Microsoft CLAP 2023 (``msclap-2023``): audio tower, text tower, tokenizer and zero-shot probabilities against
the original ``msclap`` code (its ``CLAPWrapper`` run on seeded random weights saved as released; see
reference_msclap.py), the full-size layer tables on the meta device, the front end, determinism and batch
invariance, long audio, the checkpoint layouts, the tokenizer files from the cache."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest
import torch

import audio_repr
from audio_repr.frontends.msclap import MsClapLogMel
from audio_repr.inference.encoder import Encoder
from audio_repr.inference.loader import _apply_state
from audio_repr.layers.text import Gpt2Tokenizer
from audio_repr.models.msclap import WINDOW_FRAMES, MsClapNet, convert_state_dict, load_state

import reference_msclap

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SR = 44100
NAME = "msclap-2023"
SMALL_TEXT = dict(vocab_size=301, hidden=768, layers=2, heads=12, max_positions=256, eps=1e-5)
CORPUS = ["a dog barking", "the sound of rain on a window", "an engine idling", "a bird sings in the morning",
          "this is the sound of speech", "children playing, laughing and shouting!", "music: piano, violin",
          "CAPITAL Letters and numbers 12345", "  spaces   everywhere ", "émigré café naïve", "wow!! a cat meows"]


def _gpt2_config(text):
    import transformers

    return transformers.GPT2Config(vocab_size=text["vocab_size"], n_embd=text["hidden"], n_layer=text["layers"],
                                   n_head=text["heads"], n_positions=text["max_positions"],
                                   layer_norm_epsilon=text["eps"], bos_token_id=300, eos_token_id=300)


def make_tokenizer_files(folder):
    """A small GPT-2-style byte-level BPE as vocab.json + merges.txt: as in GPT-2's, '!' is id 0 (the first byte
    of the byte-level alphabet; the original's padding token and the id its ``ne(ids, 0)`` counts) and
    ``<|endoftext|>`` the last id."""
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(CORPUS * 20, vocab_size=300, min_frequency=1, special_tokens=[], show_progress=False)
    folder.mkdir(parents=True, exist_ok=True)
    bpe.save_model(str(folder))
    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    assert vocab["!"] == 0 and "!!" in vocab
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    return folder / "vocab.json", folder / "merges.txt"


@pytest.fixture(scope="module")
def tok_files(tmp_path_factory):
    return make_tokenizer_files(tmp_path_factory.mktemp("tok"))


def _require_msclap():
    if not reference_msclap.available():
        why = "msclap is not installed (pip install --no-deps msclap==1.3.4 torchlibrosa)"
        if os.environ.get("AUDIO_REPR_REQUIRE_MSCLAP"):     # CI's reference step: the comparison must run
            pytest.fail(why, pytrace=False)
        pytest.skip(why)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """The original's seeded model saved as released; without msclap, our network's seeded weights in the same
    layout (the tests of determinism, batches, long audio and errors run either way)."""
    path = tmp_path_factory.mktemp("ckpt") / "CLAP_weights_2023.pth"
    if reference_msclap.available():
        sd = reference_msclap.checkpoint(reference_msclap.original_clap(_gpt2_config(SMALL_TEXT)))
    else:
        torch.manual_seed(0)
        sd = {"model": MsClapNet(**dict(audio_repr.get_card(NAME).arch, text=SMALL_TEXT)).state_dict()}
    torch.save(sd, path)
    return path


@pytest.fixture(scope="module")
def original(ckpt, tok_files):
    _require_msclap()
    return reference_msclap.wrapper(ckpt, _gpt2_config(SMALL_TEXT), tok_files[0].parent)


def small_encoder(ckpt, tok_files) -> Encoder:
    card = audio_repr.get_card(NAME)
    card = dataclasses.replace(card, arch=dict(card.arch, text=SMALL_TEXT))
    net = MsClapNet(**card.arch)
    _apply_state(net, load_state(ckpt), ckpt, card.name)
    net.set_tokenizer_files(*tok_files)
    return Encoder(card, MsClapLogMel(**card.frontend), net).eval()


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
def test_tokenizer_equals_the_originals(original, tok_files):
    """Our ids equal the original's preprocess_text (GPT-2's tokenizer with '!' as padding, ' <|endoftext|>'
    appended, padded to 77, not truncated); '!' is never merged with its neighbours."""
    ours = Gpt2Tokenizer(*tok_files, length=77)
    for texts in (CORPUS, ["x " * 100]):                        # 200 tokens: kept whole, as the original keeps them
        want = original.preprocess_text(texts)
        ids = ours(texts)
        assert torch.equal(ids, want["input_ids"])
    bang = ours(["wow!!"])[0].tolist()                   # "!!" is one token of the vocabulary, yet read as '!' '!'
    eos = bang.index(ours.tokenizer.token_to_id("<|endoftext|>"))
    assert bang[eos - 3: eos - 1] == [0, 0] and bang[eos + 1:] == [0] * (76 - eos)


def test_audio_tower_equals_original(original, enc):
    for seconds, seed in ((3.0, 0), (7.0, 1)):                 # repeated 3x and cut; exactly 7 s
        wav = _clip(seconds, seed)
        with torch.no_grad():
            x = original.preprocess_audio([wav], resample=True)
            want_latent = original.clap.audio_encoder.base(x.reshape(1, -1))["embedding"][0]
            want = original._get_audio_embeddings(x)[0]
        got = enc.embed(wav, sr=SR, layers=["latent", "joint"])
        latent, joint = got.clip[:768], got.clip[768:]
        assert got.frames.shape == (1, 768 + 1024)
        assert _rel(latent, want_latent) < 1e-4, seconds
        assert _rel(joint, want / want.norm()) < 1e-4, seconds
        assert abs(float(joint.norm()) - 1.0) < 1e-5


def test_text_tower_and_zero_shot_equal_original(original, enc):
    labels = ["dog", "rain", "engine", "bird!"]
    texts = [f"this is the sound of {x}" for x in labels]
    with torch.no_grad():
        want_text = original.get_text_embeddings(texts)
        wavs = [_clip(2.0, 3), _clip(5.0, 4)]
        want_audio = original.get_audio_embeddings(wavs)
        # the original's zero-shot (README): softmax over the labels of compute_similarity(audio, text)
        want_probs = original.compute_similarity(want_audio, want_text).softmax(dim=1)
    got_text = enc.embed_text(texts)
    assert got_text.shape == (4, 1024)
    assert _rel(got_text, want_text / want_text.norm(dim=-1, keepdim=True)) < 1e-4
    assert abs(enc.network.logit_scale() - float(original.clap.logit_scale.exp())) < 1e-4
    probs = audio_repr.zero_shot(enc, wavs, labels, sr=SR)
    assert probs.shape == (2, 4)
    assert torch.allclose(probs, want_probs.float(), rtol=1e-4, atol=1e-6)
    long = "the sound of rain on a window " * 12               # past 77 tokens: read whole, as the original reads it
    assert int(enc.network.tokenizer()([long]).ne(0).sum()) > 150
    with torch.no_grad():
        want_long = original.get_text_embeddings([long])
    assert _rel(enc.embed_text([long]), want_long / want_long.norm()) < 1e-4


def test_checkpoint_layouts(original, ckpt, tmp_path):
    want = load_state(ckpt)
    sd = torch.load(ckpt)["model"]
    assert any(k.endswith(".attn.masked_bias") for k in sd)              # the released layout's GPT-2 buffers
    bare = tmp_path / "bare.pt"
    torch.save(sd, bare)                                   # a bare state dict loads the same
    got = load_state(bare)
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)
    net = MsClapNet(**dict(audio_repr.get_card(NAME).arch, text=SMALL_TEXT))
    assert set(net.state_dict()) == set(want)             # every tensor we use comes from the checkpoint
    # what the original's strict=False load really ignores is what we drop (besides the front end's, the head's
    # and index buffers, which its network has and ours does not)
    missing, unexpected = original.clap.load_state_dict(sd, strict=False)
    assert not missing and set(unexpected) == {k for k in sd if k.endswith((".attn.bias", ".attn.masked_bias"))}


def test_full_size_layer_tables():
    """The full-size original (HTS-AT tiny + GPT-2 base, as config_2023.yml builds it) and our network have the same
    tensors (the GPT-2s and ours on the meta device: nothing allocated)."""
    _require_msclap()
    import transformers

    orig = reference_msclap.original_clap(transformers.GPT2Config(), meta_text=True)
    with torch.device("meta"):
        ours = MsClapNet(**audio_repr.get_card(NAME).arch)
    want = {k: tuple(v.shape) for k, v in convert_state_dict(orig.state_dict()).items()}
    got = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert got == want
    assert sum(int(np.prod(s)) for s in got.values()) > 150_000_000


# ---- the front end, determinism, batches, long audio --------------------------------------------------------------
def test_front_end_geometry():
    fe = MsClapLogMel(**audio_repr.get_card(NAME).frontend)
    assert fe.frames_for(7 * SR) == WINDOW_FRAMES == fe.frames_for(SR) and fe.frames_for(0) == 0
    assert fe.frames_for(10 * SR) == 10 * SR // 320 + 1
    short = torch.arange(1000, dtype=torch.float32)
    padded = fe.edge_pad(short)                            # repeated ceil(308700 / 1000) times, cut at 7 s
    body = padded[fe.pad: fe.pad + 7 * SR]
    assert body.shape[-1] == 7 * SR and torch.equal(body[:3000], short.repeat(3)) and float(body[-1]) == 699.0
    from audio_repr.frontends.filterbanks import mel_filterbank

    assert torch.equal(fe.fb, mel_filterbank(32000, 1024, 64, 50.0, 14000.0, "slaney"))
    assert not torch.equal(fe.fb, mel_filterbank(44100, 1024, 64, 50.0, 14000.0, "slaney"))


def test_deterministic_and_batch_invariant(enc):
    clips = [_clip(9.5, 5), _clip(1.0, 6)]
    first = enc.embed(clips, sr=SR, batch_size=3)
    again = enc.embed(clips, sr=SR, batch_size=3)
    for a, b in zip(first, again):                       # run after run: the same bits
        assert torch.equal(a.frames, b.frames) and torch.equal(a.clip, b.clip)
    other = enc.embed(clips[::-1], sr=SR, batch_size=1)[::-1]     # another batch composition and order
    for a, b in zip(first, other):
        assert torch.allclose(a.frames, b.frames, rtol=0, atol=2e-6)
        assert torch.allclose(a.clip, b.clip, rtol=0, atol=2e-6)
    texts = enc.embed_text(CORPUS, batch_size=None)
    assert torch.equal(texts, enc.embed_text(CORPUS, batch_size=None))
    assert torch.allclose(enc.embed_text(CORPUS, batch_size=3), texts, rtol=0, atol=2e-6)
    assert torch.allclose(enc.embed_text(CORPUS[4]), texts[4:5], rtol=0, atol=2e-6)
    long = first[0]
    assert long.frames.shape == (2, 1024)                # 9.5 s: two windows
    assert torch.allclose(long.timestamps_ms, torch.tensor([0.0, 964 * 320 * 1000 / SR], dtype=torch.float64))
    head = enc.embed(clips[0][: 7 * SR], sr=SR)           # the first window is (nearly) the first 7 s as one clip
    assert _rel(long.frames[0], head.clip) < 1e-2 < _rel(long.frames[1], head.clip)
    n = enc.frontend.frames_for(len(clips[0]))
    w = torch.tensor([964.0, n - 964.0])
    assert torch.allclose(long.clip, (long.frames * (w / w.sum())[:, None]).sum(0), atol=1e-6)


def test_last_window_repeats_its_frames(enc):
    """A window shorter than 7 s is filled with its own frames repeated (as the original repeats a short clip),
    never with what lies past its length."""
    net = enc.network
    x = torch.randn(2, 64, WINDOW_FRAMES) * 10 - 40
    x[1, :, :300] = x[0, :, :300]
    out = net(x, torch.tensor([300, 300]))
    assert torch.allclose(out["joint"][0], out["joint"][1], atol=1e-6)
    tiled = x[0, :, :300].repeat(1, 4)[:, :WINDOW_FRAMES]
    assert torch.allclose(net(tiled[None])["joint"][0], out["joint"][0], atol=1e-5)


def test_errors_and_tokenizer_files_from_the_cache(tok_files, tmp_path, monkeypatch):
    import shutil

    monkeypatch.setenv("AUDIO_REPR_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    net = MsClapNet(**dict(audio_repr.get_card(NAME).arch, text=SMALL_TEXT))
    with pytest.raises(audio_repr.WeightsNotFoundError, match="gpt2-vocab.json"):
        net.embed_text(["a dog"])
    shutil.copy(tok_files[0], tmp_path / "gpt2-vocab.json")
    shutil.copy(tok_files[1], tmp_path / "gpt2-merges.txt")
    assert net.embed_text(["a dog"]).shape == (1, 1024)
    with pytest.raises(ValueError, match="at most 256 tokens"):
        net.embed_text(["a b " * 200])
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "vocab.json").write_text(json.dumps({"a": 0}))
    (bad / "merges.txt").write_text("#version: 0.2\n")
    with pytest.raises(audio_repr.WeightsError, match="not a GPT-2 vocabulary"):
        net.set_tokenizer_files(bad / "vocab.json", bad / "merges.txt")


def _hear_checkpoint(folder, name):
    torch.manual_seed(0)
    path = folder / "CLAP_weights_2023.pth"
    torch.save({"model": MsClapNet(**audio_repr.get_card(name).arch).state_dict()}, path)   # as released
    return path


HEAR_CHECKPOINT = (NAME, _hear_checkpoint)
