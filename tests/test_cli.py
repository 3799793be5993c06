"""The command line, run as a user would (a subprocess of the installed entry point's module)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from conftest import ROOT, accumulations, assert_same_arithmetic, chirp
from reference_byola import OriginalV1, randomise


def run(*args, cwd=None, check=True):
    import os

    out = subprocess.run([sys.executable, "-m", "audio_repr.cli", *map(str, args)], capture_output=True, text=True,
                         cwd=cwd, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=600)
    if check:
        assert out.returncode == 0, out.stderr
    return out


def test_list_and_info():
    out = run("list").stdout
    assert "byola-v1-512" in out and "byola-v2-2048" in out
    info = json.loads(run("info", "byola-v1-512").stdout)
    assert info["sample_rate"] == 16000 and info["frame_hop_ms"] == 80.0
    assert info["layers"]["fc2"] == 512 and info["weights"]["sha256"].startswith("6cc64226")
    bad = run("info", "byola-v9", check=False)
    assert bad.returncode == 1 and "Did you mean" in bad.stderr


def test_embed_files_and_folders(tmp_path):
    ckpt = tmp_path / "w.pth"
    torch.save(randomise(OriginalV1(512)).state_dict(), ckpt)
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    sf.write(data / "a.wav", chirp(1.0, 44100), 44100)
    sf.write(data / "sub" / "b.flac", np.stack([chirp(2.0), chirp(2.0)], 1), 16000)
    (data / "sub" / "broken.wav").write_bytes(b"not audio")
    out = tmp_path / "out"
    r = run("embed", data, "--model", "byola-v1-512", "--weights", ckpt, "--out", out, "-q", check=False)
    assert r.returncode == 2 and "broken.wav" in r.stderr              # reported, not fatal
    assert "broken.wav" in (out / "_failures.log").read_text()
    a = np.load(out / "a.wav.npz")
    b = np.load(out / "sub" / "b.flac.npz")
    assert a["frames"].shape == (12, 512) and a["clip"].shape == (512,)
    assert b["frames"].shape == (25, 512) and np.allclose(b["timestamps_ms"][:2], [35.0, 115.0])
    assert str(a["model"]) == "byola-v1-512" and list(a["layers"]) == ["fc2"]
    # same numbers as the Python API
    import audio_repr

    enc = audio_repr.load("byola-v1-512", weights=ckpt)
    e = enc.embed(str(data / "a.wav"))                   # alone; the CLI batched it with b.flac
    assert_same_arithmetic(a["frames"], e.frames.numpy(), *accumulations(enc), what="frames")
    # a second run skips finished files; --layers fusion in another folder
    r2 = run("embed", data / "a.wav", "--model", "byola-v1-512", "--weights", ckpt, "--out", out, "-q")
    assert "skipped 1" in r2.stderr
    run("embed", str(data / "**" / "*.flac"), "--model", "byola-v1-512", "--weights", ckpt, "--out",
             tmp_path / "fused", "--layers", "fusion", "-q")
    f = np.load(tmp_path / "fused" / "sub" / "b.flac.npz")   # named below the glob's folder
    assert f["frames"].shape == (25, 4608) and list(f["layers"]) == ["conv1", "conv2", "conv3", "fc1", "fc2"]
    assert not list(out.rglob("*.part"))


def test_embed_without_weights_offline_explains(tmp_path):
    sf.write(tmp_path / "a.wav", chirp(1.0), 16000)
    r = run("embed", tmp_path / "a.wav", "--model", "byola-v1-512", "--out", tmp_path / "o", check=False)
    assert r.returncode == 1 and "AudioNTT2020-BYOLA-64x96d512.pth" in r.stderr and "https://" in r.stderr


def test_download_model_and_companion_file_from_a_mirror(tmp_path, monkeypatch, capsys):
    """Offline, `download` fills the cache from AUDIO_REPR_MIRROR (a model and VGGish's PCA file), checking
    the pinned SHA-256; the encoder and postprocessor then load by name."""
    import copy

    import audio_repr
    from audio_repr import cli
    from audio_repr import weights as W
    from audio_repr.models import vggish as V

    mirror, cache = tmp_path / "mirror", tmp_path / "cache"
    mirror.mkdir()
    torch.save(randomise(OriginalV1(1024), seed=1).state_dict(), mirror / "AudioNTT2020-BYOLA-64x96d1024.pth")
    g = np.random.default_rng(0)
    pca = mirror / "vggish_pca_params-970ea276.pth"
    torch.save({"pca_eigen_vectors": g.standard_normal((128, 128)), "pca_means": g.standard_normal(128)}, pca)
    (mirror / "vggish-10086976.pth").write_bytes(b"not the official file")
    man = copy.deepcopy(W.manifest())
    # the PCA file's name digits were never confirmed upstream: reported, not refused (ours do not match them)
    assert man["files"]["vggish_pca_params-970ea276.pth"]["sha256_prefix_unconfirmed"] == "970ea276"
    monkeypatch.setattr(W, "manifest", lambda: man)
    monkeypatch.setenv("AUDIO_REPR_MIRROR", str(mirror))
    monkeypatch.setenv("AUDIO_REPR_CACHE", str(cache))

    assert cli.main(["download", "byola-v1-1024", "vggish-pca"]) == 0
    out = capsys.readouterr().out
    assert str(cache / "AudioNTT2020-BYOLA-64x96d1024.pth") in out and "vggish-pca:" in out
    assert sorted(p.name for p in cache.iterdir() if not p.name.startswith(".")) == [
        "AudioNTT2020-BYOLA-64x96d1024.pth", "vggish_pca_params-970ea276.pth"]
    # a file under the official name whose hash is not the pinned one: refused, not cached
    assert cli.main(["download", "vggish"]) == 1
    assert "does not match the manifest's 10086976" in capsys.readouterr().err
    assert not (cache / "vggish-10086976.pth").exists() and not list(cache.glob("*.part"))
    # fetching a model names its optional companion file
    man["files"]["vggish-10086976.pth"]["sha256"] = W.sha256_file(mirror / "vggish-10086976.pth")
    assert cli.main(["download", "vggish"]) == 0
    assert "audio-repr download vggish-pca" in capsys.readouterr().out

    monkeypatch.delenv("AUDIO_REPR_MIRROR")
    assert audio_repr.load("byola-v1-1024").embed(chirp(1.0), sr=16000).clip.shape == (1024,)
    enc = audio_repr.load("vggish", pretrained=False)
    V.enable_postprocessor(enc)                               # from the cache, by its manifest entry
    assert "postprocessed" in enc.layer_names


def _dataset(root, n=50):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        folder = root / f"group{i % 3}" / f"sub{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        x = (0.1 * rng.standard_normal(int(16000 * (0.5 + (i % 5) * 0.3)))).astype(np.float32)
        ext = "wav" if i % 2 else "flac"
        sf.write(folder / f"clip{i:02d}.{ext}", x, 16000)
        paths.append(folder / f"clip{i:02d}.{ext}")
    return paths


def test_embed_resumes_after_being_killed(tmp_path):
    import os
    import signal
    import time

    ckpt = tmp_path / "w.pth"
    torch.save(randomise(OriginalV1(512)).state_dict(), ckpt)
    data = tmp_path / "data"
    n = 200                               # several groups of the pipeline (each is written when it is done)
    _dataset(data, n)
    out = tmp_path / "out"
    args = [sys.executable, "-m", "audio_repr.cli", "embed", str(data), "--model", "byola-v1-512",
            "--weights", str(ckpt), "--out", str(out), "--batch-size", "2", "-q"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while time.time() < deadline and len(list(out.rglob("*.npz"))) < 10:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = {p: p.stat().st_mtime_ns for p in out.rglob("*.npz")}
    assert 10 <= len(first) < n, len(first)
    for p in first:                       # whatever was written is complete
        assert np.load(p)["frames"].shape[1] == 512
    r = subprocess.run(args + ["--consolidate", "all.npz"], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert f"skipped {len(first)}" in r.stderr
    outs = [p for p in out.rglob("*.npz") if p.name != "all.npz"]
    assert len(outs) == n
    assert all(p.stat().st_mtime_ns == t for p, t in first.items())   # finished files not redone
    assert not [p for p in out.rglob("*") if p.name.endswith(".part")]
    allz = np.load(out / "all.npz")
    assert allz["clip"].shape == (n, 512) and len(allz["files"]) == n
    assert allz["frame_offsets"][-1] == len(allz["frames"]) == len(allz["timestamps_ms"])
    one = np.load(out / "group0" / "sub0" / "clip00.flac.npz")
    i = list(allz["files"]).index(str(os.path.join("group0", "sub0", "clip00.flac")))
    assert np.array_equal(allz["frames"][allz["frame_offsets"][i]:allz["frame_offsets"][i + 1]], one["frames"])


# ---- the reliability pass (issue 15): every input its own output, resume only with the same settings,
# ---- every mistake one line before any work ----------------------------------------------------------------

def _ckpt(tmp_path):
    ckpt = tmp_path / "w.pth"
    if not ckpt.exists():
        torch.save(randomise(OriginalV1(512)).state_dict(), ckpt)
    return ckpt


def _two_same_names(root):
    """coll/x/a.wav and coll/y/a.wav: one name, two different recordings."""
    (root / "x").mkdir(parents=True)
    (root / "y").mkdir()
    sf.write(root / "x" / "a.wav", chirp(1.5, 44100), 44100)
    sf.write(root / "y" / "a.wav", 0.1 * np.random.default_rng(1).standard_normal(8000).astype(np.float32), 8000)


def test_inputs_that_share_a_file_name_keep_their_own_outputs(tmp_path):
    ckpt = _ckpt(tmp_path)
    coll = tmp_path / "coll"
    _two_same_names(coll)
    import audio_repr

    enc = audio_repr.load("byola-v1-512", weights=ckpt)
    want = {k: enc.embed(str(coll / k / "a.wav")).frames.numpy() for k in ("x", "y")}
    for i, spec in enumerate([[str(coll / "**" / "*.wav")], [coll / "x", coll / "y"],
                              [coll / "x" / "a.wav", coll / "y" / "a.wav"]]):
        out = tmp_path / f"out{i}"
        r = run("embed", *spec, "-m", "byola-v1-512", "--weights", ckpt, "-o", out, "--consolidate", "all.npz", "-q")
        assert "embedded 2 file(s)" in r.stderr
        for k in ("x", "y"):                      # named by the path below the inputs' common folder
            got = np.load(out / k / "a.wav.npz")["frames"]
            assert_same_arithmetic(got, want[k], *accumulations(enc), what=f"{spec} {k}")
        allz = np.load(out / "all.npz")
        assert list(allz["files"]) == ["x/a.wav", "y/a.wav"]
        assert [Path(s).resolve() for s in allz["sources"]] == [coll / "x" / "a.wav", coll / "y" / "a.wav"]
        for j, k in enumerate(("x", "y")):         # each source once, with its own rows
            o = allz["frame_offsets"]
            assert np.array_equal(allz["frames"][o[j]:o[j + 1]], np.load(out / k / "a.wav.npz")["frames"])
        assert not np.allclose(allz["clip"][0], allz["clip"][1])


def test_an_output_collision_is_an_error_before_any_work(tmp_path):
    from audio_repr.corpus_run import first_clash as _first_clash

    sf.write(tmp_path / "a.wav", chirp(1.0), 16000)
    out = tmp_path / "out"
    r = run("embed", tmp_path / "a.wav", "-m", "byola-v1-512", "--random-init", "-o", out,
            "--consolidate", "a.wav.npz", check=False)
    assert r.returncode == 1 and r.stderr.startswith("audio-repr: error:") and "a.wav.npz" in r.stderr
    assert "Traceback" not in r.stderr and not out.exists()          # nothing made, nothing left
    # on a file system that ignores case, A.wav and a.wav would write one file
    outs = [tmp_path / "A.wav.npz", tmp_path / "a.wav.npz"]
    assert "same output" in _first_clash([str(o).casefold() for o in outs], outs, set(), True)
    assert _first_clash([str(o) for o in outs], outs, set(), False) is None


def test_resume_refuses_other_settings_and_overwrite_redoes(tmp_path):
    ckpt = _ckpt(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    for i in range(2):
        sf.write(data / f"c{i}.wav", chirp(1.0 + i), 16000)
    out = tmp_path / "emb"
    base = ["embed", data, "-o", out, "-q"]
    run(*base, "-m", "byola-v1-512", "--weights", ckpt)
    record = json.loads((out / "_audio-repr-run.json").read_text())
    assert record["model"] == "byola-v1-512" and record["layers"] == ["fc2"] and len(record["weights"]) == 64
    assert record["normalisation"]["mode"] == "fixed" and record["library"]
    before = {p: p.stat().st_mtime_ns for p in out.glob("*.npz")}
    for other in (["-m", "vggish", "--random-init"], ["-m", "byola-v1-512", "--weights", ckpt, "--layers", "fusion"],
                  ["-m", "byola-v1-512", "--random-init"]):
        r = run(*base, *other, check=False)
        assert r.returncode == 1 and "other settings" in r.stderr and "--overwrite" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr
    assert {p: p.stat().st_mtime_ns for p in out.glob("*.npz")} == before   # nothing touched
    r = run(*base, "-m", "byola-v1-512", "--weights", ckpt)                 # same settings: resumes
    assert "skipped 2" in r.stderr
    run(*base, "-m", "byola-v1-512", "--weights", ckpt, "--layers", "fusion", "--overwrite")
    assert np.load(out / "c0.wav.npz")["frames"].shape[1] == 4608
    assert json.loads((out / "_audio-repr-run.json").read_text())["layers"][0] == "conv1"
    # a folder of embeddings without a record of its settings (an older version's) is not resumed blindly
    (out / "_audio-repr-run.json").unlink()
    r = run(*base, "-m", "byola-v1-512", "--weights", ckpt, check=False)
    assert r.returncode == 1 and "no record" in r.stderr


def test_failures_log_describes_the_last_run_only(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    sf.write(data / "good.wav", chirp(1.0), 16000)
    (data / "broken.wav").write_bytes(b"not audio")
    out = tmp_path / "out"
    r = run("embed", data, "-m", "byola-v1-512", "--random-init", "-o", out, "-q", check=False)
    assert r.returncode == 2 and "broken.wav" in (out / "_failures.log").read_text()
    (data / "broken.wav").unlink()
    r = run("embed", data, "-m", "byola-v1-512", "--random-init", "-o", out, "-q")
    assert "skipped 1" in r.stderr and not (out / "_failures.log").exists()


def _one_line_error(r, *needles):
    assert r.returncode in (1, 2), r
    assert "Traceback" not in r.stderr, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("audio-repr: error:"), r.stderr
    for n in needles:
        assert n in r.stderr, (n, r.stderr)


def test_mistakes_are_one_line_errors_before_any_work(tmp_path):
    sf.write(tmp_path / "a.wav", chirp(1.0), 16000)
    out = tmp_path / "new" / "out"
    common = [tmp_path / "a.wav", "-m", "byola-v1-512", "--random-init", "-o", out]
    _one_line_error(run("embed", *common, "--layers", "fc9", check=False), "unknown layer 'fc9'")
    dev = "cuda" if not torch.cuda.is_available() else f"cuda:{torch.cuda.device_count()}"
    _one_line_error(run("embed", *common, "--device", dev, check=False), dev)
    _one_line_error(run("embed", *common, "--batch-size", "0", check=False), "--batch-size")
    _one_line_error(run("embed", tmp_path / "missing.wav", "-m", "byola-v1-512", "-o", out, check=False),
                    "missing.wav")
    _one_line_error(run("embed", *common[:-1], tmp_path / "a.wav", check=False), "not a folder")   # --out is a file
    _one_line_error(run("embed", *common[:-1], tmp_path / "a.wav" / "sub", check=False), "cannot write")
    assert not (tmp_path / "new").exists()            # a refused run leaves no folder behind
    _one_line_error(run("evaluate", tmp_path / "x.csv", check=False), "--model")
    _one_line_error(run("embed", tmp_path / "a.wav", "-m", "byola-v1-512", "-o", out, "--weights",
                        tmp_path / "nope.pth", check=False), "nope.pth")
    assert not (tmp_path / "new").exists()


def test_unwritable_output_folder_is_refused_before_loading(tmp_path):
    import os

    if os.geteuid() == 0:
        import pytest

        pytest.skip("root writes to read-only folders; the file and not-a-folder cases cover this as root")
    sf.write(tmp_path / "a.wav", chirp(1.0), 16000)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        r = run("embed", tmp_path / "a.wav", "-m", "byola-v1-512", "-o", ro, check=False)   # no weights here:
        _one_line_error(r, "cannot write", str(ro))      # refused before the missing weights would be reported
    finally:
        ro.chmod(0o700)


def test_plot_without_matplotlib_is_an_error_with_the_install_hint(tmp_path):
    """matplotlib made unimportable the way a missing package is (its import fails)."""
    import os

    fake = tmp_path / "site" / "matplotlib"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError(\"No module named 'matplotlib'\")\n")
    sf.write(tmp_path / "a.wav", chirp(1.0), 16000)
    r = subprocess.run([sys.executable, "-m", "audio_repr.cli", "plot", str(tmp_path / "a.wav"), "-m", "byola-v1-512",
                        "--random-init", "-o", str(tmp_path / "a.png")], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": f"{tmp_path / 'site'}{os.pathsep}{ROOT}"}, timeout=600)
    _one_line_error(r, "matplotlib", "pip install 'audio-repr[plot]'")


def test_info_shows_the_front_end_and_a_verified_cache_state(tmp_path):
    import os

    info = json.loads(run("info", "byola-v1-512").stdout)
    fe = info["frontend"]
    assert (fe["n_fft"], fe["hop_length"], fe["n_mels"], fe["f_min"], fe["f_max"]) == (1024, 160, 64, 60.0, 7800.0)
    assert fe["mel_scale"] == "htk" and fe["type"] == "LogMelSpectrogram"
    ast = json.loads(run("info", "ast-audioset").stdout)["frontend"]
    assert ast["n_mels"] == 128 and ast["window_samples"] == 400 and ast["hop_samples"] == 160
    assert info["cached"] is False and info["cache_status"] == "absent"
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / info["weights"]["filename"]).write_bytes(b"\0" * 1000)       # a truncated download
    r = subprocess.run([sys.executable, "-m", "audio_repr.cli", "info", "byola-v1-512"], capture_output=True,
                       text=True, env={**os.environ, "PYTHONPATH": str(ROOT), "AUDIO_REPR_CACHE": str(cache)})
    got = json.loads(r.stdout)
    assert got["cached"] is False and got["cache_status"] == "corrupt"


def test_progress_advances_through_a_long_file():
    """The CLI's bar counts seconds of audio, reported by embed after every batch of pieces: one long file
    moves it many times, and the reports add up to the file's duration."""
    import audio_repr

    enc = audio_repr.load("byola-v1-512", pretrained=False)
    got = []
    x = 0.1 * torch.randn(16000 * 150, generator=torch.Generator().manual_seed(0))    # 150 s: 15 pieces
    enc.embed(x, sr=16000, batch_size=2, progress=got.append)
    assert len(got) == 8 and abs(sum(got) - 150.0) < 1e-9, got
    assert all(g > 0 for g in got)
    got.clear()
    enc.embed([x[:16000 * 12], x[:8000]], sr=16000, progress=got.append)              # default batch (4 on a CPU)
    assert abs(sum(got) - 12.5) < 1e-9


def test_readme_first_command_embeds_the_shipped_example(tmp_path, monkeypatch):
    """The README's run command embeds a file the repository ships (made by its script, reproducibly), and
    gives what the README shows: with the official weights when ../shared has them, else the same shapes from
    a random network."""
    import os
    import re
    import shlex
    import shutil

    from conftest import D512

    readme = (ROOT / "README.md").read_text()
    cmd = re.search(r"^python3 -m venv .*? && \.venv/bin/audio-repr (embed .*)$", readme, re.M).group(1)
    args = shlex.split(cmd)
    assert args[1] == "examples/example.wav"
    example = ROOT / "examples" / "example.wav"
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_example_wav", ROOT / "examples" / "make_example_wav.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    wav, sr = sf.read(example, dtype="int16")
    assert sr == mod.SR and len(wav) == 4 * sr and example.stat().st_size < 300_000
    sf.write(tmp_path / "again.wav", mod.example(), mod.SR, subtype="PCM_16")
    assert (tmp_path / "again.wav").read_bytes() == example.read_bytes()          # the script makes this file
    (tmp_path / "examples").mkdir()
    shutil.copy(example, tmp_path / "examples")
    if D512.is_file():
        env = {**os.environ, "PYTHONPATH": str(ROOT), "AUDIO_REPR_MIRROR": str(D512.parent)}
        r = subprocess.run([sys.executable, "-m", "audio_repr.cli", *args], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=600)
    else:
        r = run(*args, "--random-init", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "embedded 1 file(s), skipped 0 already done, 0 failed -> out" in r.stderr
    d = np.load(tmp_path / "out" / "example.wav.npz")
    assert d["frames"].shape == (50, 512) and d["timestamps_ms"][:3].tolist() == [35.0, 115.0, 195.0]
    assert (tmp_path / "out" / "_audio-repr-run.json").is_file()


def test_tag_is_a_corpus_tool(tmp_path, capsys):
    """tag takes folders and globs, reports a bad file and goes on, shows progress, writes JSON lines or
    Parquet for a corpus, and refuses --layers instead of ignoring it."""
    import pyarrow.parquet as pq

    from audio_repr.cli import main

    wav, sr = sf.read(ROOT / "examples" / "example.wav", dtype="float32")
    for sub in ("a", "b"):
        (tmp_path / "in" / sub).mkdir(parents=True)
        sf.write(tmp_path / "in" / sub / "x.wav", wav[: sr * (2 if sub == "a" else 1)], sr)
    (tmp_path / "in" / "b" / "bad.wav").write_bytes(b"not audio at all" * 8)
    common = ["--model", "efficientat-mn04-as", "--random-init", "--top-k", "2"]
    out = tmp_path / "tags.jsonl"
    assert main(["tag", str(tmp_path / "in"), *common, "--out", str(out)]) == 2      # 2: one file failed
    err = capsys.readouterr().err
    assert "failed: " + str(tmp_path / "in" / "b" / "bad.wav") in err and "files=3/3" in err, err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["name"] for r in rows] == ["a/x.wav", "b/x.wav"] and all(len(r["labels"]) == 2 for r in rows)

    assert main(["tag", str(tmp_path / "in" / "*" / "x.wav"), *common, "-q", "--out", str(tmp_path / "t.parquet")]) == 0
    t = pq.read_table(tmp_path / "t.parquet")
    assert t.column("name").to_pylist() == ["a/x.wav", "b/x.wav"]
    assert t.column("labels").to_pylist() == [r["labels"] for r in rows]

    capsys.readouterr()
    assert main(["tag", str(tmp_path / "in" / "a"), *common, "--layers", "fusion"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("audio-repr: error:") and "--layers does not apply" in err


def test_tagging_reports_progress_batch_by_batch():
    """tag's progress callback (what the tag command's bar follows) is called after every batch, with the
    seconds of audio it finished."""
    import audio_repr
    from audio_repr.inference.tagging import tag

    torch.manual_seed(0)
    enc = audio_repr.load("efficientat-mn04-as", pretrained=False)
    got = []
    x = 0.1 * torch.randn(32000 * 3, generator=torch.Generator().manual_seed(0))
    tags = tag(enc, [x, x[:32000]], sr=32000, batch_size=1, progress=got.append)
    assert len(tags) == 2 and len(got) == 2 and abs(sum(got) - 4.0) < 1e-6, got
# =====================================================================================================
# issue 21 (what a new user hit): usage errors, a closed pipe, warnings on the console, -q
# =====================================================================================================

def _main(capsys, *argv):
    """``audio-repr ARGV`` in this process (fast: no interpreter start): (status, stdout, stderr)."""
    from types import SimpleNamespace

    from audio_repr.cli import main

    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:              # argparse's exits
        code = e.code
    out, err = capsys.readouterr()
    return SimpleNamespace(returncode=code, stdout=out, stderr=err)


def test_usage_errors_are_one_line_with_a_help_hint(tmp_path, capsys):
    """argparse printed its usage block (6 lines for embed) before the one line that says what is wrong."""
    cases = [(("embed", tmp_path / "a.wav", "--model"), "embed: argument --model/-m: expected one argument",
              "'audio-repr embed --help'"),
             ((), "a command is needed", "'audio-repr --help'"),
             (("evaluate",), "evaluate: the following arguments are required: csv", "'audio-repr evaluate --help'"),
             (("plot", "x.csv", "-m", "byola-v1-512", "-o", "m.png", "--method", "umap"), "invalid choice: 'umap'",
              "'audio-repr plot --help'")]
    for argv, what, hint in cases:
        r = _main(capsys, *argv)
        assert r.returncode == 2 and r.stdout == "", r
        lines = r.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("audio-repr: error: "), r.stderr
        assert what in lines[0] and lines[0].endswith(f"(see {hint})"), lines[0]


def test_output_into_a_closed_pipe_stops_quietly():
    """``audio-repr list | head -1``: the reader is gone before the output is written. A Unix tool stops
    silently, with the status of a SIGPIPE (128 + 13), not an error message and status 1."""
    import os

    r, w = os.pipe()
    os.close(r)
    try:
        out = subprocess.run([sys.executable, "-m", "audio_repr.cli", "list"], stdout=w, stderr=subprocess.PIPE,
                             text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=600)
    finally:
        os.close(w)
    assert out.returncode == 141 and out.stderr == "", out.stderr


def _truncated_wav(path):
    sf.write(path, chirp(2.0), 16000, subtype="PCM_16")
    data = path.read_bytes()
    path.write_bytes(data[:-20000])        # the header still declares 2 s


def test_warnings_are_one_line_and_quiet_silences_truncated_audio(tmp_path):
    """A truncated file's warning came with the library's file:line and source line, and -q did not
    silence it (nor in forked reader processes)."""
    _truncated_wav(tmp_path / "t.wav")
    base = ["embed", tmp_path / "t.wav", "-m", "byola-v1-512", "--random-init", "--workers", "0"]
    loud = run(*base, "-o", tmp_path / "o1")
    said = [line for line in loud.stderr.splitlines() if "truncated" in line]
    assert len(said) == 1 and said[0].startswith("audio-repr: warning: ") and "t.wav" in said[0], loud.stderr
    assert ".py:" not in loud.stderr and "TruncatedAudioWarning" not in loud.stderr
    for workers in ("0", "1"):
        quiet = run(*base[:-1], workers, "-q", "-o", tmp_path / f"q{workers}")
        assert "truncated" not in quiet.stderr and (tmp_path / f"q{workers}" / "t.wav.npz").is_file(), quiet.stderr


def test_evaluate_says_small_data_once_and_short(tmp_path):
    """SmallDataWarning came twice (Python's warning with file:line, then the report) with every class x fold."""
    rows = []
    for c in range(12):
        for k in range(4):
            sf.write(tmp_path / f"c{c}_{k}.wav", chirp(1.0, f0=100.0 + 150 * c, f1=300.0 + 400 * c), 16000)
            rows.append(f"c{c}_{k}.wav,class{c},{k % 2 + 1}")
    (tmp_path / "d.csv").write_text("file,label,fold\n" + "\n".join(rows) + "\n")
    r = run("evaluate", tmp_path / "d.csv", "-m", "byola-v1-512", "--random-init", "--probe", "logistic",
            "--seeds", "1", "-q")
    both = r.stdout + r.stderr
    assert both.count("small data") == 1, both
    assert "SmallDataWarning" not in both and ".py:" not in both
    line = next(line for line in both.splitlines() if "small data" in line)
    assert line.startswith("  warning: small data: some class has only 2 training rows") and len(line) < 300, line
    assert "in 2 of 2 folds" in line and "and 8 more" in line


def test_a_bytes_path_is_a_path_and_file_contents_are_told_apart(tmp_path):
    """``embed(b"/x.wav")`` said 'a waveform array needs its input sample rate'. Bytes are a path, as for
    ``open``; bytes that are a file's contents get a message saying so."""
    import os

    import pytest

    import audio_repr
    from audio_repr.audio import AudioError, load_audio

    sf.write(tmp_path / "a.wav", chirp(1.0), 16000)
    enc = audio_repr.load("byola-v1-512", pretrained=False)
    path = os.fsencode(tmp_path / "a.wav")
    assert torch.equal(load_audio(path)[0], load_audio(tmp_path / "a.wav")[0])
    assert torch.equal(enc.embed(path).clip, enc.embed(str(tmp_path / "a.wav")).clip)
    with pytest.raises(AudioError, match="look like the contents of an audio file, not a path"):
        enc.embed((tmp_path / "a.wav").read_bytes())
    with pytest.raises(FileNotFoundError, match="nope.wav"):
        enc.embed(os.fsencode(tmp_path / "nope.wav"))


def test_plot_map_options_and_their_mistakes(tmp_path, capsys):
    """plot --map takes evaluate's column options; --limit and the column options without --map are refused,
    as is a --label-column the CSV lacks (before the model is loaded)."""
    sf.write(tmp_path / "a.wav", chirp(1.0), 16000)
    (tmp_path / "m.csv").write_text("filename,category\na.wav,x\n")
    base = ["plot", "-m", "byola-v1-512", "--random-init", "-o", tmp_path / "p.png"]
    r = _main(capsys, *base, tmp_path / "a.wav", "--limit", "5")
    _one_line_error(r, "--limit: for the map of a CSV; add --map")
    r = _main(capsys, *base, tmp_path / "m.csv", "--map", "--file-column", "filename", "--label-column", "label")
    _one_line_error(r, "missing 'label'")
    assert not (tmp_path / "p.png").exists()


def test_readme_and_api_reference_say_what_a_new_user_looked_for():
    """The README never named the [plot] extra that `plot` asks for; Embedding.load, to_numpy and layer() had
    no entry in the API reference (its examples run in test_docs)."""
    readme = (ROOT / "README.md").read_text()
    assert "pip install 'audio-repr[plot]'" in readme
    api = (ROOT / "docs" / "api.md").read_text()
    section = api.split("## `Embedding`")[1].split("\n## ")[0]
    for name in ("emb.layer(name)", "emb.to_numpy()", "Embedding.load(path)", "emb.save(path)"):
        assert name in section, name
    assert ">>> " in section
