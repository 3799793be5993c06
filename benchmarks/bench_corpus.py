"""Corpus throughput on a CPU: ``audio-repr embed`` over a folder, the new pipeline against the path before it,
in the same run, interleaved, several repeats (median and spread).

Variants, each a fresh process writing into a fresh folder (the first one warms the page cache):

* ``pipeline``      — ``audio-repr embed DIR`` at its defaults (reader processes, length-sorted groups, a writer
  thread, the model's CPU batching), npz outputs;
* ``pipeline-pq``   — the same with ``--format parquet``;
* ``workers1``      — ``--workers 1`` (one reader process; the default reads in the main process on a CPU of up to
  4 cores);
* ``before``        — the CLI of the library at ``--baseline`` (default ``fb0a74b``, before the pipeline: groups of
  ``batch_size`` files in input order, one thread), exported with ``git archive``;
* ``per-file``      — the original runtimes' way, as a user of the original code writes it: per file read,
  resample (the card's resampler), front end, normalisation, network, clip pooling, ``np.savez``.

    python benchmarks/bench_corpus.py --model byola-v1-512 --set fsdd --repeat 3 \
        --json benchmarks/results/cpu_corpus_fsdd.json
    python benchmarks/bench_corpus.py --model byola-v1-512 --set long --files 200 --repeat 3 \
        --json benchmarks/results/cpu_corpus_long.json

``--set fsdd``: the 3,000 FSDD recordings (8 kHz, ~0.5 s) from ../shared; ``--set long``: ``--files`` ten-second
44.1 kHz stereo WAV files cut from the two shared recordings (looped, each from its own offset). Random weights
(``--random-init``: speed does not depend on them). Never run as a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "audio"

PER_FILE = r"""
import sys, time, numpy as np, torch, audio_repr
from pathlib import Path
from audio_repr.audio import load_audio, get_resampler, to_mono_tensor
src, out, model = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
torch.manual_seed(0)
enc = audio_repr.load(model, pretrained=False)
n = enc.normalisation
with torch.inference_mode():
    for f in sorted(src.rglob("*.wav")):
        wav, sr = load_audio(f)
        wav = to_mono_tensor(wav)
        if sr != enc.sample_rate:
            wav = get_resampler(enc.card.resampler)(wav, sr, enc.sample_rate)
        x = enc.frontend(wav[None])
        x = (x - x.mean()) / (n.scale * x.std()) if n.per_clip else (x - n.mean) / n.divisor
        frames = enc.network(x, None)[enc.card.default_layer][0]
        clip = frames.mean(0) + frames.amax(0)
        dest = out / f.relative_to(src).with_suffix(".wav.npz")
        dest.parent.mkdir(parents=True, exist_ok=True)
        np.savez(dest, frames=frames.numpy(), clip=clip.numpy())
"""


def make_long_set(dest: Path, files: int, seconds: float = 10.0) -> None:
    import soundfile as sf

    sr = 44100
    cat, _ = sf.read(SHARED / "cat-meow-44k.wav", dtype="float32", always_2d=True)
    dog, _ = sf.read(SHARED / "dog-bark-44k-stereo.wav", dtype="float32", always_2d=True)
    src = np.concatenate([np.repeat(cat[:, :1], 2, axis=1), dog[:, :2] if dog.shape[1] > 1 else np.repeat(dog, 2, 1)])
    n = int(sr * seconds)
    loop = np.concatenate([src] * (n // len(src) + 2))
    rng = np.random.default_rng(0)
    dest.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        a = int(rng.integers(0, len(src)))
        sf.write(dest / f"clip{i:04d}.wav", loop[a: a + n], sr, subtype="PCM_16")


def baseline_tree(rev: str, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def run_variant(name: str, data: Path, out: Path, model: str, base: Path) -> float:
    env = {**os.environ}
    cli = [sys.executable, "-m", "audio_repr.cli", "embed", str(data), "--model", model, "--random-init",
           "--out", str(out), "-q"]
    if name == "pipeline":
        cmd, env["PYTHONPATH"] = cli, str(ROOT)
    elif name == "pipeline-pq":
        cmd, env["PYTHONPATH"] = cli + ["--format", "parquet"], str(ROOT)
    elif name == "workers1":
        cmd, env["PYTHONPATH"] = cli + ["--workers", "1"], str(ROOT)
    elif name == "before":
        cmd, env["PYTHONPATH"] = cli, str(base)
    elif name == "per-file":
        cmd, env["PYTHONPATH"] = [sys.executable, "-c", PER_FILE, str(data), str(out), model], str(ROOT)
    else:
        raise ValueError(name)
    t = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        raise RuntimeError(f"{name} failed: {r.stderr[-2000:]}")
    return wall


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="byola-v1-512")
    ap.add_argument("--set", choices=["fsdd", "long"], default="fsdd")
    ap.add_argument("--files", type=int, default=200, help="--set long: number of 10-s files")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--variants", nargs="+", default=["pipeline", "pipeline-pq", "workers1", "before", "per-file"])
    ap.add_argument("--baseline", default="fb0a74b", help="git revision of the path before the pipeline")
    ap.add_argument("--json")
    args = ap.parse_args(argv)

    import soundfile as sf

    tmp = Path(tempfile.mkdtemp(prefix="audio-repr-bench-"))
    try:
        if args.set == "fsdd":
            data = SHARED / "fsdd" / "recordings"
        else:
            data = tmp / "long"
            make_long_set(data, args.files)
        files = sorted(data.rglob("*.wav"))
        seconds = sum(sf.info(str(f)).duration for f in files)
        base = baseline_tree(args.baseline, tmp / "base") if "before" in args.variants else None
        walls = {v: [] for v in args.variants}
        run_variant(args.variants[0], data, tmp / "warm", args.model, base)          # page cache, imports
        for r in range(args.repeat):
            for v in args.variants:
                out = tmp / f"out-{v}-{r}"
                walls[v].append(run_variant(v, data, out, args.model, base))
                shutil.rmtree(out)
                print(f"repeat {r}: {v}: {walls[v][-1]:.2f} s", file=sys.stderr)
        ref = statistics.median(walls["before"]) if "before" in walls else None
        rows = {}
        for v, w in walls.items():
            med = statistics.median(w)
            rows[v] = {"wall_s": w, "median_s": med, "spread_s": max(w) - min(w), "files_per_s": len(files) / med,
                       "audio_s_per_s": seconds / med, "speedup_vs_before": (ref / med) if ref else None}
        res = {"model": args.model, "set": args.set, "files": len(files), "audio_s": seconds,
               "baseline": args.baseline, "repeat": args.repeat, "cpu": platform.processor() or platform.machine(),
               "cores": os.cpu_count(), "torch_threads_default": None, "results": rows,
               "command": "python benchmarks/bench_corpus.py " + " ".join(argv if argv is not None else sys.argv[1:])}
        print(f"{args.model} on {len(files)} files ({seconds:.0f} s of audio), median of {args.repeat}:")
        for v, row in rows.items():
            print(f"  {v:12s} {row['median_s']:7.2f} s (spread {row['spread_s']:.2f})  {row['files_per_s']:7.1f} files/s  "
                  f"{row['audio_s_per_s']:7.1f} audio-s/s" + (f"  {row['speedup_vs_before']:.2f}x before" if ref else ""))
        if args.json:
            Path(args.json).write_text(json.dumps(res, indent=2))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
