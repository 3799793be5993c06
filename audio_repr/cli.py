"""Command line: ``audio-repr list | info NAME | download NAME... | embed PATHS... --model NAME --out DIR``."""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import time
from pathlib import Path
from typing import Iterable, List, Optional, Tuple

AUDIO_EXTENSIONS = {".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".au", ".opus"}


def _collect(paths: Iterable[str]) -> List[Tuple[Path, Path]]:
    """Expand files, folders (recursive) and globs into (file, path relative to its root) pairs."""
    found: List[Tuple[Path, Path]] = []
    seen = set()
    for spec in paths:
        matches = [Path(p) for p in sorted(glob.glob(spec, recursive=True))] if glob.has_magic(spec) else [Path(spec)]
        if not matches:
            raise FileNotFoundError(f"no file matches {spec!r}")
        for m in matches:
            if m.is_dir():
                for f in sorted(m.rglob("*")):
                    if f.is_file() and f.suffix.lower() in AUDIO_EXTENSIONS and f.resolve() not in seen:
                        seen.add(f.resolve())
                        found.append((f, f.relative_to(m)))
            elif m.is_file():
                if m.resolve() not in seen:
                    seen.add(m.resolve())
                    found.append((m, Path(m.name)))
            else:
                raise FileNotFoundError(f"no such file or folder: {m}")
    return found


def model_table_markdown() -> str:
    """The README's model table, generated from the cards (a test keeps the README in sync)."""
    import audio_repr
    from .registry import get_card, list_models

    lines = ["| model | family | sample rate | frame hop | output dims | layers (dims) | weights licence |",
             "|---|---|---|---|---|---|---|"]
    for name in list_models():
        c = get_card(name)
        enc = audio_repr.load(name, pretrained=False)
        layers = ", ".join(f"{n} {d}" for n, d in enc.layer_dims.items())
        if len(layers) > 120:
            layers = f"{len(enc.layer_dims)} layers: " + ", ".join(
                f"{n} {d}" for n, d in list(enc.layer_dims.items())[:2]) + ", ..., " + ", ".join(
                f"{n} {d}" for n, d in list(enc.layer_dims.items())[-1:])
        lic = c.licence.split(";")[0].split(" (")[0]
        lines.append(f"| `{name}` | {c.family} | {c.sample_rate // 1000} kHz | {enc.frame_hop_ms():g} ms | "
                     f"{enc.embedding_size} | {layers} | {lic} |")
    return "\n".join(lines)


def _cmd_list(args) -> int:
    from .registry import get_card, list_models

    if args.markdown:
        print(model_table_markdown())
        return 0
    rows = []
    for name in list_models():
        c = get_card(name)
        rows.append((name, c.family, f"{c.sample_rate}", c.default_layer, c.description))
    w = [max(len(r[i]) for r in rows + [("model", "family", "sr", "output", "")]) for i in range(4)]
    print(f"{'model':<{w[0]}}  {'family':<{w[1]}}  {'sr':<{w[2]}}  {'output':<{w[3]}}  description")
    for r in rows:
        print(f"{r[0]:<{w[0]}}  {r[1]:<{w[1]}}  {r[2]:<{w[2]}}  {r[3]:<{w[3]}}  {r[4]}")
    return 0


def _cmd_info(args) -> int:
    import audio_repr
    from .weights import cache_dir, manifest

    enc = audio_repr.load(args.name, pretrained=False)
    c = enc.card
    entry = manifest()["models"].get(c.name, {})
    info = {
        "name": c.name, "family": c.family, "description": c.description, "sample_rate": c.sample_rate,
        "frame_hop_ms": enc.frame_hop_ms(), "output_layer": c.default_layer, "layers": enc.layer_dims,
        "fusion_layers": list(c.fusion_layers), "fusion_size": enc.output_size("fusion"),
        "norm_stats": list(c.norm_stats), "resampler": c.resampler, "weights": entry,
        "cached": (cache_dir() / entry["filename"]).is_file() if entry else False,
        "licence": c.licence, "citation": c.citation, "paper": c.paper, "published": dict(c.published),
    }
    print(json.dumps(info, indent=2))
    return 0


def _cmd_download(args) -> int:
    from .registry import get_card
    from .weights import download

    extras = _extra_files()
    for name in args.names:
        # a model, or a companion file of the manifest that is not a model (e.g. vggish-pca)
        key = name if name in extras else get_card(name).name
        path = download(key, force=args.force)
        print(f"{key}: {path}")
        for extra, entry in extras.items():
            if extra.startswith(key + "-") and extra not in args.names:
                print(f"  (optional companion file: audio-repr download {extra}  # {entry['format'].split(' (')[0]})")
    return 0


def _extra_files() -> dict:
    """Manifest entries that are not models (files some models can use, e.g. VGGish's PCA)."""
    from .registry import list_models
    from .weights import manifest

    models = set(list_models())
    return {k: v for k, v in manifest()["models"].items() if k not in models}


def _out_path(out_dir: Path, rel: Path) -> Path:
    return out_dir / rel.with_suffix(rel.suffix + ".npz")


def consolidate(out_dir: Path, rels: List[Path], dest: Path) -> Path:
    """One ``.npz`` for a dataset: ``files [N]``, ``clip [N, D]``, all ``frames`` concatenated with
    ``frame_offsets [N + 1]`` (file i's frames are ``frames[offsets[i]:offsets[i + 1]]``), ``timestamps_ms``."""
    import numpy as np

    names, clips, frames, stamps, offsets = [], [], [], [], [0]
    meta = None
    for rel in rels:
        p = _out_path(out_dir, rel)
        if not p.is_file():
            continue
        with np.load(p) as d:
            names.append(str(rel))
            clips.append(d["clip"])
            frames.append(d["frames"])
            stamps.append(d["timestamps_ms"])
            offsets.append(offsets[-1] + len(d["frames"]))
            meta = (d["model"], d["layers"])
    if not names:
        raise ValueError("nothing to consolidate")
    tmp = dest.with_name(f".{dest.name}.part")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, files=np.array(names), clip=np.stack(clips), frames=np.concatenate(frames),
                     timestamps_ms=np.concatenate(stamps), frame_offsets=np.array(offsets), model=meta[0],
                     layers=meta[1])
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()
    return dest


def _cmd_embed(args) -> int:
    import audio_repr

    files = _collect(args.paths)
    if not files:
        print("no audio files found", file=sys.stderr)
        return 1
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.rglob(".*.part"):       # left by a run that was killed mid-write
        stale.unlink()
    todo = [(f, rel) for f, rel in files if args.overwrite or not _out_path(out_dir, rel).is_file()]
    skipped = len(files) - len(todo)
    enc = _load_for(args)
    layers = args.layers
    failures: List[Tuple[Path, str]] = []
    done = 0
    audio_s = 0.0
    t0 = time.perf_counter()
    bar = None
    if not args.quiet:
        try:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(todo), unit="file", desc=f"{enc.name}")
        except ImportError:  # pragma: no cover
            bar = None
    try:
        for i in range(0, len(todo), args.batch_size):
            group = todo[i: i + args.batch_size]
            embs = []
            try:
                embs = enc.embed([str(f) for f, _ in group], layers=layers, batch_size=args.batch_size)
            except Exception:
                # one bad file must not stop the others: retry one by one
                for f, rel in group:
                    try:
                        embs.append(enc.embed(str(f), layers=layers, batch_size=args.batch_size))
                    except Exception as e:  # reported, never fatal
                        failures.append((f, f"{type(e).__name__}: {e}"))
                        embs.append(None)
            for (f, rel), e in zip(group, embs):
                if e is None:
                    continue
                e.save(_out_path(out_dir, rel))
                done += 1
                audio_s += e.duration_s
            if bar is not None:
                bar.update(len(group))
                el = max(time.perf_counter() - t0, 1e-9)
                bar.set_postfix(files_s=f"{done / el:.1f}", audio_h_s=f"{audio_s / 3600 / el:.3f}")
    finally:
        if bar is not None:
            bar.close()
    print(f"embedded {done} file(s), skipped {skipped} already done, {len(failures)} failed -> {out_dir}",
          file=sys.stderr)
    if args.consolidate:
        path = consolidate(out_dir, [rel for _, rel in files], out_dir / args.consolidate)
        print(f"consolidated {len(files) - len(failures)} file(s) into {path}", file=sys.stderr)
    if failures:
        log = out_dir / "failures.log"
        with open(log, "a", encoding="utf-8") as fh:
            for f, msg in failures:
                fh.write(f"{f}\t{msg}\n")
        for f, msg in failures:
            print(f"  failed: {f}: {msg}", file=sys.stderr)
        print(f"  (also written to {log})", file=sys.stderr)
        return 2
    return 0


def _load_for(args, seed: int = 0):
    """The encoder the arguments ask for; with ``--random-init`` a network drawn from ``seed``
    (reproducible, and the caller's random state is left as it was)."""
    import torch

    import audio_repr

    if not args.random_init:
        return audio_repr.load(args.model, weights=args.weights, device=args.device)
    if args.weights:
        raise ValueError("--weights and --random-init exclude each other")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return audio_repr.load(args.model, device=args.device, pretrained=False)


def _cmd_evaluate(args) -> int:
    from .evaluate import evaluate

    # a random baseline draws its own network for each probe seed (the mean is then not one draw's luck)
    enc = (lambda seed: _load_for(args, seed)) if args.random_init else _load_for(args)
    res = evaluate(enc, args.csv, layers=args.layers, batch_size=args.batch_size,
                   cache=Path(args.cache) if args.cache else None, progress=not args.quiet,
                   fold_column=args.folds_from, calibrate=args.calibrate, unit_sec=args.unit_sec)
    if args.calibrate and not args.random_init:
        print(f"normalisation statistics calibrated on the dataset: mean {enc.norm_stats[0]:.4f}, "
              f"std {enc.norm_stats[1]:.4f}")
    print(res.report())
    if args.json:
        Path(args.json).write_text(json.dumps({"model": res.model, "layers": args.layers, "csv": str(args.csv),
                                               "calibrated": args.calibrate, "folds_from": args.folds_from,
                                               "unit_sec": args.unit_sec,
                                               "weights": "random-init" if args.random_init else (args.weights or "default"),
                                               "init": res.init, "seeds": res.seeds,
                                               "folds": res.folds, "per_seed": res.per_seed, "mean": res.mean}, indent=2))
    return 0


def _cmd_plot(args) -> int:
    from .plot import plot_file, plot_map

    enc = _load_for(args)
    if args.map:
        path = plot_map(enc, args.input, args.out, layers=args.layers, method=args.method,
                        cache=Path(args.cache) if args.cache else None, limit=args.limit)
    else:
        path = plot_file(enc, args.input, args.out, layers=args.layers)
    print(path)
    return 0


def _model_args(q, default_model=None):
    q.add_argument("--model", "-m", required=default_model is None, default=default_model)
    q.add_argument("--weights", help="weights file in the original format (default: cache/mirror/download)")
    q.add_argument("--layers", help="'fusion', 'all' or comma-separated layer names (default: standard output)")
    q.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default cpu)")
    q.add_argument("--random-init", action="store_true", help="random weights (baselines, testing pipelines): a reproducible draw "
                   "(seed 0; evaluate draws one network per probe seed)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="audio-repr", description="Pretrained general-purpose audio encoders.")
    sub = p.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("list", help="list the models")
    q.add_argument("--markdown", action="store_true", help="the model table as Markdown")
    q.set_defaults(func=_cmd_list)
    q = sub.add_parser("info", help="a model's card as JSON")
    q.add_argument("name")
    q.set_defaults(func=_cmd_info)
    q = sub.add_parser("download", help="fetch weights into the cache for offline use (copied from "
                       "AUDIO_REPR_MIRROR when the file is there, else downloaded; verified)")
    q.add_argument("names", nargs="+", help="models, or companion files: " + ", ".join(_extra_files()))
    q.add_argument("--force", action="store_true", help="download again even if cached")
    q.set_defaults(func=_cmd_download)
    q = sub.add_parser("embed", help="embed files, folders or globs into one .npz per file")
    q.add_argument("paths", nargs="+", help="audio files, folders (recursive) or glob patterns")
    _model_args(q)
    q.add_argument("--out", "-o", required=True, help="output folder (mirrors the input tree)")
    q.add_argument("--batch-size", type=int, default=16)
    q.add_argument("--overwrite", action="store_true", help="redo files whose output exists")
    q.add_argument("--consolidate", metavar="NAME.npz",
                   help="also write one file for the whole dataset (clip matrix, frames with offsets) under --out")
    q.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    q.set_defaults(func=_cmd_embed)
    q = sub.add_parser("evaluate", help="linear-probe accuracy on a file,label[,fold|split] CSV")
    q.add_argument("csv")
    _model_args(q, default_model="byola-v1-512")
    q.add_argument("--batch-size", type=int, default=32)
    q.add_argument("--cache", help="folder to cache the embeddings in")
    q.add_argument("--json", help="also write the result as JSON")
    q.add_argument("--calibrate", action="store_true",
                   help="set the log-mel normalisation statistics from the dataset first (as the original evaluations)")
    q.add_argument("--unit-sec", type=float, help="pad (centred) / crop every clip to this duration first, "
                   "as the BYOL-A evaluation's unit_sec")
    q.add_argument("--folds-from", metavar="COLUMN",
                   help="use this CSV column as folds (e.g. speaker: leave-one-speaker-out)")
    q.add_argument("--quiet", "-q", action="store_true")
    q.set_defaults(func=_cmd_evaluate)
    q = sub.add_parser("plot", help="PNG of a file's log-mel + frame embeddings, or --map of a labelled CSV")
    q.add_argument("input", help="an audio file, or with --map a file,label CSV")
    _model_args(q)
    q.add_argument("--out", "-o", required=True, help="PNG to write")
    q.add_argument("--map", action="store_true", help="2-D map of the CSV's clip embeddings coloured by label")
    q.add_argument("--method", choices=["pca", "tsne"], default="tsne")
    q.add_argument("--limit", type=int, help="use only the first N rows of the CSV")
    q.add_argument("--cache", help="folder to cache the embeddings in")
    q.set_defaults(func=_cmd_plot)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from .audio import AudioError
    from .registry import UnknownModelError
    from .weights import WeightsError

    try:
        return int(args.func(args) or 0)
    except (UnknownModelError, WeightsError, AudioError, FileNotFoundError, ValueError) as e:
        print(f"audio-repr: error: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # output piped into head & co.: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
