"""`audio-repr zero-shot` and `audio-repr search` with laion-clap-htsat (seeded random weights, --random-init; a
small tokenizer made by the test in the cache where `audio-repr download` puts the model's tokenizer files): the
commands print what the library computes, and refuse what they cannot compare in one line."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

import audio_repr
from audio_repr.cli import main
from audio_repr.corpus import load_encoder

from test_clap import make_tokenizer_files

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
MODEL = "laion-clap-htsat"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("clapcli")
    cache = root / "cache"
    vocab, merges = make_tokenizer_files(root / "tok")
    cache.mkdir()
    shutil.copy(vocab, cache / "roberta-base-vocab.json")
    shutil.copy(merges, cache / "roberta-base-merges.txt")
    audio = root / "audio"
    audio.mkdir()
    g = np.random.default_rng(0)
    for i, (name, sr, sec) in enumerate((("bark.wav", 16000, 1.5), ("rain.flac", 48000, 2.0))):
        t = np.arange(int(sr * sec)) / sr
        sf.write(audio / name, (0.3 * np.sin(2 * np.pi * (200 + 300 * i) * t) + 0.05 * g.standard_normal(len(t)))
                 .astype(np.float32), sr)
    return root, cache, audio


@pytest.fixture()
def env(setup, monkeypatch):
    root, cache, audio = setup
    monkeypatch.setenv("AUDIO_REPR_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return root, audio


@pytest.fixture(scope="module")
def reference(setup):
    """The library's numbers for the same random draw (--random-init: seed 0)."""
    root, cache, audio = setup
    mp = pytest.MonkeyPatch()
    mp.setenv("AUDIO_REPR_CACHE", str(cache))
    try:
        enc = load_encoder(MODEL, random_init=True)
        files = [str(audio / "bark.wav"), str(audio / "rain.flac")]
        probs = audio_repr.zero_shot(enc, files, ["dog", "rain", "car horn"])
        text = enc.embed_text(["a dog barking"])
        clips = torch.stack([e.clip for e in enc.embed(files)])
    finally:
        mp.undo()
    return files, probs, audio_repr.similarity(text, clips)[0]


def test_zero_shot_command(env, reference, capsys, tmp_path):
    root, audio = env
    files, probs, _ = reference
    out = tmp_path / "zs.json"
    assert main(["zero-shot", *files, "--model", MODEL, "--random-init", "--labels", "dog, rain,car horn",
                 "--json", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(files[0] + "\t")
    rows = json.loads(out.read_text())
    got = torch.tensor([[r["probabilities"][x] for x in ("dog", "rain", "car horn")] for r in rows])
    assert torch.allclose(got, probs, atol=1e-6)
    best = lines[1].split("\t")[1]                      # labels printed best first
    assert best.rsplit(" ", 1)[0] == ["dog", "rain", "car horn"][int(probs[1].argmax())]


def test_search_command(env, reference, capsys, tmp_path):
    root, audio = env
    files, _, sims = reference
    emb = tmp_path / "emb"
    assert main(["embed", str(audio), "--model", MODEL, "--random-init", "--out", str(emb), "-q"]) == 0
    capsys.readouterr()
    assert main(["search", str(emb), "a dog barking", "--model", MODEL, "--random-init", "--top-k", "5"]) == 0
    lines = [x.split("\t") for x in capsys.readouterr().out.strip().splitlines()]
    assert [x[0] for x in lines] == ["1", "2"]                          # two clips, ranked
    order = torch.argsort(-sims, stable=True).tolist()
    names = ["bark.wav", "rain.flac"]
    assert [x[2] for x in lines] == [names[i] for i in order]
    assert np.allclose([float(x[1]) for x in lines], sims[order].numpy(), atol=1e-4)


def _error(capsys, argv, pattern):
    import re

    assert main(argv) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 1 and err[-1].startswith("audio-repr: error: ") and re.search(pattern, err[-1]), err
    assert "Traceback" not in "\n".join(err)


def test_refusals(env, capsys, tmp_path):
    root, audio = env
    f = str(audio / "bark.wav")
    _error(capsys, ["zero-shot", f, "--model", "vggish", "--random-init", "--labels", "a,b"],
           r"vggish has no text tower: zero-shot needs an audio-text model \(.*laion-clap-htsat")
    _error(capsys, ["zero-shot", f, "--model", MODEL, "--random-init", "--labels", "dog,,cat"], "empty label")
    _error(capsys, ["zero-shot", f, "--model", MODEL, "--random-init", "--labels", "dog"], "at least two labels")
    _error(capsys, ["zero-shot", f, "--model", MODEL, "--random-init", "--labels", "dog,cat", "--template", "x"],
           r"contain '\{\}'")
    _error(capsys, ["zero-shot", f, "--model", MODEL, "--random-init", "--labels", "dog,cat", "--layers", "latent"],
           "--layers does not apply")
    other = tmp_path / "vggish"
    assert main(["embed", f, "--model", "vggish", "--random-init", "--out", str(other), "-q"]) == 0
    _error(capsys, ["search", str(other), "a dog", "--model", MODEL, "--random-init"],
           r"made by model 'vggish', not 'laion-clap-htsat'")
    _error(capsys, ["search", str(tmp_path / "nowhere"), "a dog", "--model", MODEL, "--random-init"], "no such folder")
    latent = tmp_path / "latent"
    monkey_layers = ["embed", f, "--model", MODEL, "--random-init", "--out", str(latent), "-q", "--layers", "latent"]
    assert main(monkey_layers) == 0
    _error(capsys, ["search", str(latent), "a dog", "--model", MODEL, "--random-init"], "'joint' layer alone")
