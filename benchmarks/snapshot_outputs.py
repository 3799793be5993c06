"""Every registered model's outputs on fixed inputs, saved to one ``.npz``: compare two snapshots to prove a
refactor left the numbers bit-identical.

    python benchmarks/snapshot_outputs.py --out before.npz            # on the old commit
    python benchmarks/snapshot_outputs.py --out after.npz             # on the new one
    python benchmarks/snapshot_outputs.py --compare before.npz after.npz

Inputs: the shared recordings (44.1 kHz mono and stereo, two FSDD digits at 8 kHz) when ``../shared`` is
present, plus generated noise (1.2 s, 3 s, 25 s at 16 kHz; the last is several pieces long). Networks: random
weights drawn from a fixed seed per model (every model), and the official BYOL-A d512 weights when present.
Every layer (``layers="all"``) and the standard output, batch of all inputs and each input alone.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("AUDIO_REPR_SHARED", ROOT.parent / "shared"))


def inputs():
    g = torch.Generator().manual_seed(0)
    items = [("noise1.2", 0.1 * torch.randn(19200, generator=g), 16000),
             ("noise3", 0.1 * torch.randn(48000, generator=g), 16000),
             ("noise25", 0.1 * torch.randn(400000, generator=g), 16000)]
    audio = SHARED / "audio"
    if (audio / "cat-meow-44k.wav").is_file():
        import audio_repr

        for name in ("cat-meow-44k.wav", "dog-bark-44k-stereo.wav"):
            wav, sr = audio_repr.load_audio(audio / name, mono=False)
            items.append((name, wav, sr))
        for f in sorted((audio / "fsdd").glob("*.wav"))[:2]:
            wav, sr = audio_repr.load_audio(f)
            items.append((f.name, wav, sr))
    return items


def snapshot(out: Path) -> None:
    import audio_repr

    torch.set_num_threads(1)
    data = inputs()
    res = {}
    models = [(n, None) for n in audio_repr.list_models()]
    d512 = SHARED / "weights" / "AudioNTT2020-BYOLA-64x96d512.pth"
    if d512.is_file():
        models.append(("byola-v1-512", d512))
    for name, weights in models:
        tag = name + ("@official" if weights else "@seed0")
        torch.manual_seed(0)
        enc = audio_repr.load(name, weights=weights) if weights else audio_repr.load(name, pretrained=False)
        wavs = [w for _, w, _ in data]
        rates = [sr for _, _, sr in data]
        for layers in (None, "all"):
            lk = "std" if layers is None else "all"
            for (iname, w, sr), e in zip(data, _embed_list(enc, wavs, rates, layers)):
                res[f"{tag}/{lk}/batch/{iname}/frames"] = e.frames.numpy()
                res[f"{tag}/{lk}/batch/{iname}/clip"] = e.clip.numpy()
                res[f"{tag}/{lk}/batch/{iname}/ts"] = e.timestamps_ms.numpy()
        for iname, w, sr in data:
            e = enc.embed(w, sr=sr, batch_size=16)
            res[f"{tag}/std/alone/{iname}/frames"] = e.frames.numpy()
            res[f"{tag}/std/alone/{iname}/clip"] = e.clip.numpy()
        print(tag, file=sys.stderr)
    np.savez(out, **res)
    print(f"{len(res)} arrays -> {out}")


def _embed_list(enc, wavs, rates, layers):
    # one call per input rate group keeps this working on versions that take one sr per call
    out = [None] * len(wavs)
    for sr in sorted(set(rates)):
        idx = [i for i, r in enumerate(rates) if r == sr]
        for i, e in zip(idx, enc.embed([wavs[i] for i in idx], sr=sr, layers=layers, batch_size=16)):
            out[i] = e
    return out


def compare(a: Path, b: Path) -> int:
    A, B = np.load(a), np.load(b)
    ka, kb = set(A.files), set(B.files)
    bad = 0
    for k in sorted(ka ^ kb):
        print(f"only in {'first' if k in ka else 'second'}: {k}")
        bad += 1
    for k in sorted(ka & kb):
        x, y = A[k], B[k]
        if x.shape != y.shape or x.dtype != y.dtype or not np.array_equal(x, y):
            diff = float(np.abs(x.astype(np.float64) - y.astype(np.float64)).max()) if x.shape == y.shape else None
            print(f"differs: {k} {x.shape} vs {y.shape} max abs diff {diff}")
            bad += 1
    print(f"{len(ka & kb)} arrays compared, {bad} differ or are missing")
    return 1 if bad else 0


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path)
    p.add_argument("--compare", nargs=2, type=Path)
    a = p.parse_args()
    if a.compare:
        sys.exit(compare(*a.compare))
    snapshot(a.out)
