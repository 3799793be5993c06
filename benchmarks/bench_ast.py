"""AST end-to-end throughput: audio-repr vs the transformers pipeline, same clips, same weights, one run.

Both sides start from the same 10 s waveforms at 16 kHz and return the 768-d clip embedding:

* audio-repr: ``Encoder.embed(clips, sr=16000, batch_size=B)`` (batched Kaldi fbank on the device,
  1024-frame windows, every block through the final norm, per-frame and clip embeddings);
* transformers: ``ASTFeatureExtractor`` (numpy, one clip at a time) then ``ASTModel`` (SDPA attention)
  on batches of ``B``, ``pooler_output``.

``--device cuda`` runs both sides on the GPU (the transformers feature extractor stays on the CPU:
it has no other). The network is a random-initialised real-size AST (10 x 10 strides, 768-d,
12 blocks; speed does not depend on the values), saved by transformers and loaded into audio-repr,
so the outputs are checked against each other too (the largest relative difference of the clip
embeddings is reported).

    python benchmarks/bench_ast.py --clips 8 --batch-size 4 --threads 2 --json benchmarks/bench_ast.json

Reports clips/s and seconds of audio per second for each side and the ratio (ours / transformers).
The best of ``--repeat`` timed runs (the two sides interleaved) after one warm-up run each. On CPU
the transformer dominates and both sides run the same operations, so expect a ratio near 1 (the
batched front end is the difference, and it matters most on a GPU). A plain script: never run as a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import audio_repr  # noqa: E402


def best_times(fns, repeat: int, device: str = "cpu"):
    """Best wall time of each function; runs interleaved (a, b, a, b, ...) after one warm-up each, so
    that load from other processes hits both sides alike."""
    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    for fn in fns:
        fn()
    sync()
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            t = time.perf_counter()
            fn()
            sync()
            best[i] = min(best[i], time.perf_counter() - t)
    return best


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", type=int, default=8, help="number of clips (default 8)")
    ap.add_argument("--seconds", type=float, default=10.0, help="clip length in seconds (default 10)")
    ap.add_argument("--batch-size", type=int, default=4, help="batch size for both sides (default 4)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--repeat", type=int, default=2, help="timed runs per side; the best is kept (default 2)")
    ap.add_argument("--device", default="cpu", help="torch device for both sides (default cpu)")
    ap.add_argument("--json", type=Path, default=None, help="write the results here as JSON")
    args = ap.parse_args(argv)

    from transformers import ASTConfig, ASTFeatureExtractor, ASTModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    warnings.filterwarnings("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    dev = args.device
    hf = ASTModel(ASTConfig()).eval()             # the AudioSet 10x10 geometry, real size
    with tempfile.TemporaryDirectory() as d:
        hf.save_pretrained(d)
        enc = audio_repr.load("ast-audioset", weights=d, device=dev)
    hf.to(dev)
    fe = ASTFeatureExtractor()

    g = np.random.default_rng(0)
    n = int(args.seconds * 16000)
    t = np.arange(n) / 16000
    clips = [(0.1 * g.standard_normal(n) + 0.3 * np.sin(2 * np.pi * (200 + 100 * i) * t)).astype(np.float32)
             for i in range(args.clips)]
    B = args.batch_size

    def ours():
        return torch.stack([e.clip for e in enc.embed(clips, sr=16000, batch_size=B)])   # on the CPU

    def theirs():
        out = []
        with torch.inference_mode():
            for i in range(0, len(clips), B):
                inputs = fe(clips[i: i + B], sampling_rate=16000, return_tensors="pt").to(dev)
                out.append(hf(**inputs).pooler_output.cpu())
        return torch.cat(out)

    def fbank_only_ours():
        with torch.inference_mode():
            for i in range(0, len(clips), B):
                batch = torch.from_numpy(np.stack(clips[i: i + B])).to(dev)
                enc.frontend(batch)

    def fbank_only_theirs():
        for c in clips:
            fe(c, sampling_rate=16000, return_tensors="pt")

    a, b = ours(), theirs()
    diff = float((a - b).abs().max() / b.abs().max())
    t_ours, t_theirs = best_times([ours, theirs], args.repeat, dev)
    t_fe_ours, t_fe_theirs = best_times([fbank_only_ours, fbank_only_theirs], args.repeat, dev)
    audio_s = args.clips * args.seconds
    res = {
        "benchmark": "ast-audioset end-to-end, clip embeddings",
        "device": dev, "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
        "transformers": __import__("transformers").__version__, "python": platform.python_version(),
        "machine": platform.machine(), "processor": platform.processor() or None,
        "clips": args.clips, "clip_seconds": args.seconds, "batch_size": B, "repeat": args.repeat,
        "ours_s": t_ours, "transformers_s": t_theirs,
        "ours_clips_per_s": args.clips / t_ours, "transformers_clips_per_s": args.clips / t_theirs,
        "ours_audio_s_per_s": audio_s / t_ours, "transformers_audio_s_per_s": audio_s / t_theirs,
        "speed_ratio_ours_over_transformers": t_theirs / t_ours,
        "frontend_ours_s": t_fe_ours, "frontend_transformers_s": t_fe_theirs,
        "frontend_speed_ratio": t_fe_theirs / t_fe_ours,
        "clip_max_rel_diff": diff,
        "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    print(f"{args.clips} clips x {args.seconds:g} s, batch {B}, {res['torch_threads']} threads, {dev}")
    print(f"  audio-repr   : {t_ours:7.2f} s  {res['ours_clips_per_s']:6.2f} clips/s  "
          f"{res['ours_audio_s_per_s']:6.1f} s audio/s  (front end {t_fe_ours:.3f} s)")
    print(f"  transformers : {t_theirs:7.2f} s  {res['transformers_clips_per_s']:6.2f} clips/s  "
          f"{res['transformers_audio_s_per_s']:6.1f} s audio/s  (front end {t_fe_theirs:.3f} s)")
    print(f"  ratio (ours / transformers throughput): {res['speed_ratio_ours_over_transformers']:.2f}x end to end, "
          f"{res['frontend_speed_ratio']:.1f}x front end; clip embeddings agree to {diff:.1e} (relative)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    return res


if __name__ == "__main__":
    main()
