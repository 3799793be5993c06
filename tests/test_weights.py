"""Weights resolution (explicit path, cache, mirror, download), verification and safe loading."""

import hashlib
import http.server
import os
import pickle
import threading
from pathlib import Path

import pytest
import torch

import audio_repr
from audio_repr import weights as W
from reference_byola import OriginalV1, randomise


@pytest.fixture
def ckpt_bytes(tmp_path):
    p = tmp_path / "src.pth"
    torch.save(randomise(OriginalV1(512), seed=3).state_dict(), p)
    return p.read_bytes()


@pytest.fixture
def server(tmp_path):
    """A real HTTP server on loopback serving files from a folder."""
    root = tmp_path / "www"
    root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(root), **k)

        def log_message(self, *a):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture
def fake_manifest(monkeypatch, ckpt_bytes):
    entry = {"filename": "AudioNTT2020-BYOLA-64x96d512.pth", "url": None,
             "sha256": hashlib.sha256(ckpt_bytes).hexdigest(), "size": len(ckpt_bytes), "licence": "test licence"}
    man = {"files": {"AudioNTT2020-BYOLA-64x96d512.pth": entry}}
    monkeypatch.setattr(W, "manifest", lambda: man)
    return entry


def test_manifest_has_official_d512_entry():
    e = W.manifest_entry("byola-v1-512")
    assert e["sha256"] == "6cc64226318494f06ef41d7e5810be7d37abfd6490da45abdab48f188c5332e2"
    assert e["size"] == 2410576 and e["url"].startswith("https://github.com/nttcslab/byol-a/")
    for name in audio_repr.list_models():
        entry = W.manifest_entry(name)
        assert entry["filename"] and (entry.get("url") or entry.get("hf_repo")), name
        assert entry.get("licence"), name


def test_explicit_path_wins(tmp_path, ckpt_bytes):
    p = tmp_path / "mine.pth"
    p.write_bytes(ckpt_bytes)
    assert W.resolve("byola-v1-512", p) == p
    with pytest.raises(W.WeightsNotFoundError, match="not found"):
        W.resolve("byola-v1-512", tmp_path / "nope.pth")


def test_cache_then_mirror(tmp_path, monkeypatch, ckpt_bytes, fake_manifest):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / fake_manifest["filename"]).write_bytes(ckpt_bytes)
    monkeypatch.setenv("AUDIO_REPR_MIRROR", str(mirror))
    assert W.resolve("byola-v1-512") == mirror / fake_manifest["filename"]
    cached = W.cache_dir() / fake_manifest["filename"]
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(ckpt_bytes)
    assert W.resolve("byola-v1-512") == cached      # the cache comes before the mirror
    enc = audio_repr.load("byola-v1-512")            # and load() uses it
    assert enc.embed(torch.zeros(16000) + 0.01, sr=16000).frames.shape == (12, 512)


def test_mirror_with_wrong_hash_is_refused(tmp_path, monkeypatch, ckpt_bytes, fake_manifest):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / fake_manifest["filename"]).write_bytes(ckpt_bytes[:-10] + b"0123456789")
    monkeypatch.setenv("AUDIO_REPR_MIRROR", str(mirror))
    with pytest.raises(W.HashMismatchError, match="SHA-256"):
        W.resolve("byola-v1-512")


def test_offline_missing_weights_says_where_and_which_url():
    with pytest.raises(W.WeightsNotFoundError) as e:
        audio_repr.load("byola-v1-512")
    msg = str(e.value)
    assert "https://github.com/nttcslab/byol-a/raw/master/pretrained_weights/AudioNTT2020-BYOLA-64x96d512.pth" in msg
    assert str(W.cache_dir()) in msg and "weights=" in msg and "AUDIO_REPR_MIRROR" in msg


def test_download_verified_and_atomic(monkeypatch, server, ckpt_bytes, fake_manifest):
    root, base = server
    (root / "w.pth").write_bytes(ckpt_bytes)
    fake_manifest["url"] = f"{base}/w.pth"
    monkeypatch.delenv("AUDIO_REPR_OFFLINE")
    path = W.resolve("byola-v1-512")
    assert path == W.cache_dir() / fake_manifest["filename"] and path.read_bytes() == ckpt_bytes
    assert [p.name for p in W.cache_dir().iterdir()] == [fake_manifest["filename"]]
    audio_repr.load("byola-v1-512")


def test_download_hash_mismatch_leaves_nothing(monkeypatch, server, ckpt_bytes, fake_manifest):
    root, base = server
    (root / "w.pth").write_bytes(ckpt_bytes[:-1] + b"X")             # same size, different content
    fake_manifest["url"] = f"{base}/w.pth"
    monkeypatch.delenv("AUDIO_REPR_OFFLINE")
    with pytest.raises(W.HashMismatchError, match="nothing was kept"):
        W.resolve("byola-v1-512")
    assert not W.cache_dir().exists() or list(W.cache_dir().iterdir()) == []


def test_download_failure_is_explained(monkeypatch, server, fake_manifest):
    _, base = server
    fake_manifest["url"] = f"{base}/missing.pth"
    monkeypatch.delenv("AUDIO_REPR_OFFLINE")
    with pytest.raises(W.WeightsNotFoundError, match="could not download"):
        W.resolve("byola-v1-512")
    assert not W.cache_dir().exists() or list(W.cache_dir().iterdir()) == []


def test_corrupt_checkpoint(tmp_path, ckpt_bytes):
    p = tmp_path / "broken.pth"
    p.write_bytes(ckpt_bytes[: len(ckpt_bytes) // 2])
    with pytest.raises(audio_repr.WeightsError, match="corrupt"):
        audio_repr.load("byola-v1-512", weights=p)


def test_checkpoint_of_another_model(tmp_path):
    p = tmp_path / "d1024.pth"
    torch.save(randomise(OriginalV1(1024)).state_dict(), p)
    with pytest.raises(audio_repr.WeightsError, match="shape mismatch.*fc.0.weight"):
        audio_repr.load("byola-v1-512", weights=p)
    q = tmp_path / "other.pth"
    torch.save({"encoder.layer.0.weight": torch.zeros(3)}, q)
    with pytest.raises(audio_repr.WeightsError, match="no parameters"):
        audio_repr.load("byola-v1-512", weights=q)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_pickled_code_is_never_run(tmp_path):
    p = tmp_path / "evil.pth"
    with open(p, "wb") as f:
        pickle.dump({"features.0.weight": _Evil()}, f)
    with pytest.raises(audio_repr.WeightsError, match="weights_only"):
        audio_repr.load("byola-v1-512", weights=p)


def test_pretrained_false_and_conflicting_args(tmp_path):
    enc = audio_repr.load("byola-v1-512", pretrained=False)
    assert enc.embed(torch.rand(8000) - 0.5, sr=16000).clip.shape == (512,)
    with pytest.raises(ValueError, match="pretrained=False"):
        audio_repr.load("byola-v1-512", pretrained=False, weights=tmp_path / "x.pth")


def test_download_copies_from_the_mirror_verified(tmp_path, monkeypatch, ckpt_bytes, fake_manifest):
    """`audio-repr download` with a mirror works offline: the mirror's file is checked, then cached."""
    mirror = tmp_path / "mirror"
    (mirror / "byola-v1-512").mkdir(parents=True)
    src = mirror / "byola-v1-512" / fake_manifest["filename"]
    src.write_bytes(ckpt_bytes[:-10] + b"0123456789")        # wrong bytes first: refused, nothing cached
    monkeypatch.setenv("AUDIO_REPR_MIRROR", str(mirror))
    with pytest.raises(W.HashMismatchError):
        W.download("byola-v1-512")
    assert not (W.cache_dir() / fake_manifest["filename"]).exists()
    assert not list(W.cache_dir().glob("*.part")) if W.cache_dir().exists() else True
    src.write_bytes(ckpt_bytes)
    got = W.download("byola-v1-512")
    assert got == W.cache_dir() / fake_manifest["filename"] and got.read_bytes() == ckpt_bytes
    umask = os.umask(0)
    os.umask(umask)
    assert got.stat().st_mode & 0o777 == 0o666 & ~umask          # not mkstemp's owner-only 0600
    src.unlink()
    assert W.resolve("byola-v1-512") == got                   # the cache now serves it without the mirror


# --- the cache is verified, not trusted ---------------------------------------------------------------------------

def _hash_calls(monkeypatch):
    """Paths that W.sha256_file hashes from now on (the real function still does the hashing)."""
    calls, real = [], W.sha256_file
    monkeypatch.setattr(W, "sha256_file", lambda path, *a, **k: calls.append(Path(path)) or real(path, *a, **k))
    return calls


def test_truncated_cached_file_is_reported_with_the_fix(ckpt_bytes, fake_manifest):
    cached = W.cache_dir() / fake_manifest["filename"]
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(ckpt_bytes[: len(ckpt_bytes) // 2])                 # an interrupted copy
    assert W.cache_status("byola-v1-512") == "corrupt" and not W.cached_ok("byola-v1-512")
    for call in (lambda: W.resolve("byola-v1-512"), lambda: audio_repr.load("byola-v1-512")):
        with pytest.raises(W.HashMismatchError) as e:
            call()
        msg = str(e.value)
        assert str(cached) in msg and "corrupt" in msg and f"expected {len(ckpt_bytes)}" in msg
        assert "audio-repr download byola-v1-512 --force" in msg and "delete" in msg
    cached.write_bytes(ckpt_bytes)
    assert W.cache_status("byola-v1-512") == "verified" and W.cached_ok("byola-v1-512")
    assert W.resolve("byola-v1-512") == cached


@pytest.mark.parametrize("pin", ["sha256", "sha256_prefix"])
def test_same_size_corruption_is_caught_and_the_hash_is_computed_once(monkeypatch, ckpt_bytes, fake_manifest, pin):
    if pin == "sha256_prefix":                     # as torchvggish's files: 8 hex digits in the name, no size
        fake_manifest["sha256_prefix"] = fake_manifest.pop("sha256")[:8]
        fake_manifest["size"] = None
    cached = W.cache_dir() / fake_manifest["filename"]
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(ckpt_bytes)
    calls = _hash_calls(monkeypatch)
    assert W.resolve("byola-v1-512") == cached and calls == [cached]
    assert W.resolve("byola-v1-512") == cached and W.cached_ok("byola-v1-512")
    audio_repr.load("byola-v1-512")
    assert calls == [cached]                                                 # remembered, not hashed again
    # same size, one byte changed in place, modification time put back: still caught
    st = cached.stat()
    with open(cached, "r+b") as f:
        f.seek(len(ckpt_bytes) // 2)
        f.write(bytes([ckpt_bytes[len(ckpt_bytes) // 2] ^ 0xFF]))
    os.utime(cached, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert cached.stat().st_size == st.st_size and cached.stat().st_mtime_ns == st.st_mtime_ns
    with pytest.raises(W.HashMismatchError, match="(?s)corrupt.*--force"):
        W.resolve("byola-v1-512")
    assert W.cache_status("byola-v1-512") == "corrupt"
    # a file with nothing pinned in the manifest is used as it is, never hashed
    for key in ("sha256", "sha256_prefix", "size"):
        fake_manifest.pop(key, None)
    calls.clear()
    assert W.resolve("byola-v1-512") == cached and W.cache_status("byola-v1-512") == "unpinned" and calls == []


@pytest.mark.parametrize("source", ["mirror", "url"])
def test_download_replaces_a_bad_cached_file(tmp_path, monkeypatch, server, ckpt_bytes, fake_manifest, source, capsys):
    cached = W.cache_dir() / fake_manifest["filename"]
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(ckpt_bytes[:-1] + b"X")                              # same size, wrong bytes
    if source == "mirror":
        (tmp_path / "mirror").mkdir()
        (tmp_path / "mirror" / fake_manifest["filename"]).write_bytes(ckpt_bytes)
        monkeypatch.setenv("AUDIO_REPR_MIRROR", str(tmp_path / "mirror"))
    else:
        root, base = server
        (root / "w.pth").write_bytes(ckpt_bytes)
        fake_manifest["url"] = f"{base}/w.pth"
        monkeypatch.delenv("AUDIO_REPR_OFFLINE")
    assert W.download("byola-v1-512") == cached and cached.read_bytes() == ckpt_bytes
    assert "corrupt" in capsys.readouterr().err
    assert W.cache_status("byola-v1-512") == "verified" and W.resolve("byola-v1-512") == cached
    assert not list(cached.parent.glob("*.part"))


# --- a failed download explains itself and leaves nothing behind ----------------------------------------------------

def _unreachable_manifest(monkeypatch):
    import copy

    man = copy.deepcopy(W.manifest())
    man["files"]["AudioNTT2020-BYOLA-64x96d512.pth"]["url"] = "http://127.0.0.1:9/x.pth"      # the discard port: refused at once
    monkeypatch.setattr(W, "manifest", lambda: man)
    monkeypatch.delenv("AUDIO_REPR_OFFLINE")


def test_unreachable_source_explains_like_offline(tmp_path, monkeypatch, capsys):
    from audio_repr import cli

    _unreachable_manifest(monkeypatch)
    monkeypatch.setenv("AUDIO_REPR_CACHE", str(tmp_path / "new" / "cache"))
    for call in (lambda: W.resolve("byola-v1-512"), lambda: W.download("byola-v1-512")):
        with pytest.raises(W.WeightsNotFoundError) as e:
            call()
        msg = str(e.value)
        first = msg.splitlines()[0]
        assert "could not download" in first and "Connection refused" in first and "http://127.0.0.1:9/x.pth" in first
        assert "AudioNTT2020-BYOLA-64x96d512.pth" in msg and "--weights PATH" in msg and "weights=" in msg
        assert str(W.cache_dir()) in msg and "AUDIO_REPR_MIRROR" in msg
    assert cli.main(["download", "byola-v1-512"]) == 1
    err = capsys.readouterr().err
    assert "Connection refused" in err and "--weights PATH" in err and "AUDIO_REPR_MIRROR" in err
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("failure", ["refused", "hash", "mirror"])
def test_failed_download_removes_the_folders_it_created(tmp_path, monkeypatch, server, ckpt_bytes, fake_manifest,
                                                         failure):
    if failure == "refused":
        fake_manifest["url"] = "http://127.0.0.1:9/x.pth"
        monkeypatch.delenv("AUDIO_REPR_OFFLINE")
    elif failure == "hash":
        root, base = server
        (root / "w.pth").write_bytes(ckpt_bytes[:-1] + b"X")
        fake_manifest["url"] = f"{base}/w.pth"
        monkeypatch.delenv("AUDIO_REPR_OFFLINE")
    else:
        (tmp_path / "mirror").mkdir()
        (tmp_path / "mirror" / fake_manifest["filename"]).write_bytes(ckpt_bytes[:-1] + b"X")
        monkeypatch.setenv("AUDIO_REPR_MIRROR", str(tmp_path / "mirror"))
    monkeypatch.setenv("AUDIO_REPR_CACHE", str(tmp_path / "a" / "b" / "cache"))
    with pytest.raises(W.WeightsError):
        W.download("byola-v1-512")
    assert not (tmp_path / "a").exists() and tmp_path.is_dir()
    # folders that were there before are kept, empty or not
    (tmp_path / "a" / "b" / "cache").mkdir(parents=True)
    with pytest.raises(W.WeightsError):
        W.download("byola-v1-512")
    assert (tmp_path / "a" / "b" / "cache").is_dir() and list((tmp_path / "a").rglob("*")) == [
        tmp_path / "a" / "b", tmp_path / "a" / "b" / "cache"]


def test_hub_download_failure_explains(tmp_path, server):
    """The Hugging Face path: the Hub (HF_ENDPOINT, a loopback server that has nothing) answers 404; the
    command line says why in one line, what to do, and leaves no cache folder behind."""
    import subprocess
    import sys

    from conftest import ROOT

    _, base = server
    env = {k: v for k, v in os.environ.items() if k not in ("AUDIO_REPR_OFFLINE", "HF_HUB_OFFLINE")}
    env.update(HF_ENDPOINT=base, HF_HOME=str(tmp_path / "hf"), HF_HUB_DISABLE_TELEMETRY="1",
               AUDIO_REPR_CACHE=str(tmp_path / "new" / "cache"), PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "audio_repr.cli", "download", "ast-audioset"], capture_output=True,
                       text=True, env=env, timeout=300)
    assert r.returncode == 1, r.stderr
    lines = r.stderr.splitlines()
    first = next(line for line in lines if line.startswith("audio-repr: error:"))
    assert "could not download" in first and "404" in first
    for part in ("MIT--ast-finetuned-audioset-10-10-0.4593.safetensors",
                 "https://huggingface.co/MIT/ast-finetuned-audioset-10-10-0.4593/resolve/main/model.safetensors",
                 "--weights PATH", "weights=", str(tmp_path / "new" / "cache"), "AUDIO_REPR_MIRROR"):
        assert part in r.stderr, part
    assert not (tmp_path / "new").exists()


def test_manifest_is_keyed_by_file_and_matches_the_cards_both_ways():
    """One entry per weights file: every card names a file of the manifest, models that share a file share its
    entry, and every file is some model's weights or a named companion file. The licence is the card's."""
    files = W.manifest()["files"]
    used = {audio_repr.get_card(n).weights for n in audio_repr.list_models()}
    companions = {k for k, e in files.items() if e.get("alias")}
    assert used | companions == set(files) and not used & companions
    assert audio_repr.get_card("vggish").weights == audio_repr.get_card("vggish-4k").weights
    assert W.manifest_entry("ast-audioset") == W.manifest_entry("ast-audioset-crop")
    for e in files.values():
        assert "licence" not in e                             # stated once, on the card
        if e.get("hf_repo"):
            assert "revision" in e
    assert W.manifest_entry("vggish-pca")["licence"] == audio_repr.get_card("vggish").licence
