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


# --- issue 12: the logistic probe, both probes on one cache, EVAR's tie rule, CSV column mapping ----------

def test_fit_logistic_matches_scikit_learn():
    """The dependency-free L-BFGS fit minimises scikit-learn's LogisticRegression objective: converged, both
    give the same weights and probabilities (sklearn's coef_ is [K, D], ours [D, K])."""
    sklearn = pytest.importorskip("sklearn.linear_model")
    X, labels = _clusters(4, 40, dim=10, sep=1.5, seed=3)
    y = np.array([int(s[1:]) for s in labels])
    Xs, = ev._standardise(X)
    for C in (1.0, 0.05):
        W, b = ev.fit_logistic(Xs, y, 4, C=C, tol=1e-9)
        ref = sklearn.LogisticRegression(C=C, tol=1e-10, max_iter=5000).fit(Xs, y)
        assert np.abs(W.T - ref.coef_).max() < 1e-4 * np.abs(ref.coef_).max()
        logits = Xs @ W + b
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        assert np.abs(p - ref.predict_proba(Xs)).max() < 1e-5
    W_weak, _ = ev.fit_logistic(Xs, y, 4, C=1.0, tol=1e-9)
    assert np.abs(W).max() < 0.5 * np.abs(W_weak).max()       # C 0.05 against 1: the penalty acts


def test_logistic_probe_learns_and_ignores_scale(one_thread):
    X, labels = _clusters(5, 60, dim=12, sep=5.0)
    y = np.array([int(s[1:]) for s in labels])
    idx = np.random.default_rng(1).permutation(len(y))
    tr, te = idx[:200], idx[200:]
    acc = ev.logistic_probe(X[tr], y[tr], X[te], y[te])
    assert acc > 0.95
    scaled = X * np.geomspace(1e-3, 1e3, X.shape[1]) + 50.0   # standardised first: column scales do not matter
    assert ev.logistic_probe(scaled[tr], y[tr], scaled[te], y[te]) == pytest.approx(acc, abs=1e-9)
    shuffled = np.random.default_rng(2).permutation(y)
    assert ev.logistic_probe(X[tr], shuffled[tr], X[te], shuffled[te]) < 0.4   # chance is 0.2
    with pytest.raises(ValueError, match="C must be positive"):
        ev.fit_logistic(X, y, C=0.0)


def test_evaluate_logistic_probe_is_deterministic_and_uses_all_training_rows(tmp_path, monkeypatch, one_thread):
    X, labels = _clusters(3, 30, sep=3.0)
    folds = [str(i % 3 + 1) for i in range(len(labels))]
    csv, embedded = _feature_dataset(tmp_path, monkeypatch, X, labels, folds)
    calls = []
    real = ev.logistic_probe

    def spy(Xtr, ytr, Xte, yte, **kw):
        calls.append((len(ytr), len(yte), kw))
        return real(Xtr, ytr, Xte, yte, **kw)

    monkeypatch.setattr(ev, "logistic_probe", spy)
    res = evaluate(_Fixed(), csv, probe="logistic", C=0.5)
    assert res.probe == "logistic" and res.deterministic and res.dims == 12
    assert [c[:2] for c in calls] == [(60, 30)] * 3 and all(c[2] == {"C": 0.5} for c in calls)  # one fit per fold, no holdout
    assert all(v == [v[0]] * 3 for v in res.per_seed.values()) and res.std == 0.0
    assert res.mean > 0.9 and "logistic regression" in res.report() and "±" not in res.report()
    assert res.as_dict()["probe"] == "logistic" and res.as_dict()["deterministic"] is True
    with pytest.raises(ValueError, match="unknown probe 'svm'"):
        evaluate(_Fixed(), csv, probe="svm")


def test_logistic_probe_needs_no_validation_rows(tmp_path, monkeypatch):
    """A class with a single training row cannot give a validation row (the EVAR probe refuses), but the
    logistic probe holds nothing out: it runs, with the small-data warning."""
    X, labels = _clusters(3, 8)
    labels, X = labels[:-6], X[:-6]                            # c2 keeps two rows: one to train, one to test
    split = ["train"] * len(labels)
    split[0] = split[8] = split[-1] = "test"
    csv, _ = _feature_dataset(tmp_path, monkeypatch, X, labels, split, kind="split")
    with pytest.raises(ValueError, match=r"at least 2 training rows.*'c2' \(1\)"):
        evaluate(_Fixed(), csv)
    with pytest.warns(UserWarning, match=r"only 1 training rows, fewer than 5") as got:
        res = evaluate(_Fixed(), csv, probe="logistic", seeds=(1,))
    assert not any("after the validation holdout" in str(w.message) for w in got)
    assert list(res.folds) == ["test"]


def test_linear_probe_keeps_the_later_weights_on_a_tie(one_thread):
    """EVAR's early stopping counts a tie with the best validation accuracy as the best. The validation rows
    here are one point with both labels, so every epoch ties at 50 %: the probe must train on to
    ``max_epochs`` and keep the last weights (a strict rule stops after ``patience`` epochs and restores the
    first epoch's weights, which are near chance on the test rows)."""
    rng = np.random.default_rng(0)

    def make(n):
        y = rng.integers(0, 2, n)
        X = rng.standard_normal((n, 32))
        X[:, 0] += 1.5 * (2 * y - 1)
        return X, y

    (Xtr, ytr), (Xte, yte) = make(400), make(400)
    Xva, yva = np.repeat(rng.standard_normal((1, 32)), 2, axis=0), np.array([0, 1])
    for seed in (42, 43):
        assert linear_probe(Xtr, ytr, Xva, yva, Xte, yte, seed=seed, patience=5, max_epochs=100, lr=1e-2) > 0.85


def _esc50_like(root, per_class=6):
    """A CSV in ESC-50's own layout (filename, fold, target, category) with the audio in a sub-folder."""
    audio = root / "audio" / "16000"
    audio.mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for ci, f in enumerate([300, 1200, 3000]):
        for k in range(per_class):
            t = np.arange(8000) / 16000
            x = 0.3 * np.sin(2 * np.pi * f * t) + 0.05 * rng.standard_normal(len(t))
            name = f"{k % 3 + 1}-{ci}{k}-A-{ci}.wav"
            sf.write(audio / name, x.astype(np.float32), 16000)
            rows.append(f"{name},{k % 3 + 1},{ci},tone{ci},False")
    csv = root / "meta.csv"
    csv.write_text("filename,fold,target,category,esc10\n" + "\n".join(rows) + "\n")
    return csv


def test_read_dataset_maps_columns_and_audio_folder(tmp_path):
    csv = _esc50_like(tmp_path)
    files, labels, groups, kind = read_dataset(csv, "fold", file_column="filename", label_column="category",
                                               audio_dir="audio/16000")
    assert kind == "fold" and len(files) == 18 and all(f.is_file() for f in files)
    assert files[0] == tmp_path / "audio" / "16000" / "1-00-A-0.wav"
    assert labels[:2] == ["tone0", "tone0"] and groups[:3] == ["1", "2", "3"]
    _, targets, _, _ = read_dataset(csv, file_column="filename", label_column="target")
    assert targets[-1] == "2"
    with pytest.raises(ValueError, match=r"'file' and 'label'.*missing 'file', 'label'"):
        read_dataset(csv)
    with pytest.raises(ValueError, match=r"missing 'name'.*columns: \['filename', 'fold'"):
        read_dataset(csv, file_column="name", label_column="category")


def test_both_probes_share_one_cache_and_one_calibration(tmp_path, monkeypatch, one_thread):
    """The embeddings and the dataset statistics are computed once: the second probe reads both from the
    cache, and the random draws of a baseline share one calibration (it depends on the front end only)."""
    csv = _esc50_like(tmp_path)
    cols = dict(fold_column="fold", file_column="filename", label_column="category", audio_dir="audio/16000",
                cache=tmp_path / "cache", calibrate=True, seeds=(5, 6))
    calibrations, embeds = [], []
    real_cal, real_embed = audio_repr.Encoder.calibrate, audio_repr.Encoder.embed

    def count_cal(self, *a, **k):
        calibrations.append(self)
        return real_cal(self, *a, **k)

    def count_embed(self, *a, **k):
        embeds.append(self)
        return real_embed(self, *a, **k)

    monkeypatch.setattr(audio_repr.Encoder, "calibrate", count_cal)
    monkeypatch.setattr(audio_repr.Encoder, "embed", count_embed)
    drawn = []

    def random_encoder(seed):
        torch.manual_seed(seed)
        drawn.append(audio_repr.load("byola-v1-512", pretrained=False))
        return drawn[-1]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ev.SmallDataWarning)
        a = evaluate(random_encoder, csv, lr=1e-2, **cols)
        assert len(calibrations) == 1 and len(embeds) == 2           # one calibration, one embedding per draw
        assert drawn[0].norm_stats == drawn[1].norm_stats != (-5.4919195, 5.0389895)
        fresh = audio_repr.load("byola-v1-512", pretrained=False)
        assert real_cal(fresh, [str(f) for f in read_dataset(csv, file_column="filename", label_column="category",
                                                              audio_dir="audio/16000")[0]]) == \
            pytest.approx(drawn[1].norm_stats, rel=1e-12)
        calibrations.clear(), embeds.clear()
        b = evaluate(random_encoder, csv, probe="logistic", **cols)
    assert calibrations == [] and embeds == []                       # all from the cache
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2 and len(list((tmp_path / "cache").glob("*.json"))) == 1
    assert a.probe == "evar" and b.probe == "logistic" and not b.deterministic   # random draws: one fit per draw
    assert a.mean > 0.6 and b.mean > 0.6                             # three tones: chance is 1/3


def test_evaluate_cli_probe_columns_and_seeds(tmp_path):
    csv = _esc50_like(tmp_path)
    base = [sys.executable, "-m", "audio_repr.cli", "evaluate", str(csv), "--model", "byola-v1-512", "--random-init",
            "-q", "--file-column", "filename", "--label-column", "category", "--audio-dir", "audio/16000"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(base + ["--probe", "logistic", "--seeds", "7", "--C", "0.5", "--json", str(tmp_path / "r.json")],
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["probe"] == "logistic" and r["seeds"] == [7] and list(r["folds"]) == ["fold 1", "fold 2", "fold 3"]
    assert r["probe_settings"] == {"C": 0.5} and r["file_column"] == "filename" and r["dims"] == 512
    assert r["mean"] > 0.6 and "logistic regression probe" in out.stdout
    bad = subprocess.run(base + ["--C", "2"], capture_output=True, text=True, env=env, timeout=600)
    assert bad.returncode == 1 and "--probe logistic" in bad.stderr
    bad = subprocess.run(base + ["--seeds", "1,x"], capture_output=True, text=True, env=env, timeout=600)
    assert bad.returncode == 2 and "--seeds" in bad.stderr


# --- issue 21: the logistic probe reproduces at any thread count; short small-data warnings ----------------

def _separable_problem(n=1200, d=256, k=20, seed=0):
    """Nearly separable, as frozen embeddings of a many-class benchmark are, and large enough for the matrix
    products to be split over two threads."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    X = rng.normal(size=(k, d))[y] * 0.3 + rng.normal(size=(n, d))
    return np.maximum(X, 0) + 0.1 * X, y


def test_logistic_probe_is_identical_at_1_and_2_threads():
    """The fit's rounding followed the thread count (matrix products split over threads), and with it the
    point where L-BFGS stops: the documented ESC-50 figure moved by 0.25 points on another machine. The fit
    now runs on one thread: bit-identical weights, the same accuracy, and the caller's setting restored."""
    X, y = _separable_problem()
    te = (np.arange(len(y)) // 20) % 5 == 0
    tr = ~te
    Xs, _ = ev._standardise(X[tr], X[te])
    before = torch.get_num_threads()
    got = {}
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            W, b = ev.fit_logistic(Xs, y[tr], 20)
            got[threads] = (W, b, ev.logistic_probe(X[tr], y[tr], X[te], y[te]))
            assert torch.get_num_threads() == threads                     # the caller's setting is restored
    finally:
        torch.set_num_threads(before)
    (W1, b1, acc1), (W2, b2, acc2) = got[1], got[2]
    assert np.array_equal(W1, W2) and np.array_equal(b1, b2)
    assert acc1 == acc2 and 0.5 < acc1 < 1.0


def test_small_data_warnings_stay_short_with_many_classes_and_folds(tmp_path, monkeypatch):
    """50 classes x 5 folds of a too-small set wrote 4.8 KB of class x fold lists into one warning: now one
    short line saying how many folds, the smallest classes of the worst one, and how many more."""
    X, labels = _clusters(50, 6, dim=60)
    folds = [str(i % 5 + 1) for i in range(len(labels))]
    folds[-1] = "5"                                            # some fold test rows whose class is absent elsewhere
    labels = labels[:-1] + ["lonely"]
    csv, _ = _feature_dataset(tmp_path, monkeypatch, X, labels, folds)
    _spy_probe(monkeypatch, acc=0.5)
    with pytest.warns(ev.SmallDataWarning) as got:
        res = evaluate(_Fixed(), csv, probe="logistic", seeds=(1,))
    messages = [str(w.message) for w in got]
    assert len(messages) == 2 and res.warnings == messages
    small, absent = messages
    assert small.startswith("small data: some class has only 1 training rows") and "in 5 of 5 folds" in small
    assert small.endswith("fold 1: 'lonely' (1), 'c0' (4), 'c10' (4), 'c15' (4) and 8 more)")   # smallest first
    assert "absent" in absent and "in 1 of 5 folds; fold 5: 'lonely'" in absent
    assert max(map(len, messages)) < 300


def test_standardise_is_relative_as_scikit_learn():
    """Features of a tiny scale (a random-init EfficientAT's are ~3e-9) are standardised, not taken for constant
    columns (the fixed 1e-8 bound before made every such column constant: chance accuracy); a truly constant column
    is only centred; the scaling equals scikit-learn's StandardScaler."""
    preprocessing = pytest.importorskip("sklearn.preprocessing")
    g = np.random.default_rng(0)
    X = np.concatenate([3e-9 * g.standard_normal((200, 3)), np.full((200, 1), 0.7),
                        g.standard_normal((200, 2)) + 5.0], axis=1).astype(np.float32)
    Xs, = ev._standardise(X)
    assert np.allclose(Xs[:, :3].std(0), 1.0, atol=1e-4)              # tiny features: unit variance
    assert np.all(Xs[:, 3] == 0)                                       # the constant column: centred only
    ref = preprocessing.StandardScaler().fit(X)
    assert np.allclose(Xs, ref.transform(X), rtol=1e-5, atol=1e-5)
