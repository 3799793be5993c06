"""ATST-Frame and EAT on a CPU: audio-repr's default ``embed`` against the originals' per-clip pipelines re-stated in
``tests/reference_atst.py`` (torchaudio-equivalent mel -> dB -> MinMax, FrameAST in 1001-frame chunks) and
``tests/reference_eat.py`` (Kaldi fbank as transformers' numpy port, the fairseq model's ``extract_features``), the
same random full-size weights on both sides (speed does not depend on them), same clips, best of ``--repeat``.

    python benchmarks/bench_atst_eat.py --clips 4 --seconds 10 --threads 2

Reports seconds of audio embedded per second of wall time for each side and the ratio. A plain script: never run as
a test.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import audio_repr  # noqa: E402
from reference_atst import TrainingFrameATST, get_timestamp_embedding, lightning_checkpoint  # noqa: E402
from reference_eat import Data2VecMulti, fairseq_checkpoint, preprocess  # noqa: E402


def best(fn, repeat):
    fn()
    t_best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        t_best = min(t_best, time.perf_counter() - t)
    return t_best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    clips = [0.1 * torch.randn(int(args.seconds * 16000), generator=g) for _ in range(args.clips)]
    audio = args.clips * args.seconds
    with tempfile.TemporaryDirectory() as tmp:
        atst = TrainingFrameATST(seed=0)
        lightning_checkpoint(atst, path=Path(tmp) / "atst.ckpt")
        enc = audio_repr.load("atst-frame", weights=Path(tmp) / "atst.ckpt")
        ours = best(lambda: enc.embed(clips, sr=16000), args.repeat)
        orig = best(lambda: [get_timestamp_embedding(c[None], atst.teacher, n_blocks=1) for c in clips], args.repeat)
        print(f"atst-frame: ours {audio / ours:.1f} vs original {audio / orig:.1f} audio s/s = {orig / ours:.2f}x")
        eat = Data2VecMulti(seed=0)
        fairseq_checkpoint(eat, Path(tmp) / "eat.pt")
        enc = audio_repr.load("eat-base", weights=Path(tmp) / "eat.pt")

        def original_eat():
            with torch.no_grad():
                for c in clips:
                    eat.extract_features(preprocess(c))

        ours = best(lambda: enc.embed(clips, sr=16000), args.repeat)
        orig = best(original_eat, args.repeat)
        print(f"eat-base: ours {audio / ours:.1f} vs original {audio / orig:.1f} audio s/s = {orig / ours:.2f}x")


if __name__ == "__main__":
    main()
