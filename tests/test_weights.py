"""Weights resolution (explicit path, cache, mirror, download), verification and safe loading."""

import hashlib
import http.server
import os
import pickle
import re
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
        assert "AudioNTT2020-BYOLA-64x96d512.pth" in msg and str(W.cache_dir()) in msg and "AUDIO_REPR_MIRROR" in msg
    # loading names --weights / weights=; `download`, which has no such option, does not (issue 21, item 7)
    with pytest.raises(W.WeightsNotFoundError) as e:
        W.resolve("byola-v1-512")
    assert "--weights PATH" in str(e.value) and "weights=" in str(e.value)
    with pytest.raises(W.WeightsNotFoundError) as e:
        W.download("byola-v1-512")
    assert "--weights" not in str(e.value) and "weights=" not in str(e.value)
    assert cli.main(["download", "byola-v1-512"]) == 1
    err = capsys.readouterr().err
    assert "Connection refused" in err and "--weights" not in err and "AUDIO_REPR_MIRROR" in err
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
    for part in ("MIT--ast-finetuned-audioset-10-10-0.4593.safetensors", "Get model.safetensors from",
                 f"{base}/MIT/ast-finetuned-audioset-10-10-0.4593/resolve/main/model.safetensors",
                 str(tmp_path / "new" / "cache"), "AUDIO_REPR_MIRROR"):
        assert part in r.stderr, part
    assert "--weights" not in r.stderr
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


# --- issue 20: downloads that resume, retry, show progress, keep nothing bad; http mirrors; pins ----------------------

class _Faulty:
    """A loopback HTTP server (127.0.0.1 only) serving ``files`` ({path: bytes}) with HTTP ``Range`` support and
    scripted faults per path: ``"drop"`` (announce the full length, send half, close), ``"503"``, ``"ignore-range"``
    (answer a Range request with the whole file). It records each request (path, Range header), answers with a
    socket timeout of 10 s and shuts itself down after 60 s at the latest."""

    def __init__(self):
        self.files, self.faults, self.requests = {}, {}, []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            timeout = 10

            def log_message(self, *a):
                pass

            def _serve(self, body_too):
                path = self.path.split("?")[0]
                rng = self.headers.get("Range")
                outer.requests.append((self.command, path, rng))
                faults = outer.faults.get(path, [])
                fault = faults.pop(0) if faults else None
                if path not in outer.files:
                    self.send_error(404, "File not found")
                    return
                if fault == "503":
                    self.send_error(503, "Busy")
                    return
                data, start = outer.files[path], 0
                if rng and fault != "ignore-range":
                    start = int(rng.split("=")[1].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if not body_too:
                    return
                body = data[start:]
                if fault == "drop":
                    body = body[: len(body) // 2]
                    self.wfile.write(body)
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def do_GET(self):
                self._serve(True)

            def do_HEAD(self):
                self._serve(False)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        self.stopper = threading.Timer(60, self.httpd.shutdown)
        self.stopper.daemon = True
        self.stopper.start()

    def close(self):
        self.stopper.cancel()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def faulty(monkeypatch):
    srv = _Faulty()
    monkeypatch.setattr(W, "BACKOFF", 0.01, raising=False)
    yield srv
    srv.close()


def _closed_port():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _online(monkeypatch):
    monkeypatch.delenv("AUDIO_REPR_OFFLINE")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


@pytest.mark.parametrize("fault", ["drop", "ignore-range", "drops-every-time"])
def test_download_resumes_after_a_dropped_connection(monkeypatch, faulty, ckpt_bytes, fake_manifest, fault):
    """The connection breaks halfway: the download goes on from where it stopped with a Range request (or from
    the start, when the server ignores Range) and the whole file is verified against its SHA-256. A link that
    breaks more often than RETRIES goes on as long as each connection brings bytes."""
    faulty.files["/w.pth"] = ckpt_bytes
    faulty.faults["/w.pth"] = {"drop": ["drop"], "ignore-range": ["drop", "drop", "ignore-range"],
                               "drops-every-time": ["drop"] * (W.RETRIES + 3)}[fault]
    fake_manifest["url"] = f"{faulty.base}/w.pth"
    _online(monkeypatch)
    path = W.download("byola-v1-512")
    assert path.read_bytes() == ckpt_bytes and [p.name for p in path.parent.iterdir()] == [path.name]
    ranges = [r for _, _, r in faulty.requests]
    half = len(ckpt_bytes) // 2
    assert ranges[:2] == [None, f"bytes={half}-"]
    if fault == "ignore-range":
        assert len(ranges) == 3 and ranges[2] == f"bytes={half + (len(ckpt_bytes) - half) // 2}-"


def test_transient_errors_are_retried_with_backoff(monkeypatch, faulty, ckpt_bytes, fake_manifest):
    faulty.files["/w.pth"] = ckpt_bytes
    faulty.faults["/w.pth"] = ["503", "503"]
    fake_manifest["url"] = f"{faulty.base}/w.pth"
    _online(monkeypatch)
    waits = []
    monkeypatch.setattr(W.time, "sleep", waits.append)
    assert W.download("byola-v1-512").read_bytes() == ckpt_bytes
    assert waits == [W.BACKOFF, 2 * W.BACKOFF] and len(faulty.requests) == 3
    # a server that stays down: RETRIES retries, then one clear error, nothing kept
    faulty.faults["/w.pth"] = ["503"] * (W.RETRIES + 1)
    waits.clear()
    with pytest.raises(W.WeightsNotFoundError, match=f"503.*after {W.RETRIES} retries"):
        W.download("byola-v1-512", force=True)
    assert len(waits) == W.RETRIES and waits[-1] == W.BACKOFF * 2 ** (W.RETRIES - 1)
    assert [p for p in W.cache_dir().iterdir() if p.suffix == ".part"] == []


def _cli(args, env_extra, tmp_path, timeout=60):
    import subprocess
    import sys

    from conftest import ROOT

    env = {k: v for k, v in os.environ.items() if k not in ("AUDIO_REPR_OFFLINE", "HF_HUB_OFFLINE",
                                                            "AUDIO_REPR_MIRROR")}
    env.update(PYTHONPATH=str(ROOT), HF_HOME=str(tmp_path / "hf"), **env_extra)
    return subprocess.run([sys.executable, "-m", "audio_repr.cli", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def _errors(stderr):
    assert "Traceback" not in stderr, stderr
    return [line for line in stderr.splitlines() if line.startswith("audio-repr: error:")]


@pytest.mark.parametrize("case", ["wrong-bytes", "404"])
def test_failed_download_one_line_error_nothing_kept(monkeypatch, faulty, ckpt_bytes, fake_manifest, case, capsys):
    from audio_repr import cli

    faulty.files["/w.pth"] = ckpt_bytes[:-1] + b"X"                          # same size, wrong bytes
    fake_manifest["url"] = f"{faulty.base}/{'w' if case == 'wrong-bytes' else 'missing'}.pth"
    _online(monkeypatch)
    assert cli.main(["download", "byola-v1-512", "-q"]) == 1
    err = capsys.readouterr().err
    (line,) = _errors(err)
    if case == "wrong-bytes":
        assert "SHA-256" in line and "nothing was kept" in line and line == err.splitlines()[-1]
    else:
        assert "could not download" in line and "404" in line and fake_manifest["url"] in line
        assert len(faulty.requests) == 1                                     # a 404 is not retried
    assert not W.cache_dir().exists() or list(W.cache_dir().iterdir()) == []


def test_progress_bar_in_bytes(monkeypatch, faulty, ckpt_bytes, fake_manifest, capsys):
    from audio_repr import cli

    faulty.files["/w.pth"] = ckpt_bytes
    fake_manifest["url"] = f"{faulty.base}/w.pth"
    _online(monkeypatch)
    W.download("byola-v1-512", progress=True)
    err = capsys.readouterr().err
    assert "100%" in err and f"{len(ckpt_bytes) / 1e6:.2f}MB/{len(ckpt_bytes) / 1e6:.2f}MB" in err and "byola-v1-512" in err
    assert W.download("byola-v1-512", force=True) and "100%" not in capsys.readouterr().err   # not a terminal
    monkeypatch.setattr(W, "_progress_bar", lambda total, desc, enabled: pytest.fail("bar with -q") if enabled else None)
    assert cli.main(["download", "byola-v1-512", "--force", "-q"]) == 0


def test_embed_quiet_hides_the_download_bar(tmp_path, monkeypatch, faulty, ckpt_bytes, fake_manifest):
    from audio_repr import cli
    from conftest import ROOT

    faulty.files["/w.pth"] = ckpt_bytes
    fake_manifest["url"] = f"{faulty.base}/w.pth"
    _online(monkeypatch)
    monkeypatch.setattr(W, "PROGRESS", None)                                 # restored after the test
    asked = []
    real = W._progress_bar
    monkeypatch.setattr(W, "_progress_bar", lambda total, desc, enabled: asked.append(
        W.PROGRESS if enabled is None else enabled) or real(total, desc, False))
    wav = ROOT / "examples" / "example.wav"
    assert cli.main(["embed", str(wav), "--model", "byola-v1-512", "--out", str(tmp_path / "o"), "-q"]) == 0
    assert asked == [False] and W.PROGRESS is False
    cli.main(["list"])
    assert W.PROGRESS is None


@pytest.mark.parametrize("layout", ["flat", "per-model"])
def test_http_mirror(monkeypatch, faulty, ckpt_bytes, fake_manifest, layout):
    """AUDIO_REPR_MIRROR as the URL of an internal server's folder: used offline (no official source is
    contacted), copied into the cache verified, resumed after a dropped connection."""
    name = fake_manifest["filename"]
    faulty.files[f"/models/{name}" if layout == "flat" else f"/models/byola-v1-512/{name}"] = ckpt_bytes
    faulty.faults[f"/models/byola-v1-512/{name}"] = ["drop"]
    fake_manifest["url"] = f"http://127.0.0.1:{_closed_port()}/never.pth"
    monkeypatch.setenv("AUDIO_REPR_MIRROR", faulty.base + "/models/")
    assert W.mirror_location("byola-v1-512").startswith(faulty.base)
    path = W.resolve("byola-v1-512")
    assert path == W.cache_dir() / name and path.read_bytes() == ckpt_bytes
    enc = audio_repr.load("byola-v1-512")
    assert enc.embed(torch.zeros(16000) + 0.01, sr=16000).clip.shape == (512,)
    # wrong bytes on the mirror: refused, nothing kept
    for p in list(faulty.files):
        faulty.files[p] = ckpt_bytes[:-1] + b"X"
    path.unlink()
    with pytest.raises(W.HashMismatchError, match="nothing was kept"):
        W.resolve("byola-v1-512")
    assert [p for p in W.cache_dir().iterdir() if not p.name.startswith(".")] == []     # (the old file's record)
    # a mirror without the file: offline, the error says so and where to get it
    faulty.files.clear()
    with pytest.raises(W.WeightsNotFoundError, match="(?s)does not hold.*offline mode is on"):
        W.resolve("byola-v1-512")


def test_corrupt_cache_uses_a_verified_mirror_copy(tmp_path, monkeypatch, ckpt_bytes, fake_manifest, capsys, faulty):
    cached = W.cache_dir() / fake_manifest["filename"]
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(ckpt_bytes[:-1] + b"X")
    (tmp_path / "mirror").mkdir()
    good = tmp_path / "mirror" / fake_manifest["filename"]
    good.write_bytes(ckpt_bytes)
    monkeypatch.setenv("AUDIO_REPR_MIRROR", str(tmp_path / "mirror"))
    assert W.resolve("byola-v1-512") == good
    assert "corrupt" in capsys.readouterr().err
    audio_repr.load("byola-v1-512")
    # an http mirror: its verified copy replaces the bad cached file
    faulty.files["/" + fake_manifest["filename"]] = ckpt_bytes
    monkeypatch.setenv("AUDIO_REPR_MIRROR", faulty.base)
    assert W.resolve("byola-v1-512") == cached and cached.read_bytes() == ckpt_bytes
    # no good copy anywhere: the corrupt file is reported with the fix
    cached.write_bytes(ckpt_bytes[:-1] + b"X")
    faulty.files.clear()
    with pytest.raises(W.HashMismatchError, match="--force"):
        W.resolve("byola-v1-512")


def test_info_sees_the_mirror_and_the_pins(tmp_path, monkeypatch, ckpt_bytes, capsys):
    import json

    from audio_repr import cli

    (tmp_path / "mirror").mkdir()
    (tmp_path / "mirror" / "AudioNTT2020-BYOLA-64x96d1024.pth").write_bytes(ckpt_bytes)
    monkeypatch.setenv("AUDIO_REPR_MIRROR", str(tmp_path / "mirror"))
    assert cli.main(["info", "byola-v1-1024"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["cache_status"] == "absent" and info["mirror"] == str(tmp_path / "mirror" /
                                                                      "AudioNTT2020-BYOLA-64x96d1024.pth")
    assert info["available"] is True and info["weights"]["pinned"] == "not pinned"
    assert cli.main(["info", "byola-v1-512"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["mirror"] is None and info["weights"]["pinned"] == "sha256 + size"


def test_unpinned_file_is_recorded_at_first_download_and_verify_names_changes(monkeypatch, faulty, ckpt_bytes,
                                                                               fake_manifest, capsys):
    from audio_repr import cli

    for k in ("sha256", "size"):
        fake_manifest[k] = None
    faulty.files["/w.pth"] = ckpt_bytes
    fake_manifest["url"] = f"{faulty.base}/w.pth"
    _online(monkeypatch)
    path = W.download("byola-v1-512")
    assert W.pin_summary(W.manifest_entry("byola-v1-512")) == "not pinned"
    assert W.cache_status("byola-v1-512") == "unpinned"
    assert cli.main(["verify"]) == 0
    out = capsys.readouterr().out
    assert fake_manifest["filename"] in out and hashlib.sha256(ckpt_bytes).hexdigest() in out
    # the file changes afterwards (same size): it no longer matches what its download recorded
    with open(path, "r+b") as f:
        f.seek(100)
        f.write(bytes([ckpt_bytes[100] ^ 1]))
    assert W.cache_status("byola-v1-512") == "corrupt"
    with pytest.raises(W.HashMismatchError, match="--force"):
        W.resolve("byola-v1-512")
    assert cli.main(["verify"]) == 1
    out = capsys.readouterr().out
    assert f"MISMATCH {fake_manifest['filename']}" in out and "audio-repr download byola-v1-512 --force" in out


def test_verify_rehashes_pinned_files(ckpt_bytes, fake_manifest, capsys, monkeypatch):
    from audio_repr import cli

    cached = W.cache_dir() / fake_manifest["filename"]
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(ckpt_bytes)
    assert W.cached_ok("byola-v1-512")                                      # hashed once, remembered
    calls = _hash_calls(monkeypatch)
    assert cli.main(["verify"]) == 0 and calls == [cached]                  # verify hashes again
    assert f"OK {fake_manifest['filename']}" in capsys.readouterr().out
    cli.main(["verify"])
    assert calls == [cached, cached]


def test_md5_is_checked_where_only_md5_is_published(monkeypatch, faulty, ckpt_bytes, fake_manifest):
    fake_manifest.update(sha256=None, size=None, md5=hashlib.md5(ckpt_bytes).hexdigest())
    faulty.files["/w.pth"] = ckpt_bytes[:-1] + b"X"
    fake_manifest["url"] = f"{faulty.base}/w.pth"
    _online(monkeypatch)
    with pytest.raises(W.HashMismatchError, match="MD5"):
        W.download("byola-v1-512")
    faulty.files["/w.pth"] = ckpt_bytes
    assert W.download("byola-v1-512").read_bytes() == ckpt_bytes
    assert W.cache_status("byola-v1-512") == "verified" and W.pin_summary(fake_manifest) == "md5"


def test_unconfirmed_prefix_does_not_refuse(monkeypatch, faulty, ckpt_bytes, fake_manifest, caplog):
    fake_manifest.update(sha256=None, size=None, sha256_prefix_unconfirmed="970ea276")
    faulty.files["/w.pth"] = ckpt_bytes
    fake_manifest["url"] = f"{faulty.base}/w.pth"
    _online(monkeypatch)
    assert W.download("byola-v1-512").read_bytes() == ckpt_bytes
    assert "970ea276" in caplog.text and "not refused" in caplog.text


def test_manifest_pins_what_is_published():
    files = W.manifest()["files"]
    mn10 = files["mn10_as_mAP_471.pt"]
    assert mn10["sha256"] == "0bd7dc2443af498c289a2e739f02ebb515d6aa3fd3ab9db539c86123ae368a4e"
    assert mn10["size"] == 19_708_753
    assert files["vggish-10086976.pth"]["sha256"] == \
        "10086976245803799d9194e9a73d9b6c1549c71d1b80106f5cade5608a561f4b"
    assert files["AudioNTT2020-BYOLA-64x96d512.pth"]["sha256"].startswith("6cc64226")
    assert files["mn04_as_mAP_432.pt"]["sha256"].startswith("899a8c62")
    assert files["Cnn14_mAP=0.431.pth"]["md5"] == "541141fa2ee191a88f24a3219fff024e"
    assert files["Cnn14_16k_mAP=0.438.pth"]["md5"] == "362fc5ff18f1d6ad2f6d464b45893f2c"
    assert files["m2d_clap_vit_base-80x608p16x16-240128.zip"]["size"] == 1_558_023_261
    pca = files["vggish_pca_params-970ea276.pth"]
    assert pca.get("sha256_prefix") is None and pca["sha256_prefix_unconfirmed"] == "970ea276"
    for name, e in files.items():
        url = e.get("url") or ""
        if "zenodo" in url:
            assert re.match(r"https://zenodo\.org/records/\d+/files/[^/]+$", url), url     # the current form
        if e.get("sha256"):
            assert len(e["sha256"]) == 64
    assert W.pin_summary(W.manifest_entry("panns-cnn14")) == "md5"


def test_download_all_of_a_family(tmp_path, monkeypatch, capsys):
    """`download --all --family F` fetches every file of the family's models (here from a mirror folder)."""
    import copy

    from audio_repr import cli
    from reference_byola import OriginalV2

    man = copy.deepcopy(W.manifest())
    monkeypatch.setattr(W, "manifest", lambda: man)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    names = sorted(audio_repr.get_card(n).weights for n in audio_repr.list_models()
                   if audio_repr.get_card(n).family == "byola")
    assert len(names) == 4
    for i, name in enumerate(names):
        net = OriginalV2() if "2022" in name else OriginalV1(int(name.split("d")[-1].split(".")[0]))
        torch.save(randomise(net, seed=i).state_dict(), mirror / name)
        data = (mirror / name).read_bytes()
        man["files"][name].update(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    monkeypatch.setenv("AUDIO_REPR_MIRROR", str(mirror))
    assert cli.main(["download", "--all", "--family", "byola", "-q"]) == 0
    assert sorted(p.name for p in W.cache_dir().iterdir() if not p.name.startswith(".")) == names
    out = capsys.readouterr().out
    assert all(n in out for n in names)
    assert cli.main(["download", "--all", "--family", "nope"]) == 1
    assert "unknown family 'nope'" in capsys.readouterr().err
    assert cli.main(["download"]) == 1
    assert "--all" in capsys.readouterr().err
    # without a mirror, offline: every file fails, each is named, the command fails
    monkeypatch.delenv("AUDIO_REPR_MIRROR")
    assert cli.main(["download", "--all", "--family", "vggish", "--force"]) == 1
    err = capsys.readouterr().err
    assert "vggish-10086976.pth" in err and "vggish_pca_params-970ea276.pth" in err


def test_hub_unreachable_fails_fast_and_names_the_file(tmp_path):
    """Issue 21 item 2: an unreachable hub endpoint (a closed port) fails at once, with no retries, naming
    model.safetensors (what the URL serves) and the name to save it under; HF_HUB_OFFLINE=1 and
    AUDIO_REPR_OFFLINE=1 contact nothing at all."""
    import time

    endpoint = f"http://127.0.0.1:{_closed_port()}"
    code = "import audio_repr; audio_repr.load('ast-audioset')"
    for extra in ({}, {"HF_HUB_OFFLINE": "1"}):
        t0 = time.monotonic()
        r = _cli(["download", "ast-audioset"], dict(extra, HF_ENDPOINT=endpoint,
                                                   AUDIO_REPR_CACHE=str(tmp_path / "c")), tmp_path, timeout=60)
        took = time.monotonic() - t0
        assert r.returncode == 1 and took < 15, (took, r.stderr)
        (line,) = _errors(r.stderr)
        assert "Retrying" not in r.stderr and "LocalEntryNotFoundError" not in r.stderr
        assert ("Connection refused" in line) if not extra else ("offline mode is on" in r.stderr)
        assert "Get model.safetensors from" in r.stderr
        assert f"{endpoint}/MIT/ast-finetuned-audioset-10-10-0.4593/resolve/main/model.safetensors" in r.stderr
        assert "save it as MIT--ast-finetuned-audioset-10-10-0.4593.safetensors" in r.stderr
    import subprocess
    import sys

    from conftest import ROOT

    env = {k: v for k, v in os.environ.items() if k != "AUDIO_REPR_OFFLINE"}
    env.update(PYTHONPATH=str(ROOT), HF_ENDPOINT=endpoint, HF_HOME=str(tmp_path / "hf"),
               AUDIO_REPR_CACHE=str(tmp_path / "c"))
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode != 0 and time.monotonic() - t0 < 20 and "Connection refused" in r.stderr
    assert "--weights PATH" in r.stderr and "model.safetensors" in r.stderr


def test_official_trainer_checkpoints_load_safely(tmp_path):
    """What the trainers pickle beside the weights reads without running code: numpy int64 arrays (PANNs'
    sampler, also as numpy 1.x named them), argparse args, AdamW and GradScaler state. Anything else that
    could run code is refused, naming what it is (not called corrupt)."""
    import argparse

    import numpy as np

    from conftest import adamw_state, grad_scaler_state, panns_training_checkpoint, save_as_numpy1

    sd = randomise(OriginalV1(512), seed=3).state_dict()
    objs = {"panns.pth": panns_training_checkpoint(sd),
            "mae.pth": {"model": sd, "optimizer": adamw_state(len(sd)), "epoch": 3, "scaler": grad_scaler_state(),
                        "args": argparse.Namespace(model="x", input_size=[80, 608], norm_stats=[-7.1, 4.2])},
            "scalars.pth": {"model": sd, "best": np.float64(0.43), "step": np.int64(7), "mask": np.ones(3, bool)}}
    for name, obj in objs.items():
        torch.save(obj, tmp_path / name)
        got = W.load_checkpoint(tmp_path / name)
        assert torch.equal(got["model"]["fc.0.weight"], sd["fc.0.weight"])
    save_as_numpy1(objs["panns.pth"], tmp_path / "old.pth")
    got = W.load_checkpoint(tmp_path / "old.pth")
    assert [a.tolist() for a in got["sampler"]["indexes_per_class"]] == \
        [a.tolist() for a in objs["panns.pth"]["sampler"]["indexes_per_class"]]
    assert W.load_checkpoint(tmp_path / "mae.pth")["args"].input_size == [80, 608]
    assert audio_repr.load("byola-v1-512", weights=tmp_path / "panns.pth").card.name == "byola-v1-512"
    import pathlib

    torch.save({"model": sd, "where": pathlib.PurePosixPath("/data")}, tmp_path / "other.pth")
    with pytest.raises(W.WeightsError, match="pickles pathlib.PurePosixPath.*could run code") as e:
        W.load_checkpoint(tmp_path / "other.pth")
    assert "corrupt" not in str(e.value)


def test_each_card_states_its_own_licence():
    """M2D's LICENSE.pdf grants non-commercial use; BYOL-A's and MSM-MAE's NTT agreement, internal testing and
    evaluation; PANNs' copyright runs 2018-2020. The README says the NTT licences are accepted by use."""
    from conftest import ROOT

    for name in ("m2d-vit-base", "m2d-as-vit-base", "m2d-clap-vit-base", "m2d-vit-base-40ms"):
        lic = audio_repr.get_card(name).licence.split("; the GTE-base text encoder")[0]   # M2D-CLAP's text tower: MIT
        assert "non-commercial" in lic and lic.endswith("nttcslab/m2d/blob/master/LICENSE.pdf") and "Evaluation" not in lic
    for name in ("byola-v1-512", "byola-v2-2048", "msm-mae-80x208"):
        lic = audio_repr.get_card(name).licence
        assert "testing" in lic and "evaluating" in lic and "no redistribution" in lic and "commercial" not in lic
    for name in ("panns-cnn14", "panns-cnn14-16k"):
        assert "Copyright (c) 2018-2020 Qiuqiang Kong" in audio_repr.get_card(name).licence
    readme = (ROOT / "README.md").read_text()
    assert "accepted by use" in readme and "once per file" in readme


def test_download_fetches_a_models_companion_files(tmp_path, server, monkeypatch, capsys):
    """`download MODEL` of a model with a text tower fetches its weights and the companion files its card names
    (tokenizer, text encoder) from a real HTTP server (an http mirror on loopback), verified; `--all --family`,
    `info` and `verify` treat them too. Without them, one error names the missing file."""
    import copy
    import json

    from audio_repr import cli

    root, base = server
    man = copy.deepcopy(W.manifest())
    monkeypatch.setattr(W, "manifest", lambda: man)
    monkeypatch.setenv("AUDIO_REPR_MIRROR", base)
    monkeypatch.setenv("AUDIO_REPR_CACHE", str(tmp_path / "cache"))
    wanted = {}
    for model in ("laion-clap-htsat", "m2d-clap-vit-base"):
        card = audio_repr.get_card(model)
        assert card.companions
        for name in (card.weights,) + card.companions:
            filename = W.manifest_entry(name)["filename"]
            data = f"{model}: {name}".encode()
            (root / filename).write_bytes(data)
            man["files"][filename].update(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
            wanted.setdefault(model, []).append(filename)
    assert set(wanted["m2d-clap-vit-base"][1:]) == {"gte-base-vocab.txt", "gte-base-model.safetensors"}
    assert set(wanted["laion-clap-htsat"][1:]) == {"roberta-base-vocab.json", "roberta-base-merges.txt"}

    def cached():
        return sorted(p.name for p in (tmp_path / "cache").iterdir() if not p.name.startswith("."))

    assert cli.main(["download", "laion-clap-htsat", "-q"]) == 0
    out = capsys.readouterr().out
    assert cached() == sorted(wanted["laion-clap-htsat"])
    assert "roberta-base-vocab.json:" in out and "optional companion" not in out
    assert cli.main(["info", "laion-clap-htsat"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["companions"] == {"roberta-base-vocab.json": "verified", "roberta-base-merges.txt": "verified"}
    assert cli.main(["info", "m2d-clap-vit-base"]) == 0
    assert set(json.loads(capsys.readouterr().out)["companions"].values()) == {"absent"}
    assert cli.main(["download", "--all", "--family", "m2d_clap", "-q"]) == 0
    assert cached() == sorted(wanted["laion-clap-htsat"] + wanted["m2d-clap-vit-base"])
    assert cli.main(["verify"]) == 0
    out = capsys.readouterr().out
    assert all(f"OK {f}:" in out for f in wanted["m2d-clap-vit-base"] + wanted["laion-clap-htsat"])
    # a companion file the server lacks: the command fails in one line naming it (the weights stay cached)
    (tmp_path / "cache" / "gte-base-vocab.txt").unlink()
    (root / "gte-base-vocab.txt").unlink()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert cli.main(["download", "m2d-clap-vit-base"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("audio-repr: error:") and "gte-base-vocab.txt" in err and "Traceback" not in err
