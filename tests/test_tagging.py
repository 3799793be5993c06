"""Tagging (``audio_repr.inference.tagging``): the AudioSet label list, EfficientAT mn04's tags with the official
weights against the golden logits of the original, PANNs' tags against its ``logits`` layer, long clips tagged
in windows, and the error for a model without labels."""

import csv
import hashlib
import json

import numpy as np
import pytest
import torch

import audio_repr
from audio_repr.inference.tagging import TaggingError, Tags, label_ids, label_names, tag, taggers
from audio_repr.models import Tiling
from conftest import ROOT, SHARED, noise

EAT_GOLDEN = SHARED / "golden" / "efficientat_mn04_as.npz"
MN04 = SHARED / "weights" / "mn04_as_mAP_432.pt"


def test_audioset_labels_are_the_originals_list_in_index_order():
    from audio_repr.inference import tagging

    names, ids = label_names("audioset"), label_ids("audioset")
    assert len(names) == len(ids) == len(set(ids)) == 527
    path = tagging._DATA / "audioset_labels.csv"
    # byte for byte the originals' metadata/class_labels_indices.csv (EfficientAT at a425fdc and
    # audioset_tagging_cnn at d2f4b8c hold the same file)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == \
        "cdd1049833c4b86127c2773ac0d14a2754b6a6d0d1798002ed5c66e699708429"
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["index", "mid", "display_name"] and [int(r[0]) for r in rows[1:]] == list(range(527))
    assert names[:3] == ["Speech", "Male speech, man speaking", "Female speech, woman speaking"]
    assert (names[72], names[74], names[81], names[137], names[526]) == ("Animal", "Dog", "Cat", "Music", "Field recording")
    assert ids[0] == "/m/09x0r" and ids[526] == "/m/07hvw1"


def test_cards_name_their_label_set():
    assert {"efficientat-mn04-as", "efficientat-mn10-as", "panns-cnn14", "panns-cnn14-16k"} <= set(taggers())
    assert audio_repr.get_card("byola-v1-512").labels is None


def test_mn04_tags_are_the_originals(tmp_path):
    """Official weights, the golden inputs (the original's 32 kHz waveforms) in one batch: the top 5 are the top 5
    of the original's logits and the scores its sigmoid."""
    if not (EAT_GOLDEN.is_file() and MN04.is_file()):
        pytest.skip("golden outputs or official mn04 weights not present")
    g = dict(np.load(EAT_GOLDEN))
    enc = audio_repr.load("efficientat-mn04-as", weights=MN04)
    wavs = [torch.from_numpy(g[f"f{i}_wav32k"]) for i in range(8)]
    tags = tag(enc, wavs, sr=32000, top_k=5)
    names = label_names()
    for i, t in enumerate(tags):
        lg = g[f"f{i}_logits"].astype(np.float64)
        order = np.argsort(lg)[::-1]
        tol = 1e-4 * np.abs(lg).max()                    # the golden tolerance of the logits
        assert np.all(-np.diff(lg[order[:6]]) > 2 * tol), i   # the order is decided: no near ties in the top 6
        assert t.indices.tolist() == order[:5].tolist(), i
        assert t.labels == [names[j] for j in order[:5]]
        want = 1.0 / (1.0 + np.exp(-lg))
        assert np.abs(t.probabilities.numpy() - want).max() <= 0.25 * tol + 1e-6   # sigmoid' <= 1/4
        assert np.abs(t.scores.numpy() - want[order[:5]]).max() <= 0.25 * tol + 1e-6
        assert t.windows == 1 and t.name == f"audio[{i}]" and t.model == "efficientat-mn04-as"
    assert tags[0].labels[:4] == ["Animal", "Dog", "Domestic animals, pets", "Bark"]
    assert tags[1].labels[0] == "Cat"
    text = str(tags[0])
    assert text.splitlines()[0] == "audio[0] (efficientat-mn04-as):" and "Dog" in text and "0.88" in text
    # a single input gives one Tags; a file keeps its path as the name
    one = tag(enc, wavs[0], sr=32000, top_k=3)
    assert isinstance(one, Tags) and one.indices.tolist() == tags[0].indices[:3].tolist() and one.name == "audio"
    import soundfile as sf

    sf.write(tmp_path / "dog.wav", g["f0_wav32k"], 32000, subtype="FLOAT")
    f = tag(enc, tmp_path / "dog.wav")
    assert f.name == str(tmp_path / "dog.wav") and torch.equal(f.indices, tags[0].indices)


@pytest.fixture(scope="module")
def cnn14():
    torch.manual_seed(0)
    return audio_repr.load("panns-cnn14", pretrained=False)


def test_panns_tags_follow_its_logits_layer(cnn14):
    clips = [noise(1.3, sr=32000, seed=1), noise(0.6, sr=32000, seed=2)]
    logits = [e.clip for e in cnn14.embed(clips, sr=32000, layers=["logits"])]
    tags = tag(cnn14, clips, sr=32000, top_k=527 + 10)             # more than there are: every class
    for t, lg in zip(tags, logits):
        p = torch.sigmoid(lg)
        assert len(t) == 527 and torch.allclose(t.probabilities, p, rtol=0, atol=1e-6)
        assert torch.all(t.scores[:-1] >= t.scores[1:]) and torch.allclose(t.scores, p[t.indices], rtol=0, atol=1e-6)
        assert sorted(t.indices.tolist()) == list(range(527))
    with pytest.raises(ValueError, match="top_k"):
        tag(cnn14, clips[0], sr=32000, top_k=0)
    with pytest.raises(audio_repr.AudioError, match=r"audio\[1\].*too short"):
        tag(cnn14, [clips[0], clips[1][:3000]], sr=32000)


def test_long_clips_are_tagged_in_windows_by_the_maximum():
    """A clip longer than the model runs whole: windows of that length (the last one ends at the clip's end),
    each tagged as a clip, a class's score the maximum over them."""
    torch.manual_seed(1)
    enc = audio_repr.load("efficientat-mn04-as", pretrained=False)
    wav = noise(3.0, sr=32000, seed=3)
    assert tag(enc, wav, sr=32000).windows == 1                      # 3 s: whole, as the original
    enc.tiling = Tiling(chunk_frames=64)                             # runs up to 64 frames (0.64 s) whole
    t = tag(enc, wav, sr=32000, top_k=5)
    width = enc.frontend.min_samples(65) - 1
    assert enc.frontend.frames_for(width) == 64 and enc.frontend.frames_for(width + 1) == 65
    starts = list(range(0, len(wav) - width, width)) + [len(wav) - width]
    assert t.windows == len(starts) == 5
    windows = enc.embed([wav[a: a + width] for a in starts], sr=32000, layers=["logits"])
    want = torch.sigmoid(torch.stack([e.clip for e in windows])).amax(dim=0)
    assert torch.allclose(t.probabilities, want, rtol=0, atol=1e-6)
    assert "maximum over 5 windows" in str(t)


def test_a_model_without_labels_cannot_tag():
    enc = audio_repr.load("byola-v1-512", pretrained=False)
    with pytest.raises(TaggingError, match=r"byola-v1-512 cannot tag.*efficientat-mn04-as.*panns-cnn14"):
        tag(enc, noise(1.0), sr=16000)


def test_encoder_tag_and_the_tag_command(tmp_path, capsys):
    from audio_repr.cli import main

    wav = str(ROOT / "examples" / "example.wav")
    torch.manual_seed(0)
    enc = audio_repr.load("efficientat-mn04-as", pretrained=False)
    direct = tag(enc, wav, top_k=3)
    assert str(enc.tag(wav, top_k=3)) == str(direct)          # the method is the function
    out = tmp_path / "tags.json"
    assert main(["tag", wav, "--model", "efficientat-mn04-as", "--random-init", "--top-k", "3", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.strip() == str(direct).strip()              # --random-init is the seed-0 draw
    rows = json.loads(out.read_text())
    assert rows[0]["labels"] == direct.labels and rows[0]["file"] == wav
    assert main(["tag", wav, "--model", "byola-v1-512"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("audio-repr: error:") and "models that tag: " in err and "efficientat-mn04-as" in err
    assert main(["tag", str(tmp_path / "missing.wav"), "--model", "efficientat-mn04-as", "--random-init"]) == 1
    assert "no such file" in capsys.readouterr().err
