"""Issue 29's fresh-process check of the heap policy: the same short-clip run in several fresh processes.

Each process loads a model (random weights), warms up on one clip, then embeds ``--clips`` clips of ``--seconds``
at the library's default batch ``--runs`` times, printing each run's wall seconds and minor page faults
(``ru_minflt``). Processes alternate between the library's heap policy (``mallopt`` thresholds, see
``audio_repr.inference.encoder._heap_policy``) and glibc's defaults (``AUDIO_REPR_MALLOPT=0``), so the machine's
load hits both alike. Before the policy, BYOL-A on 200 one-second clips ran at ~0.33 s or ~0.67 s per run depending
on the process (150-250k faults in the slow ones); the table shows whether that split is gone.

    python benchmarks/bench_heap.py --model byola-v1-512 --processes 5 --json benchmarks/results/cpu_heap_byola.json

Never run as a test.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, {root!r})
import torch
import audio_repr

torch.set_num_threads({threads})
enc = audio_repr.load({model!r}, pretrained=False)
sr = enc.sample_rate
g = torch.Generator().manual_seed(0)
clips = [0.1 * torch.randn(int(sr * {seconds}), generator=g) for _ in range({clips})]
enc.embed(clips[:1], sr=sr)                                    # warm-up: the first batch's allocations
runs = []
for _ in range({runs}):
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t0 = time.perf_counter()
    enc.embed(clips, sr=sr)
    runs.append((time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0))
print(json.dumps(runs))
"""


def one_process(args, policy: bool):
    env = dict(os.environ, AUDIO_REPR_MALLOPT="1" if policy else "0")
    for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES"):
        env.pop(k, None)
    code = CHILD.format(root=str(ROOT), threads=args.threads, model=args.model, seconds=args.seconds,
                        clips=args.clips, runs=args.runs)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=3600)
    if out.returncode:
        raise SystemExit(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="byola-v1-512")
    p.add_argument("--processes", type=int, default=5, help="fresh processes per side")
    p.add_argument("--runs", type=int, default=3, help="runs per process, after a warm-up")
    p.add_argument("--clips", type=int, default=200)
    p.add_argument("--seconds", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    rows = []
    for i in range(args.processes):
        for policy in (True, False):
            runs = one_process(args, policy)
            row = {"process": i, "heap_policy": policy, "seconds": [round(t, 3) for t, _ in runs],
                   "minor_faults": [f for _, f in runs], "load": round(os.getloadavg()[0], 2)}
            print(json.dumps(row), flush=True)
            rows.append(row)
    for policy in (True, False):
        t = sorted(s for r in rows if r["heap_policy"] == policy for s in r["seconds"])
        f = sorted(x for r in rows if r["heap_policy"] == policy for x in r["minor_faults"])
        print(f"{'policy' if policy else 'glibc defaults'}: seconds min {t[0]:.3f} median {t[len(t) // 2]:.3f} "
              f"max {t[-1]:.3f}; faults min {f[0]} median {f[len(f) // 2]} max {f[-1]}")
    if args.json:
        Path(args.json).write_text(json.dumps({"command": "python " + " ".join(
            [os.path.relpath(__file__, ROOT)] + (argv or sys.argv[1:])), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
