"""ESC-50 linear evaluation through ``audio-repr evaluate`` (the commands of docs/guide.md, run as written).

ESC-50 (K. J. Piczak, 2,000 five-second clips, 50 classes, 5 official folds; CC BY-NC) is not shipped with
the project. The guide says where a 16 kHz copy lives; ``--data`` is the folder holding its ``esc50.csv``
(columns filename, fold, target, category, ...) and ``audio/audio/16000/*.wav``. The CSV is read as it is
(``--file-column filename --label-column category --audio-dir audio/audio/16000``), leave-one-fold-out over
its ``fold`` column.

    python benchmarks/esc50.py --data /path/to/esc50 --weights AudioNTT2020-BYOLA-64x96d512.pth   # full protocol
    python benchmarks/esc50.py --data /path/to/esc50 --smoke      # every family, random weights, small subset
    python benchmarks/esc50.py --table                            # the guide's tables from benchmarks/results/

Each run writes ``benchmarks/results/esc50-<run>-<probe>.json`` (the command's ``--json`` plus the command
line and its wall time). Embeddings are cached in ``--cache`` (default: ``<data>/cache``), one cache for both
probes. The original-pipeline reference is ``benchmarks/esc50_original.py``.
"""

import argparse
import csv
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PROBES = ("evar", "logistic")

# name -> (model, init, extra arguments). "official" uses --weights, "random" --random-init (one draw per seed).
FULL = {
    "official-readme": ("byola-v1-512", "official", []),
    "official": ("byola-v1-512", "official", ["--calibrate"]),
    "official-fusion": ("byola-v1-512", "official", ["--calibrate", "--layers", "fusion"]),
    "random": ("byola-v1-512", "random", ["--calibrate"]),
    "random-fusion": ("byola-v1-512", "random", ["--calibrate", "--layers", "fusion"]),
}
# the same-protocol check with more seeds (EVAR probe only): the 3-seed means of two implementations of a probe
# that early-stops on 150 validation clips differ by up to about 1.5 points from seed luck alone
SEEDS10 = ",".join(str(s) for s in range(42, 52))
TEN_SEEDS = {"official-readme-10seeds": ("byola-v1-512", "official", ["--seeds", SEEDS10]),
             "official-10seeds": ("byola-v1-512", "official", ["--calibrate", "--seeds", SEEDS10])}
# one model of every other family, random weights, one seed, on the smoke subset (a path check, not a score;
# ast-audioset-crop: AST without padding 5 s clips to 10.24 s, half the CPU time of ast-audioset)
SMOKE_MODELS = ("byola-v2-2048", "msm-mae-80x208", "vggish", "ast-audioset-crop", "efficientat-mn04-as")
SMOKE = {f"smoke-{m}": (m, "random", ["--seeds", "42"]) for m in SMOKE_MODELS}


def _registered(runs: dict) -> dict:
    """The runs whose model this installation has (a family added later runs once it is registered)."""
    import audio_repr

    names = set(audio_repr.list_models())
    return {k: v for k, v in runs.items() if v[0] in names}
SMOKE_CLASSES, SMOKE_PER_FOLD = 5, 2     # targets 0-4, the first 2 clips of each class in each fold: 50 clips


def smoke_csv(data: Path, cache: Path) -> Path:
    """ESC-50's CSV cut to targets 0-4 and the first two clips of each (class, fold), written beside the cache
    with its audio folder pointing back at ``data``."""
    with open(data / "esc50.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    keep, seen = [], {}
    for r in rows:
        key = (int(r["target"]), r["fold"])
        if key[0] < SMOKE_CLASSES and seen.get(key, 0) < SMOKE_PER_FOLD:
            seen[key] = seen.get(key, 0) + 1
            keep.append(r)
    out = cache / "esc50-smoke.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(keep)
    return out


def run(name, model, init, extra, probe, csv_path, audio_dir, args) -> dict:
    out = RESULTS / f"esc50-{name}-{probe}.json"
    cmd = ["audio-repr", "evaluate", str(csv_path), "--model", model, "--probe", probe,
           "--file-column", "filename", "--label-column", "category", "--audio-dir", str(audio_dir),
           "--cache", str(args.cache), "--json", str(out), "-q"] + extra
    cmd += ["--weights", str(args.weights)] if init == "official" else ["--random-init"]
    print("$", " ".join(shlex.quote(c) for c in cmd), flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    exe = [sys.executable, "-m", "audio_repr.cli"] + cmd[1:]
    t0 = time.time()
    proc = subprocess.run(exe, env=env, cwd=ROOT, text=True, capture_output=True)
    wall = time.time() - t0
    print(proc.stdout, end="")
    if proc.returncode != 0:
        print(proc.stderr, file=sys.stderr)
        raise SystemExit(f"{name}/{probe} failed ({proc.returncode})")
    d = json.loads(out.read_text())
    d["command"] = " ".join(shlex.quote(c) for c in cmd).replace(str(args.data), "$ESC50").replace(
        str(args.cache), "$CACHE").replace(str(args.weights), "$WEIGHTS").replace(str(ROOT) + "/", "")
    d["wall_s"] = round(wall, 1)
    d["threads"] = args.threads
    d["csv"] = d["csv"].replace(str(args.data), "$ESC50").replace(str(args.cache), "$CACHE")
    if d.get("audio_dir"):
        d["audio_dir"] = d["audio_dir"].replace(str(args.data), "$ESC50")
    d["weights"] = Path(d["weights"]).name if init == "official" else d["weights"]
    out.write_text(json.dumps(d, indent=2) + "\n")
    return d


def pct(v) -> str:
    return f"{100 * v:.2f}"


def table() -> str:
    """The guide's tables, from the JSON results."""
    def load(name):
        p = RESULTS / f"esc50-{name}.json"
        return json.loads(p.read_text()) if p.is_file() else None

    rows = [("official weights, README statistics", "fc2", "official-readme"),
            ("official weights, dataset statistics (`--calibrate`)", "fc2", "official"),
            ("random init, 3 draws (`--random-init --calibrate`)", "fc2", "random"),
            ("official weights, `--calibrate`", "fusion", "official-fusion"),
            ("random init, 3 draws, `--calibrate`", "fusion", "random-fusion")]
    out = []
    for probe, title in (("evar", "EVAR linear probe (mean ± std over seeds 42, 43, 44; per fold: mean over seeds)"),
                         ("logistic", "logistic regression probe (deterministic for fixed weights; random init: "
                                      "mean ± std over the three draws)")):
        out += [f"**{title}**", "",
                "| `byola-v1-512` | layers | mean | fold 1 | fold 2 | fold 3 | fold 4 | fold 5 |",
                "|---|---|---|---|---|---|---|---|"]
        for label, layers, name in rows:
            d = load(f"{name}-{probe}")
            if d is None:
                continue
            mean = pct(d["mean"]) + ("" if d.get("deterministic") else f" ± {pct(d['std'])}")
            out.append(f"| {label} | `{layers}` | {mean} | "
                       + " | ".join(pct(d["folds"][f"fold {k}"]) for k in range(1, 6)) + " |")
        out.append("")
    orig = [load("original-readme"), load("original-dataset")]
    if all(orig):
        out += ["**original BYOL-A pipeline** (`benchmarks/esc50_original.py`, same embeddings settings, folds and seeds)", "",
                "| statistics | probe | original pipeline | `audio-repr evaluate` | difference |", "|---|---|---|---|---|"]
        for o, name in zip(orig, ("official-readme", "official")):
            stats = {"readme": "README", "dataset": "dataset (`--calibrate`)"}[o["stats"]]
            for probe, label in (("evar", "EVAR, seeds 42-44"), ("logistic", "logistic")):
                ours = load(f"{name}-{probe}")
                if ours is None:
                    continue
                a, b = o["probes"][probe]["mean"], ours["mean"]
                sa, sb = ((f" ± {pct(o['probes'][probe]['std'])}", f" ± {pct(ours['std'])}") if probe == "evar"
                          else ("", ""))
                out.append(f"| {stats} | {label} | {pct(a)}{sa} | {pct(b)}{sb} | {100 * (b - a):+.2f} |")
            o10, ours10 = load(f"original-{o['stats']}-evar-10seeds"), load(f"{name}-10seeds-evar")
            if o10 and ours10:
                a, b = o10["probes"]["evar"]["mean"], ours10["mean"]
                out.append(f"| {stats} | EVAR, seeds 42-51 | {pct(a)} ± {pct(o10['probes']['evar']['std'])} | "
                           f"{pct(b)} ± {pct(ours10['std'])} | {100 * (b - a):+.2f} |")
            if "byola" in o["probes"]:
                out.append(f"| {stats} | byol-a's own probe, seeds 42-44 | "
                           f"{pct(o['probes']['byola']['mean'])} | – | |")
        out.append("")
    smoke = [load(f"{name}-{probe}") for name in SMOKE for probe in PROBES]
    if any(smoke):
        out += ["**smoke runs** (random weights, one draw, 50-clip subset: a path check, not a score)", "",
                "| model | EVAR probe | logistic probe | embedding dims |", "|---|---|---|---|"]
        for name in SMOKE:
            e, l = load(f"{name}-evar"), load(f"{name}-logistic")
            if e or l:
                d = e or l
                out.append(f"| `{d['model']}` | {pct(e['mean']) if e else '–'} | {pct(l['mean']) if l else '–'} | "
                           f"{d.get('dims', '')} |")
        out.append("")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, help="folder with esc50.csv and audio/audio/16000/")
    ap.add_argument("--weights", type=Path, help="AudioNTT2020-BYOLA-64x96d512.pth (official runs)")
    ap.add_argument("--cache", type=Path, help="embedding cache (default: <data>/cache)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (OMP_NUM_THREADS) per run")
    ap.add_argument("--only", nargs="+", help=f"run only these of: {', '.join(list(FULL) + list(TEN_SEEDS) + list(SMOKE))}")
    ap.add_argument("--probes", nargs="+", default=list(PROBES), choices=PROBES)
    ap.add_argument("--smoke", action="store_true", help="the smoke runs (every family, random weights, subset)")
    ap.add_argument("--ten-seeds", action="store_true", help="the official-weights runs with seeds 42-51, EVAR probe")
    ap.add_argument("--table", action="store_true", help="print the guide's tables from benchmarks/results/")
    args = ap.parse_args()
    if args.table:
        print(table())
        return
    if args.data is None:
        ap.error("--data is required to run")
    args.data = args.data.resolve()
    args.cache = (args.cache or args.data / "cache").resolve()
    runs = dict(_registered(SMOKE) if args.smoke else TEN_SEEDS if args.ten_seeds else FULL)
    if args.ten_seeds:
        args.probes = ["evar"]
    if args.only:
        runs = {k: v for k, v in {**FULL, **SMOKE, **TEN_SEEDS}.items() if k in args.only}
    if any(init == "official" for _, init, _ in runs.values()) and not args.weights:
        ap.error("--weights is required for the official-weights runs")
    if args.weights:
        args.weights = args.weights.resolve()
    RESULTS.mkdir(parents=True, exist_ok=True)
    for name, (model, init, extra) in runs.items():
        if name.startswith("smoke-"):
            csv_path, audio_dir = smoke_csv(args.data, args.cache), os.path.relpath(args.data / "audio" / "audio" / "16000", args.cache)
        else:
            csv_path, audio_dir = args.data / "esc50.csv", "audio/audio/16000"
        for probe in args.probes:
            run(name, model, init, extra, probe, csv_path, audio_dir, args)


if __name__ == "__main__":
    main()
