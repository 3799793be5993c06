"""VGGish end-to-end throughput: audio-repr vs torchvggish, same clips, same weights, one run.

    python benchmarks/bench_vggish.py --clips 16 --seconds 10 --sr 16000 --json benchmarks/vggish.json
    python benchmarks/bench_vggish.py --sr 44100          # include resampling (kaiser_best vs resampy)
    python benchmarks/bench_vggish.py --device cuda --clips 64   # both networks on the GPU

Both sides embed the same ``--clips`` clips of ``--seconds`` s (noise and chirps at ``--sr`` Hz)
with the same random weights (speed does not depend on them):

* ``audio-repr``: ``Encoder.embed(list_of_clips, sr=...)``: torch resampler and log-mel on the
  model's device, all examples of all clips batched (``--batch-size`` pieces of 9.6 s per call);
* ``torchvggish``: its intended use, one clip at a time: ``vggish_input.waveform_to_examples``
  (resampy + numpy log-mel) then its network on that clip's examples;
* ``torchvggish-batched``: the same numpy front end per clip, then every example of every clip
  through its network in one call (torchvggish's best case).

Reported: audio seconds per wall-clock second (best of ``--repeat``), the front end's share, the
ratios, and the largest relative difference between the two sides' 128-d outputs (a sanity check;
torchvggish's output is after its final ReLU, so ours is compared at ``embedding_relu``). A
plain script, never run as a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import audio_repr  # noqa: E402


def best_time(fn, repeat: int, device: str = "cpu") -> float:
    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    fn()                                                  # warm-up (resampy compiles with numba)
    sync()
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - t)
    return best


def make_clips(n: int, seconds: float, sr: int):
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sr)) / sr
    clips = []
    for i in range(n):
        if i % 2:
            f0, f1 = 100.0 + 50 * i, 6000.0
            x = 0.5 * np.sin(2 * np.pi * (f0 * t + 0.5 * (f1 - f0) / seconds * t * t))
        else:
            x = 0.1 * rng.standard_normal(len(t))
        clips.append(x.astype(np.float32))
    return clips


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=16, help="number of clips (default 16)")
    ap.add_argument("--seconds", type=float, default=10.0, help="length of each clip (default 10 s)")
    ap.add_argument("--sr", type=int, default=16000, help="sample rate of the clips (default 16000: no resampling)")
    ap.add_argument("--batch-size", type=int, default=16, help="audio-repr pieces per network call (default 16)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    ap.add_argument("--repeat", type=int, default=3, help="timed repetitions, best kept (default 3)")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda: where both networks run")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    args = ap.parse_args(argv)

    try:
        from torchvggish import vggish_input
        from torchvggish.torchvggish import VGG, make_layers
    except ImportError:
        print("torchvggish is needed for the comparison: pip install torchvggish resampy", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device

    enc = audio_repr.load("vggish", pretrained=False, device=device)
    tv = VGG(make_layers(), postprocess=False).eval()
    tv.load_state_dict(enc.network.state_dict())          # same weights on both sides
    tv.to(device)
    clips = make_clips(args.clips, args.seconds, args.sr)
    tensors = [torch.from_numpy(c) for c in clips]
    audio_s = args.clips * args.seconds

    def ours():
        return enc.embed(tensors, sr=args.sr, batch_size=args.batch_size, layers=["embedding_relu"])

    def ours_frontend():
        from audio_repr.audio import get_resampler

        rs = get_resampler(enc.card.resampler)
        with torch.inference_mode():
            for t in tensors:
                t = t.to(device)
                w = rs(t, args.sr, 16000) if args.sr != 16000 else t
                enc.frontend(w[None])

    def tv_frontend():
        return [vggish_input.waveform_to_examples(c.astype(np.float64), args.sr) for c in clips]

    def tv_per_clip():
        with torch.inference_mode():
            return [tv(vggish_input.waveform_to_examples(c.astype(np.float64), args.sr).to(device)) for c in clips]

    def tv_batched():
        with torch.inference_mode():
            ex = torch.cat([vggish_input.waveform_to_examples(c.astype(np.float64), args.sr) for c in clips])
            return tv(ex.to(device))

    # sanity: the two sides compute the same thing
    a = torch.cat([e.frames for e in ours()])
    b = torch.cat(tv_per_clip()).cpu()
    rel = float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))

    times = {
        "audio-repr": best_time(ours, args.repeat, device),
        "audio-repr frontend": best_time(ours_frontend, args.repeat, device),
        "torchvggish": best_time(tv_per_clip, args.repeat, device),
        "torchvggish-batched": best_time(tv_batched, args.repeat, device),
        "torchvggish frontend": best_time(tv_frontend, args.repeat, device),
    }
    thr = {k: audio_s / v for k, v in times.items()}
    res = {
        "clips": args.clips, "seconds": args.seconds, "sample_rate": args.sr, "batch_size": args.batch_size,
        "threads": torch.get_num_threads(), "device": device, "torch": torch.__version__,
        "machine": platform.machine(), "cpus": os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "seconds_best": times, "audio_seconds_per_second": thr,
        "ratio_vs_torchvggish": thr["audio-repr"] / thr["torchvggish"],
        "ratio_vs_torchvggish_batched": thr["audio-repr"] / thr["torchvggish-batched"],
        "frontend_ratio": thr["audio-repr frontend"] / thr["torchvggish frontend"],
        "frontend_share": {"audio-repr": times["audio-repr frontend"] / times["audio-repr"],
                           "torchvggish": times["torchvggish frontend"] / times["torchvggish"]},
        "max_rel_diff_outputs": rel,
    }
    print(f"{args.clips} clips x {args.seconds:g} s at {args.sr} Hz, {res['threads']} threads, {device}")
    for k in times:
        print(f"  {k:<22} {times[k]:8.3f} s   {thr[k]:8.1f} audio s/s")
    print(f"  ratio audio-repr / torchvggish (per clip): {res['ratio_vs_torchvggish']:.2f}x")
    print(f"  ratio audio-repr / torchvggish (batched):  {res['ratio_vs_torchvggish_batched']:.2f}x")
    print(f"  front end ratio: {res['frontend_ratio']:.2f}x; max relative output difference {rel:.2e}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2) + "\n")
        print(f"  wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
