"""Shared fixtures. Tests that need ../shared (official weights, golden outputs, real recordings)
skip cleanly when it is absent; everything else runs on data the tests make themselves."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("AUDIO_REPR_SHARED", ROOT.parent / "shared"))
D512 = SHARED / "weights" / "AudioNTT2020-BYOLA-64x96d512.pth"
GOLDEN = SHARED / "golden" / "byola_v1_d512.npz"
AUDIO = SHARED / "audio"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Never touch the user's cache, never download: each test gets an empty cache, offline."""
    monkeypatch.setenv("AUDIO_REPR_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("AUDIO_REPR_OFFLINE", "1")
    monkeypatch.delenv("AUDIO_REPR_MIRROR", raising=False)


@pytest.fixture
def d512_weights():
    if not D512.is_file():
        pytest.skip(f"official weights not present ({D512})")
    return D512


@pytest.fixture(scope="session")
def golden():
    if not GOLDEN.is_file():
        pytest.skip(f"golden outputs not present ({GOLDEN})")
    return dict(np.load(GOLDEN))


@pytest.fixture
def shared_audio():
    if not (AUDIO / "cat-meow-44k.wav").is_file():
        pytest.skip(f"shared recordings not present ({AUDIO})")
    return AUDIO


def rel_err(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def cosine(a, b):
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def noise(seconds, sr=16000, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (0.1 * torch.randn(int(seconds * sr), generator=g)).float()


def chirp(seconds, sr=16000, f0=100.0, f1=6000.0, amp=0.5):
    t = np.arange(int(seconds * sr)) / sr
    k = (f1 - f0) / seconds
    return (amp * np.sin(2 * np.pi * (f0 * t + 0.5 * k * t * t))).astype(np.float32)


def peak_rss_growth_mb(prepare: str, measure: str, check: str, cwd) -> int:
    """Run ``prepare`` then ``measure`` then ``check`` (Python source lines) in a fresh interpreter
    with 2 torch threads; returns how much ``measure`` grew the process's peak RSS, in MB."""
    import subprocess
    import sys
    import textwrap

    script = "\n".join([
        "import resource, torch, audio_repr", "torch.set_num_threads(2)", textwrap.dedent(prepare),
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss", textwrap.dedent(measure),
        "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss", textwrap.dedent(check),
        "print((peak - base) // 1024)"])
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=cwd,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=600)
    assert out.returncode == 0, out.stderr
    return int(out.stdout.strip().splitlines()[-1])
