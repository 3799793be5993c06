"""The linear-probe protocol end to end on generated data (files on disk, CSV, CLI)."""

import json
import os
import subprocess
import sys

import numpy as np
import soundfile as sf
import torch

import audio_repr
from audio_repr.evaluate import evaluate, linear_probe, read_dataset
from conftest import ROOT


def _tone_dataset(root, per_class=12, kind="split"):
    """Three classes of tones (300, 1200, 3000 Hz) with noise, as WAV files and a CSV."""
    rng = np.random.default_rng(0)
    rows = []
    for ci, f in enumerate([300, 1200, 3000]):
        for k in range(per_class):
            t = np.arange(int(16000 * rng.uniform(0.4, 0.9))) / 16000
            x = 0.3 * np.sin(2 * np.pi * f * (1 + 0.02 * rng.standard_normal()) * t) + 0.05 * rng.standard_normal(len(t))
            name = f"c{ci}_{k}.wav"
            sf.write(root / name, x.astype(np.float32), 16000)
            group = ("test" if k < 3 else "train") if kind == "split" else str(k % 3 + 1)
            rows.append(f"{name},tone{ci},{group}")
    csv = root / "data.csv"
    csv.write_text(f"file,label,{kind}\n" + "\n".join(rows) + "\n")
    return csv


def test_linear_probe_learns_separable_data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 5)) + np.repeat(np.eye(3, 5) * 4, 100, axis=0)
    y = np.repeat(np.arange(3), 100)
    idx = rng.permutation(300)
    tr, va, te = idx[:200], idx[200:250], idx[250:]
    acc = linear_probe(X[tr], y[tr], X[va], y[va], X[te], y[te], seed=42, lr=1e-2)
    assert acc > 0.95
    y_rand = rng.permutation(y)
    assert linear_probe(X[tr], y_rand[tr], X[va], y_rand[va], X[te], y_rand[te], seed=42, lr=1e-2) < 0.6


def test_evaluate_splits_and_folds(tmp_path):
    enc = audio_repr.load("byola-v1-512", pretrained=False)
    csv = _tone_dataset(tmp_path, kind="split")
    files, labels, groups, kind = read_dataset(csv)
    assert kind == "split" and len(files) == 36 and files[0].is_file()
    res = evaluate(enc, csv, cache=tmp_path / "cache", lr=1e-2)
    assert list(res.folds) == ["test"] and len(res.per_seed["test"]) == 3
    assert res.mean > 0.9            # tones are easy even for random conv features
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 1   # embeddings cached once
    folds = _tone_dataset(tmp_path, kind="fold")
    res = evaluate(enc, folds, lr=1e-2)
    assert list(res.folds) == ["fold 1", "fold 2", "fold 3"]
    assert "mean accuracy" in res.report()


def test_evaluate_draws_one_network_per_seed(tmp_path):
    """A random baseline given as ``seed -> Encoder`` gets a fresh network per seed, each embedded once."""
    csv = _tone_dataset(tmp_path)
    drawn = []

    def random_encoder(seed):
        drawn.append(seed)
        torch.manual_seed(seed)
        return audio_repr.load("byola-v1-512", pretrained=False)

    res = evaluate(random_encoder, csv, cache=tmp_path / "cache", seeds=(5, 6), lr=1e-2)
    assert drawn == [5, 6] and res.seeds == [5, 6] and res.init is not None
    assert len(res.per_seed["test"]) == 2 and res.model == "byola-v1-512"
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2      # two different networks, two caches
    again = evaluate(random_encoder, csv, cache=tmp_path / "cache", seeds=(5, 6), lr=1e-2)
    assert again.per_seed == res.per_seed                          # same draws, same probes
    assert "random initialisation per seed" in res.report() and "[5, 6]" in res.report()


def test_evaluate_cli(tmp_path):
    csv = _tone_dataset(tmp_path)
    out = subprocess.run([sys.executable, "-m", "audio_repr.cli", "evaluate", str(csv), "--model", "byola-v1-512",
                          "--random-init", "--json", str(tmp_path / "r.json"), "-q"], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "mean accuracy" in out.stdout
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["weights"] == "random-init" and 0 <= r["mean"] <= 1
    assert r["seeds"] == [42, 43, 44] and "per seed" in r["init"]
    both = subprocess.run([sys.executable, "-m", "audio_repr.cli", "evaluate", str(csv), "--model", "byola-v1-512",
                           "--random-init", "--weights", "w.pth", "-q"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=600)
    assert both.returncode == 1 and "exclude each other" in both.stderr


def test_plots(tmp_path):
    pytest = __import__("pytest")
    pytest.importorskip("matplotlib")
    from audio_repr.plot import plot_file, plot_map

    enc = audio_repr.load("byola-v1-512", pretrained=False)
    csv = _tone_dataset(tmp_path)
    png = plot_file(enc, tmp_path / "c0_0.wav", tmp_path / "file.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    png = plot_map(enc, csv, tmp_path / "map.png", method="pca")
    assert png.stat().st_size > 1000


def test_unit_length_and_unit_sec_protocol(tmp_path):
    from audio_repr.evaluate import embed_dataset, unit_length

    x = torch.arange(5.0)
    assert unit_length(x, 9).tolist() == [0, 0, 0, 1, 2, 3, 4, 0, 0]
    assert unit_length(torch.arange(10.0), 4).tolist() == [3, 4, 5, 6]
    enc = audio_repr.load("byola-v1-512", pretrained=False)
    csv = _tone_dataset(tmp_path, per_class=4)
    files, *_ = read_dataset(csv)
    X = embed_dataset(enc, files[:3], unit_sec=1.0)
    wav, _ = audio_repr.load_audio(files[1])
    ref = enc.embed(unit_length(wav, 16000), sr=16000).clip.numpy()
    assert np.allclose(X[1], ref, atol=1e-6)
    res = evaluate(enc, csv, unit_sec=1.0, calibrate=True, lr=1e-2)
    assert 0 <= res.mean <= 1
