"""The command line, run as a user would (a subprocess of the installed entry point's module)."""

import json
import subprocess
import sys

import numpy as np
import soundfile as sf
import torch

from conftest import ROOT, chirp
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
    assert "broken.wav" in (out / "failures.log").read_text()
    a = np.load(out / "a.wav.npz")
    b = np.load(out / "sub" / "b.flac.npz")
    assert a["frames"].shape == (12, 512) and a["clip"].shape == (512,)
    assert b["frames"].shape == (25, 512) and np.allclose(b["timestamps_ms"][:2], [35.0, 115.0])
    assert str(a["model"]) == "byola-v1-512" and list(a["layers"]) == ["fc2"]
    # same numbers as the Python API
    import audio_repr

    e = audio_repr.load("byola-v1-512", weights=ckpt).embed(str(data / "a.wav"))
    assert np.allclose(a["frames"], e.frames.numpy(), atol=1e-6)
    # a second run skips finished files; --layers fusion in another folder
    r2 = run("embed", data / "a.wav", "--model", "byola-v1-512", "--weights", ckpt, "--out", out, "-q")
    assert "skipped 1" in r2.stderr
    r3 = run("embed", str(data / "**" / "*.flac"), "--model", "byola-v1-512", "--weights", ckpt, "--out",
             tmp_path / "fused", "--layers", "fusion", "-q")
    f = np.load(tmp_path / "fused" / "b.flac.npz")
    assert f["frames"].shape == (25, 4608) and list(f["layers"]) == ["conv1", "conv2", "conv3", "fc1", "fc2"]
    assert not list(out.rglob("*.part"))


def test_embed_without_weights_offline_explains(tmp_path):
    sf.write(tmp_path / "a.wav", chirp(1.0), 16000)
    r = run("embed", tmp_path / "a.wav", "--model", "byola-v1-512", "--out", tmp_path / "o", check=False)
    assert r.returncode == 1 and "AudioNTT2020-BYOLA-64x96d512.pth" in r.stderr and "https://" in r.stderr


def test_download_model_and_companion_file_from_a_mirror(tmp_path, monkeypatch, capsys):
    """Offline, `download` fills the cache from AUDIO_REPR_MIRROR (a model and VGGish's PCA file), checking
    the SHA-256 prefix that torchvggish's file names carry; the encoder and postprocessor then load by name."""
    import copy
    import hashlib

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
    assert man["models"]["vggish-pca"]["sha256_prefix"] == "970ea276"
    man["models"]["vggish-pca"]["sha256_prefix"] = hashlib.sha256(pca.read_bytes()).hexdigest()[:8]  # ours
    monkeypatch.setattr(W, "manifest", lambda: man)
    monkeypatch.setenv("AUDIO_REPR_MIRROR", str(mirror))
    monkeypatch.setenv("AUDIO_REPR_CACHE", str(cache))

    assert cli.main(["download", "byola-v1-1024", "vggish-pca"]) == 0
    out = capsys.readouterr().out
    assert str(cache / "AudioNTT2020-BYOLA-64x96d1024.pth") in out and "vggish-pca:" in out
    assert sorted(p.name for p in cache.iterdir()) == ["AudioNTT2020-BYOLA-64x96d1024.pth",
                                                       "vggish_pca_params-970ea276.pth"]
    # a file under the official name whose hash does not start with the name's digits: refused, not cached
    assert cli.main(["download", "vggish"]) == 1
    assert "does not start with 10086976" in capsys.readouterr().err
    assert not (cache / "vggish-10086976.pth").exists() and not list(cache.glob("*.part"))
    # fetching a model names its optional companion file
    man["models"]["vggish"]["sha256_prefix"] = W.sha256_file(mirror / "vggish-10086976.pth")[:8]
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
    _dataset(data)
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
    assert 10 <= len(first) < 50, len(first)
    for p in first:                       # whatever was written is complete
        assert np.load(p)["frames"].shape[1] == 512
    r = subprocess.run(args + ["--consolidate", "all.npz"], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert f"skipped {len(first)}" in r.stderr
    outs = [p for p in out.rglob("*.npz") if p.name != "all.npz"]
    assert len(outs) == 50
    assert all(p.stat().st_mtime_ns == t for p, t in first.items())   # finished files not redone
    assert not [p for p in out.rglob("*") if p.name.endswith(".part")]
    allz = np.load(out / "all.npz")
    assert allz["clip"].shape == (50, 512) and len(allz["files"]) == 50
    assert allz["frame_offsets"][-1] == len(allz["frames"]) == len(allz["timestamps_ms"])
    one = np.load(out / "group0" / "sub0" / "clip00.flac.npz")
    i = list(allz["files"]).index(str(os.path.join("group0", "sub0", "clip00.flac")))
    assert np.array_equal(allz["frames"][allz["frame_offsets"][i]:allz["frame_offsets"][i + 1]], one["frames"])
