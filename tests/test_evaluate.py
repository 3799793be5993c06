"""The linear-probe protocol end to end on generated data (files on disk, CSV, CLI)."""

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import soundfile as sf
import torch

import audio_repr
import audio_repr.evaluate as ev
from audio_repr.evaluate import EvalResult, evaluate, linear_probe, read_dataset
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
    assert r["weights"] == "random-init" and r["mean"] > 0.6        # three tones: chance is 1/3
    assert r["mean"] == pytest.approx(np.mean(r["per_seed"]["test"]))
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
    torch.manual_seed(0)
    enc = audio_repr.load("byola-v1-512", pretrained=False)
    csv = _tone_dataset(tmp_path, per_class=12)
    files, *_ = read_dataset(csv)
    X = embed_dataset(enc, files[:3], unit_sec=1.0)
    wav, _ = audio_repr.load_audio(files[1])
    ref = enc.embed(unit_length(wav, 16000), sr=16000).clip.numpy()
    assert np.allclose(X[1], ref, atol=1e-6)
    res = evaluate(enc, csv, unit_sec=1.0, calibrate=True, lr=1e-2)
    assert res.mean > 0.5            # chance is 1/3 (three tones, 8 training rows each)


# --- small data: stratified validation holdout, refusals, warnings, spread over seeds -----------------

class _Fixed(torch.nn.Module):
    """Stands in for an encoder: ``evaluate`` reads features from a patched ``embed_dataset``."""
    name = "fixed"


def _feature_dataset(root, monkeypatch, X, labels, groups, kind="fold", extra=None):
    """A CSV whose rows get the embeddings ``X`` (no audio): ``embed_dataset`` is patched to return them."""
    cols = [kind] + list(extra or {})
    rows = [",".join([f"r{i}.wav", lab, g] + [str(v[i]) for v in (extra or {}).values()])
            for i, (lab, g) in enumerate(zip(labels, groups))]
    csv = root / "feats.csv"
    csv.write_text("file,label," + ",".join(cols) + "\n" + "\n".join(rows) + "\n")
    embedded = []

    def fake_embed(enc, files, **kw):
        embedded.append(len(files))
        return np.asarray(X, dtype=np.float32)

    monkeypatch.setattr(ev, "embed_dataset", fake_embed)
    return csv, embedded


def _spy_probe(monkeypatch, acc=None):
    """Record every probe's (train, valid, test) labels; return ``acc`` instead of training when given."""
    calls = []
    real = ev.linear_probe

    def spy(Xtr, ytr, Xva, yva, Xte, yte, **kw):
        calls.append((np.asarray(ytr).copy(), np.asarray(yva).copy(), np.asarray(yte).copy(), np.asarray(Xva).copy()))
        return acc if acc is not None else real(Xtr, ytr, Xva, yva, Xte, yte, **kw)

    monkeypatch.setattr(ev, "linear_probe", spy)
    return calls


@pytest.fixture
def one_thread():
    """Probes on a dozen features gain nothing from threads, and lose much on a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _clusters(n_classes, per_class, dim=12, sep=6.0, seed=0):
    """Gaussian clusters (unit variance) around centres ``sep`` apart on the axes: labels ``c0..``,
    features [N, dim]."""
    rng = np.random.default_rng(seed)
    centres = sep * np.eye(n_classes, dim)
    y = np.repeat(np.arange(n_classes), per_class)
    return centres[y] + rng.standard_normal((len(y), dim)), [f"c{k}" for k in y]


def test_holdout_is_stratified_proportional_and_reproducible():
    labels = np.repeat(np.arange(4), [100, 20, 3, 2])
    idx = np.arange(1000, 1000 + len(labels))
    tr, va = ev._holdout(idx, labels, 0.1, 42)
    assert sorted(np.concatenate([tr, va]).tolist()) == idx.tolist()          # a partition of the rows
    lab = dict(zip(idx.tolist(), labels.tolist()))
    assert np.bincount([lab[i] for i in va], minlength=4).tolist() == [10, 2, 1, 1]
    assert np.bincount([lab[i] for i in tr], minlength=4).tolist() == [90, 18, 2, 1]
    again = ev._holdout(idx, labels, 0.1, 42)
    assert all(np.array_equal(a, b) for a, b in zip((tr, va), again))        # reproducible per seed
    other = ev._holdout(idx, labels, 0.1, 43)
    assert not np.array_equal(va, other[1])                                  # another seed, other rows


def test_evaluate_holds_out_every_class_for_validation(tmp_path, monkeypatch):
    """The reported case: 60 FSDD-like rows, 10 classes, one speaker per side. The random 10 % holdout
    validated on 3 clips; stratified, every class is validated on, and the user is told the data are tiny."""
    X, labels = _clusters(10, 6)
    speakers = ["a", "b", "a", "b", "a", "b"] * 10
    csv, _ = _feature_dataset(tmp_path, monkeypatch, X, labels, speakers, kind="speaker")
    calls = _spy_probe(monkeypatch, acc=0.5)
    with pytest.warns(UserWarning, match=r"2 training rows.*fewer than 5"):
        res = evaluate(_Fixed(), csv, fold_column="speaker", seeds=(1, 2))
    assert list(res.folds) == ["speaker a", "speaker b"] and len(calls) == 4
    for ytr, yva, yte, _ in calls:
        assert sorted(set(yva.tolist())) == list(range(10)) and len(yva) == 10
        assert np.bincount(ytr, minlength=10).tolist() == [2] * 10
    assert not np.array_equal(calls[0][3], calls[2][3])                     # seed 2 validates on other rows


def test_evaluate_refuses_a_class_with_one_training_row(tmp_path, monkeypatch):
    X, labels = _clusters(3, 8)
    labels = labels[:-7]                                       # c2 keeps one row
    X = X[:-7]
    split = ["train"] * len(labels)
    split[0] = split[8] = "test"
    csv, embedded = _feature_dataset(tmp_path, monkeypatch, X, labels, split, kind="split")
    with pytest.raises(ValueError, match=r"at least 2 training rows.*test: 'c2' \(1\)"):
        evaluate(_Fixed(), csv)
    assert embedded == []                                      # refused before any embedding work
    csv, embedded = _feature_dataset(tmp_path, monkeypatch, X, labels, ["1"] * len(labels))
    with pytest.raises(ValueError, match="fold 1: no training rows"):
        evaluate(_Fixed(), csv)                                # one fold: nothing left to train on
    assert embedded == []


def test_evaluate_warns_below_the_minimum_rows_per_class(tmp_path, monkeypatch):
    X, labels = _clusters(4, 7)
    split = (["test"] + ["train"] * 6) * 4                     # 6 training rows a class, 1 held out
    csv, _ = _feature_dataset(tmp_path, monkeypatch, X, labels, split, kind="split")
    _spy_probe(monkeypatch, acc=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                         # 5 a class after the holdout: no warning
        evaluate(_Fixed(), csv, seeds=(1,))
    split = (["test"] * 2 + ["train"] * 5) * 4                 # 5 training rows a class, 4 after the holdout
    csv, _ = _feature_dataset(tmp_path, monkeypatch, X, labels, split, kind="split")
    with pytest.warns(UserWarning, match=r"4 training rows.*fewer than 5") as got:
        res = evaluate(_Fixed(), csv, seeds=(1,))
    assert any("test" in str(w.message) for w in got)
    assert res.warnings and "fewer than 5" in res.warnings[0] and "fewer than 5" in res.report()


def test_evaluate_warns_when_test_classes_are_absent_from_training(tmp_path, monkeypatch):
    X, labels = _clusters(3, 12)
    folds = [str(i % 3 + 1) for i in range(24)] + ["2"] * 12  # c2 only ever in fold 2
    csv, _ = _feature_dataset(tmp_path, monkeypatch, X, labels, folds)
    _spy_probe(monkeypatch, acc=0.5)
    with pytest.warns(UserWarning, match=r"absent from.*fold 2: 'c2'") as got:
        evaluate(_Fixed(), csv, seeds=(1,))
    assert not any("fold 1" in str(w.message) or "fold 3" in str(w.message)
                   for w in got if "absent" in str(w.message))


def test_eval_result_spread_over_seeds():
    res = EvalResult(model="m", folds={"a": 0.5, "b": 0.7},
                     per_seed={"a": [0.4, 0.6], "b": [0.7, 0.7]}, seeds=[1, 2])
    assert res.folds_std == pytest.approx({"a": 0.1, "b": 0.0})
    assert res.std == pytest.approx(0.05)          # per-seed means over folds: 0.55, 0.65
    text = res.report()
    assert "50.00% ± 10.00%" in text and "60.00% ± 5.00%" in text
    d = json.loads(res.to_json())
    assert d == json.loads(json.dumps(res.as_dict()))
    assert d["std"] == pytest.approx(0.05) and d["mean"] == pytest.approx(0.6)
    assert d["folds_std"] == pytest.approx({"a": 0.1, "b": 0.0}) and d["per_seed"]["a"] == [0.4, 0.6]
    assert d["seeds"] == [1, 2] and d["model"] == "m" and d["warnings"] == []
    extra = json.loads(res.to_json(csv="x.csv", layers=None))
    assert list(extra)[:3] == ["model", "csv", "layers"] and extra["std"] == d["std"]


def test_evaluate_separable_vs_shuffled_labels(tmp_path, monkeypatch, one_thread):
    """The probe must find separable classes and must not find labels that carry no information."""
    X, labels = _clusters(5, 90)
    folds = [str(i % 3 + 1) for i in range(len(labels))]
    csv, _ = _feature_dataset(tmp_path, monkeypatch, X, labels, folds)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = evaluate(_Fixed(), csv, lr=1e-2)
    assert res.mean > 0.95 and all(len(v) == 3 for v in res.per_seed.values())
    assert 0 <= res.std < 0.05 and set(res.folds_std) == set(res.folds)
    shuffled = list(np.random.default_rng(1).permutation(labels))
    csv, _ = _feature_dataset(tmp_path, monkeypatch, X, shuffled, folds)
    res = evaluate(_Fixed(), csv, lr=1e-2)
    assert res.mean < 0.35                                     # chance is 0.2


def test_explicit_valid_split_keeps_the_probe_numbers(tmp_path, monkeypatch, one_thread):
    """With a ``valid`` split nothing is held out: each seed's number is linear_probe on exactly those rows."""
    X, labels = _clusters(3, 20, sep=1.0)
    split = (["train"] * 12 + ["valid"] * 3 + ["test"] * 5) * 3
    csv, _ = _feature_dataset(tmp_path, monkeypatch, X, labels, split, kind="split")
    res = evaluate(_Fixed(), csv, seeds=(42, 43))
    y = np.array([int(s[1:]) for s in labels])
    s = np.array(split)
    X32 = X.astype(np.float32)
    want = [linear_probe(X32[s == "train"], y[s == "train"], X32[s == "valid"], y[s == "valid"],
                         X32[s == "test"], y[s == "test"], seed=seed) for seed in (42, 43)]
    assert res.per_seed["test"] == want
