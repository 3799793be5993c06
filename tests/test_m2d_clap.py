"""M2D-CLAP (``m2d-clap-vit-base``): the joint layer, the GTE-base text tower, its WordPiece tokenizer and zero-shot
probabilities against a re-statement of the original runtime (tests/reference_m2d.py ``PortableClap``:
``PortableM2D(flat_features=True).encode_clap_audio`` / ``encode_clap_text`` with ``transformers``' BERT and
tokenizer), on seeded random weights saved as the M2D-CLAP trainer saves them, under the release's run-folder name;
real recordings of 0.5, 5 and 15 s (three units). A narrow, shallow ViT and BERT keep it fast; the full-size tensor
tables are compared on the meta device."""

import dataclasses
import math

import pytest
import torch

import audio_repr
from audio_repr.layers.text import Bert, WordPieceTokenizer
from audio_repr.models import m2d
from audio_repr.models.m2d import GTE_BASE, M2DClapNet
from conftest import rel_err
from reference_m2d import PortableClap, TrainingM2D, encoder_only_state, random_training_model, training_checkpoint
from test_m2d import real_audio

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

NAME = "m2d-clap-vit-base"
RUN = "m2d_clap_vit_base-80x608p16x16-240128"
SMALL = dict(dim=64, depth=2, heads=4)
LOGIT_SCALE = math.log(1 / 0.05)                     # not the trainer's initial log(1 / 0.07)
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ["dog", "bark", "barking", "rain", "engine", "bird", "sound", "can", "be", "heard", "the", "of", "a", "is",
         "this", "on", "window", "children", "playing", "music", "piano", "cafe", "naive"]
SUBWORDS = ["##ing", "##s", "##ed", "##er"]
CORPUS = ["a dog barking", "The sound of rain on a window", "an engine idling", "A bird sings in the morning.",
          "This is a sound of speech.", "children playing, laughing and shouting", "music: piano, violin",
          "CAPITAL Letters and numbers 12345", "  spaces   everywhere ", "émigré café naïve", "a cat meows",
          "unseen wörds ☃ and emoji 🐶!", "中文 characters", "x" * 120]


def vocab_lines():
    chars = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("0123456789.,:!?'")
    return SPECIAL + WORDS + SUBWORDS + chars + ["##" + c for c in chars if c.isalnum()]


def small_text():
    return dict(GTE_BASE, vocab_size=len(vocab_lines()), hidden=SMALL["dim"], layers=2, heads=4, intermediate=128,
                max_positions=128)


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok") / "vocab.txt"
    path.write_text("\n".join(vocab_lines()) + "\n", encoding="utf-8")
    return path


def reference_tokenizer(vocab):
    from transformers import BertTokenizer

    # GTE-base's: uncased, accents stripped, CJK split (transformers 5 reads vocab.txt from its folder)
    return BertTokenizer.from_pretrained(str(vocab.parent))


def random_bert(text, seed=0):
    """A transformers BertModel of ``text``'s size with every tensor random (LayerNorms and biases included)."""
    import transformers

    cfg = transformers.BertConfig(vocab_size=text["vocab_size"], hidden_size=text["hidden"],
                                  num_hidden_layers=text["layers"], num_attention_heads=text["heads"],
                                  intermediate_size=text["intermediate"], max_position_embeddings=text["max_positions"],
                                  type_vocab_size=text["type_vocab"], layer_norm_eps=text["eps"], hidden_act="gelu",
                                  attn_implementation="eager")
    torch.manual_seed(seed)
    bert = transformers.BertModel(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in bert.named_parameters():
            if p.ndim == 1:
                p.copy_((1.0 if name.endswith("LayerNorm.weight") else 0.0) + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return bert.eval()


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    """The original text encoder saved as the Hub holds it (``save_pretrained``: model.safetensors)."""
    folder = tmp_path_factory.mktemp("gte")
    random_bert(small_text()).save_pretrained(str(folder))
    assert (folder / "model.safetensors").is_file()
    return folder


def save_clap_run(folder, seed=3, extra="clap"):
    net = random_training_model(seed=seed, norm_stats=(-6.5, 4.0), extra=extra, target_depth=1, **SMALL)
    with torch.no_grad():
        net.logit_scale.fill_(LOGIT_SCALE)
    run = folder / RUN
    run.mkdir(parents=True, exist_ok=True)
    torch.save(training_checkpoint(net), run / "checkpoint-300.pth")
    return run / "checkpoint-300.pth"


def small_encoder(path, vocab=None, bert_dir=None, **arch):
    """``audio_repr.load`` of the M2D-CLAP card with the small ViT/BERT (its text files given when named)."""
    card = audio_repr.get_card(NAME)
    small = dataclasses.replace(card, arch={**card.arch, "embed_dim": SMALL["dim"], "depth": SMALL["depth"],
                                            "num_heads": SMALL["heads"], "joint_dim": SMALL["dim"],
                                            "text": small_text(), **arch})
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("audio_repr.inference.loader.get_card", lambda name: small if name == NAME else card)
        enc = audio_repr.load(NAME, weights=path)
    if vocab is not None:
        enc.network.set_text_files(vocab, bert_dir / "model.safetensors")
    return enc


@pytest.fixture(scope="module")
def setup(tmp_path_factory, vocab, bert_dir):
    import transformers

    path = save_clap_run(tmp_path_factory.mktemp("w"))
    enc = small_encoder(path, vocab, bert_dir)
    bert = transformers.BertModel.from_pretrained(str(bert_dir), attn_implementation="eager")
    ref = PortableClap(path, bert, reference_tokenizer(vocab), **SMALL)
    wav = real_audio(16.0)
    clips = [wav[:8000], wav[16000: 16000 + 80000], wav[8000: 8000 + 240000]]     # 0.5 s, 5 s, 15 s
    return enc, ref, clips


# ---- fidelity ---------------------------------------------------------------------------------------------------
def test_wordpiece_tokenizer_equals_berttokenizer(vocab):
    ref = reference_tokenizer(vocab)
    texts = CORPUS + ["dog " * 600]                                     # the last one is truncated to 512 tokens
    want = ref(texts, max_length=512, padding=True, truncation=True, return_tensors="pt")
    ids, mask = WordPieceTokenizer(vocab, 512)(texts)
    assert torch.equal(ids, want["input_ids"]) and torch.equal(mask, want["attention_mask"])
    assert ids.shape == (len(texts), 512) and int(mask[0].sum()) == 5          # [CLS] a dog bark ##ing [SEP]
    assert (ids == 1).any()                                               # some [UNK]s (unseen characters)
    short, _ = WordPieceTokenizer(vocab, 512)(texts[:2])                   # padding=True: to the batch's longest
    assert short.shape[1] == int(want["attention_mask"][:2].sum(1).max())


def test_bert_equals_transformers(bert_dir, vocab):
    import transformers

    want_model = transformers.BertModel.from_pretrained(str(bert_dir), attn_implementation="eager").eval()
    ours = Bert(**small_text())
    ours.load_weights(bert_dir / "model.safetensors")
    ids, mask = WordPieceTokenizer(vocab, 128)(CORPUS)
    with torch.no_grad():
        want = want_model(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids)).last_hidden_state
        got = ours(ids, mask)
    real = mask.bool()
    assert rel_err(got[real], want[real]) < 1e-5
    # pytorch_model.bin with the pre-training heads' "bert." prefix loads the same tensors
    prefixed = bert_dir.parent / "prefixed.bin"
    torch.save({"bert." + k: v for k, v in want_model.state_dict().items()}, prefixed)
    other = Bert(**small_text())
    other.load_weights(prefixed)
    assert all(torch.equal(a, b) for a, b in zip(other.state_dict().values(), ours.state_dict().values()))


def test_joint_equals_encode_clap_audio(setup):
    enc, ref, clips = setup
    embs = enc.embed(clips, sr=16000, layers=["output", "joint"], batch_size=8)
    for wav, e in zip(clips, embs):
        want = torch.nn.functional.normalize(ref.encode_clap_audio(wav), dim=-1)
        joint = e.clip[slice(*e.layer_slices["joint"])]
        assert rel_err(joint, want) < 1e-4, len(wav)
        assert abs(float(joint.norm()) - 1.0) < 1e-5
        # the frames: each step's own projection (the mean of its frequency patches), unit vectors
        out = e.layer("output")
        with torch.no_grad():
                steps = torch.nn.functional.normalize(ref.audio_proj(out.view(out.shape[0], 5, -1).mean(1)), dim=-1)
        assert rel_err(e.layer("joint"), steps) < 1e-4
    assert enc.embed(clips[0], sr=16000).clip.shape == (SMALL["dim"],)           # joint: the default layer
    assert embs[2].layer("joint").shape[0] == 38 + 38 + 18                     # 15 s: three units


def test_text_and_zero_shot_equal_original(setup):
    enc, ref, clips = setup
    texts = CORPUS[:-1]
    want = torch.nn.functional.normalize(ref.encode_clap_text(texts), dim=-1)
    got = enc.embed_text(texts)
    assert got.shape == (len(texts), SMALL["dim"]) and rel_err(got, want) < 1e-4
    labels = ["dog", "rain", "engine", "bird"]
    probs = audio_repr.zero_shot(enc, clips, labels, sr=16000)
    text = torch.nn.functional.normalize(ref.encode_clap_text([f"{x} can be heard" for x in labels]), dim=-1)
    audio = torch.nn.functional.normalize(torch.stack([ref.encode_clap_audio(w) for w in clips]), dim=-1)
    want_probs = (math.exp(LOGIT_SCALE) * audio @ text.T).softmax(dim=-1)
    assert probs.shape == (3, 4) and torch.allclose(probs, want_probs, rtol=1e-4, atol=1e-6)
    assert torch.equal(probs.argmax(1), (audio @ text.T).argmax(1))        # the original ranks by the cosine
    assert enc.network.logit_scale() == pytest.approx(1 / 0.05, rel=1e-6)


def test_text_projection_when_the_checkpoint_has_one(tmp_path, vocab, bert_dir):
    import transformers

    path = save_clap_run(tmp_path, seed=4, extra="clap-text-proj")
    enc = small_encoder(path, vocab, bert_dir, text_proj=SMALL["dim"])
    bert = transformers.BertModel.from_pretrained(str(bert_dir), attn_implementation="eager")
    ref = PortableClap(path, bert, reference_tokenizer(vocab), **SMALL)
    assert ref.text_proj is not None
    want = torch.nn.functional.normalize(ref.encode_clap_text(CORPUS[:4]), dim=-1)
    assert rel_err(enc.embed_text(CORPUS[:4]), want) < 1e-4
    with pytest.raises(audio_repr.WeightsError, match="text_proj"):           # the 2024 card has none
        small_encoder(path)


def test_full_size_tensor_tables():
    """The full-size trainer's model and our network have the same tensors (on the meta device), and our BERT has
    transformers' BertModel's (GTE-base's configuration) but its pooler."""
    import transformers

    card = audio_repr.get_card(NAME)
    with torch.device("meta"):
        ours = M2DClapNet(**card.arch)
        trainer = TrainingM2D(target_depth=1, extra="clap")
        bert = Bert(**GTE_BASE)
        cfg = transformers.BertConfig(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                      intermediate_size=3072, max_position_embeddings=512, type_vocab_size=2)
        hf = transformers.BertModel(cfg)
    want = {k: tuple(v.shape) for k, v in m2d.convert_clap_state_dict({"model": trainer.state_dict()}).items()}
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == want
    hf_shapes = {k: tuple(v.shape) for k, v in hf.state_dict().items()
                 if not k.startswith("pooler.") and not k.endswith("position_ids")}
    assert {k: tuple(v.shape) for k, v in bert.state_dict().items()} == hf_shapes


# ---- determinism, batches ---------------------------------------------------------------------------------------
def test_deterministic_and_batch_invariant(setup):
    enc, _, clips = setup
    first = enc.embed(clips, sr=16000, batch_size=8)
    again = enc.embed(clips, sr=16000, batch_size=8)
    alone = [enc.embed(c, sr=16000, batch_size=1) for c in clips]
    for a, b, c in zip(first, again, alone):
        assert torch.equal(a.clip, b.clip) and torch.equal(a.frames, b.frames)
        assert torch.allclose(a.clip, c.clip, rtol=0, atol=2e-6)
    texts = enc.embed_text(CORPUS)
    assert torch.equal(texts, enc.embed_text(CORPUS))
    assert torch.allclose(enc.embed_text(CORPUS, batch_size=3), texts, rtol=0, atol=2e-6)
    assert torch.allclose(enc.embed_text(CORPUS[4]), texts[4:5], rtol=0, atol=2e-6)


# ---- errors -----------------------------------------------------------------------------------------------------
def test_missing_text_files_and_wrong_weights(tmp_path, monkeypatch, vocab, bert_dir):
    import shutil

    monkeypatch.setenv("AUDIO_REPR_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("AUDIO_REPR_MIRROR", raising=False)
    path = save_clap_run(tmp_path)
    enc = small_encoder(path)
    with pytest.raises(audio_repr.WeightsNotFoundError, match="gte-base-vocab.txt and gte-base-model.safetensors"):
        audio_repr.zero_shot(enc, torch.zeros(1), ["dog", "cat"], sr=16000)     # before the audio is read
    (tmp_path / "cache").mkdir()
    shutil.copy(vocab, tmp_path / "cache" / "gte-base-vocab.txt")
    shutil.copy(bert_dir / "model.safetensors", tmp_path / "cache" / "gte-base-model.safetensors")
    assert enc.embed_text(["a dog"]).shape == (1, SMALL["dim"])             # found in the cache, by the card's names
    bad = tmp_path / "bad.txt"
    bad.write_text("a\nb\n")
    with pytest.raises(audio_repr.WeightsError, match="not a BERT WordPiece vocabulary"):
        enc.network.set_text_files(bad, bert_dir / "model.safetensors")
    wrong = tmp_path / "wrong.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in random_bert(dict(small_text(), hidden=32, heads=2)).state_dict().items()},
              str(wrong))
    with pytest.raises(audio_repr.WeightsError, match="not the BERT text encoder"):
        enc.network.set_text_files(vocab, wrong)
    # encoder-only weights have no joint space: refused by the card, in one message
    only = tmp_path / f"{RUN}_enconly" / "checkpoint-300.pth"
    only.parent.mkdir()
    ref = PortableClap(path, random_bert(small_text()), reference_tokenizer(vocab), **SMALL)
    torch.save(encoder_only_state(ref), only)
    with pytest.raises(audio_repr.WeightsError, match="audio_proj"):
        small_encoder(only)


def _hear_checkpoint(folder, name):
    """The full-size M2D-CLAP training checkpoint (random weights) in its run folder, for tests/test_hear.py."""
    run = folder / RUN
    run.mkdir()
    path = run / "checkpoint-300.pth"
    torch.save(training_checkpoint(random_training_model(seed=0, target_depth=1, extra="clap")), path)
    return path


HEAR_CHECKPOINT = (NAME, _hear_checkpoint)
