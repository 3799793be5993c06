"""BEATs end-to-end throughput on the CPU: audio-repr against the original per-clip code, same clips, same weights,
one run.

* audio-repr: ``Encoder.embed(clips, sr=16000)`` at the library's default batch (batched Kaldi fbank, windows of 62
  patches, every layer computed, frames and clip embedding of ``block12``);
* the original: ``BEATs.extract_features(wav[None])`` one clip at a time (its README's usage; ``tests/reference_beats.py``,
  a faithful copy of unilm ``beats/``), then the token mean (EVAR's clip embedding). Its ``preprocess`` calls
  torchaudio's ``kaldi.fbank`` per clip; torchaudio is not installable with this torch, so the peer computes that
  fbank with the library's own Kaldi fbank on one clip in float32 (torchaudio's precision, the same torch ops:
  framing, FFT, mel matmul), which is what a per-clip torchaudio call costs.

The network is a random-initialised full-size BEATs (the released cfg: 12 layers, 768-d; speed does not depend on
the values), saved in the original checkpoint layout and loaded into audio-repr, so the clip embeddings are also
checked against each other (largest relative difference reported).

    python benchmarks/bench_beats.py --clips 8 --seconds 10 --threads 2 --json benchmarks/results/cpu_beats.json

Reports audio seconds per second for each side and the ratio (ours / original), the best of ``--repeat`` timed runs
(the two sides interleaved) after one warm-up each. A plain script: never run as a test.
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

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import audio_repr  # noqa: E402


def best_times(fns, repeat: int):
    for fn in fns:
        fn()
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            t = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - t)
    return best


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=None, help="ours (default: the card's)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    if args.threads:
        torch.set_num_threads(args.threads)

    import reference_beats as R
    from audio_repr.models import beats as B

    card = audio_repr.get_card("beats-iter3")
    cfg = {k: v for k, v in card.arch.items() if k in B.CFG_DEFAULTS}
    ref = R.random_model(cfg, seed=0)
    fe32 = B.BEATsFbank(**dict(B.FRONTEND, dtype=torch.float32, waveform_scale=1.0))
    R.kaldi_fbank = lambda w: fe32(w)[0].T            # torchaudio's per-clip fbank, in torch, float32
    with tempfile.TemporaryDirectory() as d:
        R.checkpoint(ref, Path(d) / "BEATs_iter3.pt")
        enc = audio_repr.load("beats-iter3", weights=Path(d) / "BEATs_iter3.pt")

    g = torch.Generator().manual_seed(0)
    clips = [0.1 * torch.randn(int(args.seconds * 16000), generator=g) for _ in range(args.clips)]
    out = {}

    def ours():
        out["ours"] = torch.stack([e.clip for e in enc.embed(clips, sr=16000, batch_size=args.batch_size)])

    @torch.inference_mode()
    def original():
        out["original"] = torch.stack([ref.extract_features(c[None])[0][0].mean(0) for c in clips])

    t_ours, t_orig = best_times([ours, original], args.repeat)
    diff = float((out["ours"] - out["original"]).abs().max() / out["original"].abs().max())
    audio = args.clips * args.seconds
    res = dict(model="beats-iter3", clips=args.clips, seconds=args.seconds, threads=torch.get_num_threads(),
               batch_size=args.batch_size or "default", ours_audio_s_per_s=audio / t_ours,
               original_audio_s_per_s=audio / t_orig, ratio=t_orig / t_ours, max_rel_diff_clip=diff,
               machine=platform.machine(), cpus=os.cpu_count(), torch=torch.__version__)
    print(json.dumps(res, indent=2))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    return res


if __name__ == "__main__":
    main()
