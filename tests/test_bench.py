"""audio-repr bench (issue 28): task CSVs from official layouts, the run (cached, resumable, evaluate's numbers),
its tables; and embed's ``short="pad"`` that the bench protocol uses. Small generated tasks only."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import audio_repr
from audio_repr import bench
from audio_repr.cli import main
from reference_byola import OriginalV1, randomise


def _tone(path: Path, f0: float, seconds: float, sr: int = 16000, seed: int = 0, noise: float = 0.01):
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(round(seconds * sr))) / sr
    w = 0.3 * np.sin(2 * np.pi * f0 * t) + noise * np.random.default_rng(seed).standard_normal(len(t))
    sf.write(path, w.astype(np.float32), sr)


def _tones_task(root: Path, name: str = "tones", per_class: int = 8, short_first: bool = False,
                noise: float = 0.01, step: float = 0.02) -> Path:
    """3 classes of tones, ``per_class`` clips each (0.3 s; with ``short_first`` each class's first clip is 30 ms,
    under BYOL-A's 70 ms minimum), folds 1/2 alternating; ``noise`` and ``step`` (the spread of each class's
    frequencies) make it harder."""
    rows = [("file", "label", "fold")]
    for c, f0 in enumerate((300.0, 1200.0, 4000.0)):
        for i in range(per_class):
            rel = f"audio/{name}/c{c}_{i}.wav"
            _tone(root / rel, f0 * (1 + step * i), 0.03 if (short_first and i == 0) else 0.3, seed=10 * c + i,
                  noise=noise)
            rows.append((rel, f"c{c}", str(i % 2 + 1)))
    with open(root / f"{name}.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return root / f"{name}.csv"


@pytest.fixture
def ckpt(tmp_path):
    p = tmp_path / "w.pth"
    torch.save(randomise(OriginalV1(512)).state_dict(), p)
    return p


# ---- short="pad" ---------------------------------------------------------------------------------------
def test_short_clips_pad_centred_or_error():
    enc = audio_repr.load("byola-v1-512", pretrained=False)
    need = enc.min_samples()
    assert enc.frontend.frames_for(need) >= enc.network.min_frames > enc.frontend.frames_for(need - 1)
    wav = np.random.default_rng(0).standard_normal(320).astype(np.float32)     # 20 ms
    with pytest.raises(audio_repr.AudioError, match="too short"):
        enc.embed(wav, sr=16000)                                              # the default is unchanged
    with pytest.raises(ValueError, match="short="):
        enc.embed(wav, sr=16000, short="crop")
    got = enc.embed(wav, sr=16000, short="pad")
    left = (need - 320) // 2
    ref = enc.embed(np.pad(wav, (left, need - 320 - left)), sr=16000)      # centred zeros, by hand
    torch.testing.assert_close(got.clip, ref.clip, rtol=0, atol=0)
    torch.testing.assert_close(got.timestamps_ms, ref.timestamps_ms - 1000.0 * left / 16000)
    assert got.duration_s == pytest.approx(0.02)
    long = np.random.default_rng(1).standard_normal(16000).astype(np.float32)
    a, b = enc.embed([long, wav], sr=16000, short="pad")                     # a long clip is untouched
    torch.testing.assert_close(a.clip, enc.embed(long, sr=16000).clip, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(b.clip, ref.clip, rtol=1e-5, atol=1e-5)


def test_cli_embed_short_pad(tmp_path, ckpt):
    _tone(tmp_path / "d" / "short.wav", 440, 0.02)
    _tone(tmp_path / "d" / "long.wav", 440, 0.5)
    args = ["embed", str(tmp_path / "d"), "-m", "byola-v1-512", "--weights", str(ckpt), "-q"]
    assert main(args + ["--out", str(tmp_path / "o1")]) == 2                          # short fails by default
    assert not (tmp_path / "o1" / "short.wav.npz").exists()
    assert main(args + ["--out", str(tmp_path / "o2"), "--short", "pad"]) == 0
    with np.load(tmp_path / "o2" / "short.wav.npz") as d:
        assert d["clip"].shape == (512,) and float(d["duration_s"]) == pytest.approx(0.02)
    assert main(args + ["--out", str(tmp_path / "o3"), "--short", "pad", "--engine", "ray", "--format", "parquet"]) == 1
    assert not (tmp_path / "o3").exists()


def test_hear_modules_accept_any_length():
    from audio_repr.hear import HearModel, get_scene_embeddings, get_timestamp_embeddings

    model = HearModel(audio_repr.load("byola-v1-512", pretrained=False))
    audio = torch.randn(2, 160)                                             # 10 ms, below BYOL-A's 70 ms
    scene = get_scene_embeddings(audio, model)
    frames, stamps = get_timestamp_embeddings(audio, model)
    ref = model.encoder.embed(list(audio), sr=16000, short="pad")
    assert scene.shape == (2, 512) and frames.shape == (2, 1, 512) and stamps.shape == (2, 1)
    torch.testing.assert_close(scene, torch.stack([e.clip for e in ref]), rtol=1e-5, atol=1e-5)


# ---- prepare -------------------------------------------------------------------------------------------
def _read(p):
    with open(p, newline="") as f:
        return list(csv.DictReader(f))


def test_prepare_official_layouts(tmp_path):
    w = lambda p: _tone(p, 440, 0.01, sr=8000)   # noqa: E731 - the files only need to exist and be audio
    fsdd = tmp_path / "fsdd" / "recordings"
    for d in ("3", "7"):
        for sp in ("jackson", "theo"):
            for k in range(7):
                w(fsdd / f"{d}_{sp}_{k}.wav")
    rows = _read(bench.prepare("fsdd", tmp_path / "fsdd", tmp_path / "tasks"))
    assert len(rows) == 28 and {r["label"] for r in rows} == {"3", "7"}
    assert all((r["split"] == "test") == (int(Path(r["file"]).stem.split("_")[2]) < 5) for r in rows)

    esc = tmp_path / "esc"
    (esc / "meta").mkdir(parents=True)
    with open(esc / "meta" / "esc50.csv", "w") as f:
        f.write("filename,fold,target,category,esc10,src_file,take\n1-1-A-0.wav,1,0,dog,True,1,A\n"
                "2-2-A-1.wav,2,1,rooster,False,2,A\n")
    w(esc / "audio" / "1-1-A-0.wav")
    w(esc / "audio" / "2-2-A-1.wav")
    rows = _read(bench.prepare("esc50", esc, tmp_path / "tasks"))
    assert [(Path(r["file"]).name, r["label"], r["fold"]) for r in rows] == [
        ("1-1-A-0.wav", "dog", "1"), ("2-2-A-1.wav", "rooster", "2")]
    assert all(Path(r["file"]).is_file() for r in rows)

    us = tmp_path / "us8k" / "audio"
    for fold, name in (("fold1", "100032-3-0-0.wav"), ("fold10", "7383-3-0-0.wav"), ("fold2", "100263-2-0-117.wav")):
        w(us / fold / name)
    rows = _read(bench.prepare("us8k", tmp_path / "us8k", tmp_path / "tasks"))
    assert sorted((r["label"], r["fold"]) for r in rows) == [("children_playing", "2"), ("dog_bark", "1"),
                                                             ("dog_bark", "10")]

    # Speech Commands' 12-class test set alone: speaker-disjoint folds
    spc = tmp_path / "spc"
    for word, speakers in (("yes", "0a7c2a8d 0b09edd3 0c40e715"), ("no", "0a7c2a8d 1b4c9b89"),
                           ("_unknown_", "0b09edd3")):
        for s in speakers.split():
            for k in range(2):
                w(spc / word / (f"bed_{s}_nohash_{k}.wav" if word == "_unknown_" else f"{s}_nohash_{k}.wav"))
    w(spc / "_silence_" / "17.wav")
    w(spc / "wow" / "0a7c2a8d_nohash_0.wav")          # not one of the 12 classes' folders
    rows = _read(bench.prepare("speechcommands", spc, tmp_path / "tasks"))
    assert len(rows) == 13 and {r["label"] for r in rows} == {"yes", "no", "_unknown_", "_silence_"}
    fold_of = {}
    for r in rows:
        assert fold_of.setdefault(r["speaker"], r["fold"]) == r["fold"]      # one speaker, one fold
    assert {r["fold"] for r in rows} <= {"1", "2", "3", "4", "5"}

    gms = tmp_path / "gms"
    w(gms / "train" / "music" / "bagpipe.wav")
    w(gms / "train" / "speech" / "comedy.wav")
    w(gms / "test" / "music_1.wav")
    w(gms / "test" / "speech_1.wav")
    rows = _read(bench.prepare("gtzan-music-speech", gms, tmp_path / "tasks"))
    assert sorted((r["label"], r["split"]) for r in rows) == [("music", "test"), ("music", "train"),
                                                              ("speech", "test"), ("speech", "train")]
    with pytest.raises(FileNotFoundError, match="no audio files"):
        bench.prepare("crema-d", gms, tmp_path / "tasks")
    assert main(["bench", "prepare", "fsdd", str(tmp_path / "nowhere"), "--out", str(tmp_path / "t")]) == 1


def test_prepare_other_layouts(tmp_path):
    w = lambda p: _tone(p, 440, 0.01, sr=8000)   # noqa: E731
    cre = tmp_path / "crema" / "AudioWAV"
    for actor in ("1001", "1002", "1003"):
        for emo in ("ANG", "HAP"):
            w(cre / f"{actor}_IEO_{emo}_HI.wav")
    rows = _read(bench.prepare("crema-d", tmp_path / "crema", tmp_path / "t"))
    assert len(rows) == 6 and {r["label"] for r in rows} == {"ANG", "HAP"}
    assert all(len({r["fold"] for r in rows if r["speaker"] == a}) == 1 for a in ("1001", "1002", "1003"))

    gt = tmp_path / "gtzan" / "genres"
    for g in ("blues", "jazz"):
        for k in (0, 1, 13):
            w(gt / g / f"{g}.{k:05d}.wav")
    rows = _read(bench.prepare("gtzan", tmp_path / "gtzan", tmp_path / "t"))
    assert sorted((r["label"], r["fold"]) for r in rows if r["label"] == "jazz") == [
        ("jazz", "1"), ("jazz", "2"), ("jazz", "4")]
    (tmp_path / "gtzan" / "train_filtered.txt").write_text("blues/blues.00000.wav\njazz/jazz.00000.wav\n")
    (tmp_path / "gtzan" / "test_filtered.txt").write_text("jazz/jazz.00001.wav\n")
    rows = _read(bench.prepare("gtzan", tmp_path / "gtzan", tmp_path / "t"))
    assert sorted((Path(r["file"]).name, r["split"]) for r in rows) == [
        ("blues.00000.wav", "train"), ("jazz.00000.wav", "train"), ("jazz.00001.wav", "test")]

    ns = tmp_path / "nsynth"
    for split, keys in (("train", ["bass_1-022-100", "organ_2-030-050"]), ("test", ["bass_3-040-075"])):
        (ns / f"nsynth-{split}" / "audio").mkdir(parents=True)
        meta = {k: {"instrument_family_str": k.split("_")[0]} for k in keys}
        (ns / f"nsynth-{split}" / "examples.json").write_text(json.dumps(meta))
        for k in keys:
            w(ns / f"nsynth-{split}" / "audio" / f"{k}.wav")
    rows = _read(bench.prepare("nsynth", ns, tmp_path / "t"))
    assert sorted((r["label"], r["split"]) for r in rows) == [("bass", "test"), ("bass", "train"), ("organ", "train")]

    vs = tmp_path / "vocalsound" / "audio_16k"
    for spk in ("f0003", "m0010"):
        for lab in ("cough", "laughter"):
            w(vs / f"{spk}_0_{lab}.wav")
    rows = _read(bench.prepare("vocalsound", tmp_path / "vocalsound", tmp_path / "t"))
    assert {r["label"] for r in rows} == {"cough", "laughter"} and "fold" in rows[0]
    df = tmp_path / "vocalsound" / "datafiles"
    df.mkdir()
    (df / "tr.json").write_text(json.dumps({"data": [{"wav": "x/f0003_0_cough.wav"}, {"wav": "x/f0003_0_laughter.wav"}]}))
    (df / "te.json").write_text(json.dumps({"data": [{"wav": "x/m0010_0_cough.wav"}]}))
    rows = _read(bench.prepare("vocalsound", tmp_path / "vocalsound", tmp_path / "t"))
    assert sorted(r["split"] for r in rows) == ["test", "train", "train"]

    vox = tmp_path / "vox"
    for rel in ("id10001/abc/00001.wav", "id10001/abd/00002.wav", "id10002/xyz/00001.wav"):
        w(vox / "wav" / rel)
    (vox / "iden_split.txt").write_text("1 id10001/abc/00001.wav\n3 id10001/abd/00002.wav\n1 id10002/xyz/00001.wav\n"
                                        "2 id10003/gone/00001.wav\n")
    rows = _read(bench.prepare("voxceleb1", vox, tmp_path / "t"))
    assert sorted((r["label"], r["split"]) for r in rows) == [("id10001", "test"), ("id10001", "train"),
                                                              ("id10002", "train")]


# ---- run -----------------------------------------------------------------------------------------------
def test_bench_equals_evaluate_and_writes_the_tables(tmp_path, ckpt, capsys):
    task = _tones_task(tmp_path / "tasks", noise=0.5, step=0.6, per_class=10)     # hard: the seeds disagree
    out = tmp_path / "res"
    assert main(["bench", "run", "-m", "byola-v1-512", "--tasks", str(tmp_path / "tasks"), "--out", str(out),
                 "--seeds", "2", "--random-init", "--weights", f"byola-v1-512={ckpt}", "-q"]) == 0
    recs = json.loads((out / "results.json").read_text())
    assert [(r["model"], r["init"], r["task"], r["metric"], r["n_clips"]) for r in recs] == [
        ("byola-v1-512", "pretrained", "tones", "accuracy", 30), ("byola-v1-512", "random", "tones", "accuracy", 30)]
    assert all(r["mean"] < 0.9 and r["std"] > 0 for r in recs)          # not a trivial 100%: the seeds disagree
    for r, extra in zip(recs, (["--weights", str(ckpt)], ["--random-init"])):
        js = tmp_path / f"eval-{r['init']}.json"
        assert main(["evaluate", str(task), "-m", "byola-v1-512", *extra, "--seeds", "42,43", "--json", str(js),
                     "-q"]) == 0
        ev = json.loads(js.read_text())
        assert r["per_seed"] == ev["per_seed"] and r["mean"] == ev["mean"] and r["std"] == ev["std"]
    md = (out / "results.md").read_text()
    assert "| model | tones | average |" in md and "| byola-v1-512 (random init) |" in md
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| model | tones | average |" in capsys.readouterr().out


def test_short_clips_are_padded_missing_data_skipped(tmp_path, ckpt, capsys):
    tasks = tmp_path / "tasks"
    _tones_task(tasks, "short", short_first=True)
    with open(tasks / "gone.csv", "w") as f:
        f.write("file,label,split\nnot/here.wav,a,train\nnot/there.wav,b,test\n")
    with open(tasks / "nosplit.csv", "w") as f:
        f.write("file,label\nx.wav,a\n")
    args = ["bench", "run", "-m", "byola-v1-512", "--tasks", str(tasks), "--out", str(tmp_path / "res"),
            "--weights", f"byola-v1-512={ckpt}", "--seeds", "1", "--probe", "logistic", "-q"]
    assert main(args) == 1                                        # a CSV without folds: refused before any work
    assert "a task needs a 'fold' or a 'split' column" in capsys.readouterr().err
    (tasks / "nosplit.csv").unlink()
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "task gone: skipped, 2 of 2 audio file(s) missing" in err
    recs = json.loads((tmp_path / "res" / "results.json").read_text())
    assert [r["task"] for r in recs] == ["short"] and recs[0]["n_clips"] == 24      # 30 ms clips padded, not lost
    assert len(list((tmp_path / "res" / "embeddings" / "byola-v1-512" / "short").rglob("*.npz"))) == 24


def test_an_interrupted_run_resumes_from_its_cache(tmp_path, ckpt, monkeypatch):
    from audio_repr.corpus import NpzStore

    tasks = tmp_path / "tasks"
    _tones_task(tasks)
    kw = dict(probe="logistic", seeds=[42], weights={"byola-v1-512": str(ckpt)}, log=lambda m: None)
    ref = bench.run(["byola-v1-512"], tasks, tmp_path / "ref", **kw)

    write, calls = NpzStore.write, []

    def interrupted(self, *a):                    # Ctrl-C after 10 files were written
        if len(calls) == 10:
            raise KeyboardInterrupt
        calls.append(1)
        write(self, *a)

    monkeypatch.setattr(NpzStore, "write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        bench.run(["byola-v1-512"], tasks, tmp_path / "res", **kw)
    monkeypatch.setattr(NpzStore, "write", write)
    assert not (tmp_path / "res" / "results.json").exists()
    folder = tmp_path / "res" / "embeddings" / "byola-v1-512" / "tones"
    assert len(list(folder.glob("*.npz"))) == 10
    logged = []
    again = bench.run(["byola-v1-512"], tasks, tmp_path / "res", **{**kw, "log": logged.append})
    assert any("resumed: 10 of 24 file(s) were already embedded" in m for m in logged)
    assert again[0]["per_seed"] == ref[0]["per_seed"]
    logged.clear()
    bench.run(["byola-v1-512"], tasks, tmp_path / "res", **{**kw, "log": logged.append})    # all done: reused
    assert any("probed before" in m for m in logged)


def test_mistakes_are_refused_before_any_work(tmp_path, capsys):
    tasks = tmp_path / "tasks"
    _tones_task(tasks, per_class=2)
    base = ["bench", "run", "--tasks", str(tasks), "--out", str(tmp_path / "res"), "-q"]
    for extra, msg in ((["-m", "byola-v9"], "byola-v9"), (["-m", "byola-v1-512", "--weights", "x.pth"], "MODEL=PATH"),
                       (["-m", "byola-v1-512", "--weights", "vggish=x.pth"], "not one of the models"),
                       (["-m", "byola-v1-512,byola-v1-512"], "named twice")):
        assert main(base + extra) == 1
        assert msg in capsys.readouterr().err
    assert not (tmp_path / "res" / "embeddings").exists()
