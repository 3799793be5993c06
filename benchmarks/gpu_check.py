"""GPU correctness and throughput check (one short run on a lent GPU).

1. Fidelity on the device: our torch resampler and BYOL-A v1 front end against torchaudio's own
   (where torchaudio is installed, e.g. the GPU image), and the official BYOL-A d512 weights against
   the golden outputs of the original implementation, computed on the GPU.
2. CPU vs GPU: the same random weights give the same embeddings (TF32 off for this part).
3. Throughput: clips per second for 10 s clips already on the device, float32 and bfloat16, batch 32 (TF32 at
   defaults), the median of ``--repeat`` passes with their spread.
4. The corpus path (``--corpus-files N``): N ten-second 44.1 kHz stereo WAV files on local disk embedded by
   ``audio_repr.inference.pipeline.embed_files`` (reader processes on this machine's CPUs, npz written by the
   writer thread) for each of ``--corpus-models``: files/s and the GPU's busy share of the wall time (NVML
   utilisation sampled every 50 ms where ``torch.cuda.utilization`` works, else the CUDA-event time of the
   batches over the wall time).

    python benchmarks/gpu_check.py --weights W.pth --golden byola_v1_d512.npz --corpus-files 400 --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import audio_repr  # noqa: E402
from audio_repr.audio import resample  # noqa: E402
from audio_repr.frontends import LogMelSpectrogram  # noqa: E402


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--weights")
    p.add_argument("--golden")
    p.add_argument("--json", default="gpu_check.json")
    p.add_argument("--models", nargs="+", default=["byola-v1-512", "byola-v2-2048", "msm-mae-80x208",
                                                     "msm-mae-80x512", "vggish", "ast-audioset",
                                                     "efficientat-mn10-as", "panns-cnn14", "m2d-vit-base"])
    p.add_argument("--clips", type=int, default=64)
    p.add_argument("--device", default="cuda")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--corpus-files", type=int, default=0)
    p.add_argument("--corpus-models", nargs="+", default=["byola-v1-512", "ast-audioset"])
    p.add_argument("--workers", type=int, default=None)
    args = p.parse_args()
    dev = args.device
    sync = torch.cuda.synchronize if dev.startswith("cuda") else (lambda: None)
    out = {"device": torch.cuda.get_device_name(0) if dev.startswith("cuda") else dev, "torch": torch.__version__}
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    g = torch.Generator().manual_seed(0)

    try:
        import torchaudio

        x = (0.1 * torch.randn(4, 44100 * 3, generator=g)).to(dev)
        out["resample_vs_torchaudio_44k1"] = float((resample(x, 44100, 16000)
                                                    - torchaudio.functional.resample(x, 44100, 16000)).abs().max())
        y = (0.1 * torch.randn(4, 8000 * 2, generator=g)).to(dev)
        out["resample_vs_torchaudio_8k"] = float((resample(y, 8000, 16000)
                                                  - torchaudio.functional.resample(y, 8000, 16000)).abs().max())
        w = (0.1 * torch.randn(3, 16000 * 2, generator=g)).to(dev)
        ta = torchaudio.transforms.MelSpectrogram(sample_rate=16000, n_fft=1024, win_length=1024, hop_length=160,
                                                  n_mels=64, f_min=60, f_max=7800).to(dev)
        ref = (ta(w) + torch.finfo(torch.float32).eps).log()
        ours = LogMelSpectrogram(sample_rate=16000, n_fft=1024, hop_length=160, n_mels=64, f_min=60,
                                 f_max=7800).to(dev)(w)
        out["byola_v1_logmel_vs_torchaudio_rel"] = rel(ours.exp().cpu(), ref.exp().cpu())
    except ImportError:
        out["torchaudio"] = "absent"

    if args.weights and args.golden:
        gold = np.load(args.golden)
        enc = audio_repr.load("byola-v1-512", weights=args.weights, device=dev)
        errs = []
        for k in ("dog", "cat"):
            e = enc.embed(gold[f"{k}_wav16k"], sr=16000)
            errs += [rel(e.frames, gold[f"{k}_frames"]), rel(e.clip, gold[f"{k}_clip"])]
        out["golden_byola_v1_d512_on_gpu_max_rel"] = max(errs)

    clips = [0.1 * torch.randn(160000, generator=g) for _ in range(args.clips)]
    short = [0.1 * torch.randn(n, generator=g) for n in (16000, 33600, 160000 + 1234)]
    for name in args.models:
        r = {}
        torch.manual_seed(0)
        cpu = audio_repr.load(name, pretrained=False)
        gpu = audio_repr.load(name, pretrained=False)
        gpu.load_state_dict(cpu.state_dict())
        gpu.to(dev)
        a = cpu.embed(short, sr=16000)
        b = gpu.embed(short, sr=16000)
        r["cpu_vs_gpu_rel"] = max(rel(x.frames, y.frames) for x, y in zip(b, a))
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        for dtype in ("float32", "bfloat16"):
            gpu.network.to(getattr(torch, dtype))
            n = args.clips if not name.startswith("ast") else max(8, args.clips // 2)
            batch = [c.to(dev) for c in clips[:n]]
            gpu.embed(batch[:4], sr=16000, batch_size=32)
            times = []
            for _ in range(args.repeat):
                sync()
                t = time.perf_counter()
                gpu.embed(batch, sr=16000, batch_size=32)
                sync()
                times.append(time.perf_counter() - t)
            dt = float(np.median(times))
            r[f"{dtype}_clips_per_s"] = n / dt
            r[f"{dtype}_clips_per_s_spread"] = [n / max(times), n / min(times)]
            r[f"{dtype}_audio_s_per_s"] = 10 * n / dt
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        if dev.startswith("cuda"):
            r["peak_gpu_mem_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
        out[name] = r
        print(name, json.dumps(r), flush=True)
    if args.corpus_files:
        out["corpus"] = corpus_check(args, dev, sync)
    print(json.dumps(out, indent=1))
    Path(args.json).write_text(json.dumps(out, indent=1))


def corpus_check(args, dev, sync):
    """Files on disk -> the corpus pipeline -> npz, per model: files/s and how busy the GPU was."""
    import shutil
    import tempfile
    import threading

    import soundfile as sf

    from audio_repr.corpus import NpzStore
    from audio_repr.inference.pipeline import default_workers, embed_files

    tmp = Path(tempfile.mkdtemp(prefix="audio-repr-gpu-corpus-"))
    res = {"files": args.corpus_files, "seconds_per_file": 10.0, "workers": args.workers or default_workers()}
    try:
        rng = np.random.default_rng(0)
        data = tmp / "data"
        data.mkdir()
        for i in range(args.corpus_files):
            sf.write(data / f"f{i:05d}.wav", (0.1 * rng.standard_normal((441000, 2))).astype(np.float32), 44100,
                     subtype="PCM_16")
        paths = sorted(str(p) for p in data.glob("*.wav"))
        for name in args.corpus_models:
            torch.manual_seed(0)
            enc = audio_repr.load(name, pretrained=False, device=dev)
            r = {}
            for rep in range(args.repeat):
                out_dir = tmp / f"out-{name}-{rep}"
                store = NpzStore(out_dir)
                busy, stop = [], threading.Event()

                def sample():
                    while not stop.is_set():
                        try:
                            busy.append(torch.cuda.utilization())
                        except Exception:  # noqa: BLE001 - no NVML: no samples
                            return
                        time.sleep(0.05)

                th = threading.Thread(target=sample, daemon=True)
                th.start()
                names = {p: Path(p).name for p in paths}
                t = time.perf_counter()
                n, failed = embed_files(enc, paths, lambda x: store.write(names[x.source], x.source, x.embedding),
                                        num_workers=args.workers)
                sync()
                wall = time.perf_counter() - t
                stop.set()
                th.join()
                r.setdefault("wall_s", []).append(wall)
                r.setdefault("files_per_s", []).append(n / wall)
                r.setdefault("gpu_busy_pct", []).append(float(np.mean(busy)) if busy else None)
                r["failed"] = len(failed)
                shutil.rmtree(out_dir)
            r["files_per_s_median"] = float(np.median(r["files_per_s"]))
            res[name] = r
            print("corpus", name, json.dumps(r), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return res


if __name__ == "__main__":
    main()
