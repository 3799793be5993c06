"""End-to-end embedding throughput, front-end share and peak memory, per model.

For each model: seconds of audio embedded per second on 10 s clips at batch sizes 1 and 32 (float32
and, when asked, bfloat16), the front end's share of the time, the same-run ratio against a peer
(for BYOL-A and MSM-MAE: a straightforward per-clip loop over our own modules, the way the original
runtimes work: front end, normalisation and network one clip at a time), and the peak RSS growth
while embedding one long file (10 and 60 minutes) in a fresh process.

    python benchmarks/bench_models.py --models byola-v1-512 byola-v2-2048 --clips 32 \
        --json benchmarks/results.json --markdown docs/benchmarks.md

Random weights are used (speed does not depend on them). Never run as a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import audio_repr  # noqa: E402


def _sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timeit(fn, device, repeat=3):
    fn()  # warm-up
    _sync(device)
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return best


def per_clip_loop(enc, clips):
    """The original runtimes' way: one clip at a time through front end, normalisation, network."""
    with torch.inference_mode():
        for c in clips:
            x = enc.frontend(c[None])
            if enc.norm_mode == "per_clip":
                x = (x - x.mean()) / x.std()
            else:
                x = (x - enc.norm_mean) / enc.norm_std
            out = enc.network(x.to(enc.dtype), None)[enc.card.default_layer]
            (out.mean(1) + out.amax(1)).float().cpu()


def frontend_only(enc, clips):
    with torch.inference_mode():
        for i in range(0, len(clips), 32):
            b = torch.stack(clips[i: i + 32])
            enc.frontend(b)


MEM_SCRIPT = """
import resource, sys, torch
sys.path.insert(0, {root!r})
import audio_repr
torch.set_num_threads({threads})
enc = audio_repr.load({name!r}, pretrained=False)
sr = enc.sample_rate
x = 0.1 * torch.randn(int(sr * 60 * {minutes}))
enc.embed(x[: sr * 2], sr=sr)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
e = enc.embed(x, sr=sr, batch_size=8)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024, e.frames.shape[0])
"""


def peak_memory_mb(name, minutes, threads):
    out = subprocess.run([sys.executable, "-c", MEM_SCRIPT.format(root=str(ROOT), name=name, minutes=minutes,
                                                                  threads=threads)],
                         capture_output=True, text=True, timeout=3600)
    if out.returncode:
        return None
    return float(out.stdout.split()[0])


def bench_model(name, args):
    rows = []
    enc = audio_repr.load(name, pretrained=False, device=args.device)
    sr = enc.sample_rate
    g = torch.Generator().manual_seed(0)
    clips = [(0.1 * torch.randn(int(sr * args.seconds), generator=g)).to(args.device) for _ in range(args.clips)]
    audio_s = args.clips * args.seconds
    t_peer = timeit(lambda: per_clip_loop(enc, clips), args.device, args.repeat)
    t_fe = timeit(lambda: frontend_only(enc, clips), args.device, args.repeat)
    for dtype in args.dtypes:
        e = audio_repr.load(name, pretrained=False, device=args.device, dtype=getattr(torch, dtype))
        for bs in args.batch_sizes:
            t = timeit(lambda: e.embed(clips, sr=sr, batch_size=bs), args.device, args.repeat)
            rows.append({"model": name, "device": args.device, "dtype": dtype, "batch_size": bs,
                         "audio_s_per_s": audio_s / t, "seconds": t,
                         "frontend_share": t_fe / t if dtype == "float32" else None,
                         "peer": "per-clip loop of our modules", "peer_audio_s_per_s": audio_s / t_peer,
                         "ratio_vs_peer": t_peer / t})
    mem = {m: peak_memory_mb(name, m, torch.get_num_threads()) for m in args.memory_minutes}
    for r in rows:
        r["peak_rss_growth_mb"] = {f"{m} min": v for m, v in mem.items()}
    return rows


def markdown(results, meta):
    lines = ["# Benchmarks", "",
             f"Machine: {meta['machine']}; torch {meta['torch']}; {meta['threads']} threads; device {meta['device']}.",
             f"Command: `{meta['command']}`", "",
             "Throughput is seconds of audio embedded per second of wall time (10 s clips, random weights, best of "
             f"{meta['repeat']}). The peer is measured in the same run; the ratio is peer time / our time.", "",
             "| model | dtype | batch | audio s / s | front-end share | peer (audio s / s) | ratio vs peer | peak RSS growth |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        mem = ", ".join(f"{k}: {v:.0f} MB" if v is not None else f"{k}: n/a" for k, v in r["peak_rss_growth_mb"].items())
        fe = f"{100 * r['frontend_share']:.0f}%" if r["frontend_share"] is not None else "-"
        lines.append(f"| {r['model']} | {r['dtype']} | {r['batch_size']} | {r['audio_s_per_s']:.0f} | {fe} | "
                     f"{r['peer_audio_s_per_s']:.0f} ({r['peer']}) | {r['ratio_vs_peer']:.2f}x | {mem} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["byola-v1-512", "byola-v2-2048"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtypes", nargs="+", default=["float32"])
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 32])
    p.add_argument("--clips", type=int, default=32)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--memory-minutes", nargs="*", type=float, default=[10, 60])
    p.add_argument("--json", default=None)
    p.add_argument("--markdown", default=None, help="append the table to this file (docs/benchmarks.md)")
    args = p.parse_args(argv)
    results = []
    for name in args.models:
        rows = bench_model(name, args)
        for r in rows:
            print(json.dumps(r))
        results.extend(rows)
    meta = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            "torch": torch.__version__, "threads": torch.get_num_threads(), "device": args.device,
            "repeat": args.repeat, "command": "python " + " ".join([os.path.relpath(__file__, ROOT)] + (argv or sys.argv[1:]))}
    if args.json:
        Path(args.json).write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    if args.markdown:
        Path(args.markdown).write_text(markdown(results, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
