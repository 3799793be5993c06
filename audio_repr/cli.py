"""Command line: ``audio-repr list | info NAME | download NAME... | embed PATHS... --model NAME --out DIR``."""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Iterable, List, Optional, Tuple

AUDIO_EXTENSIONS = {".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".au", ".opus"}


def _glob_root(pattern: str) -> Path:
    """The folder a glob pattern searches from: its leading parts without wildcards."""
    parts = Path(pattern).parts
    lead = []
    for part in parts[:-1]:
        if glob.has_magic(part):
            break
        lead.append(part)
    return Path(*lead) if lead else Path(".")


def _collect(paths: Iterable[str]) -> List[Tuple[Path, Path]]:
    """Expand files, folders (recursive) and globs into ``(file, output name)`` pairs.

    Output names mirror each file's path relative to the common root of all inputs (a folder counts from
    itself, a glob from its leading folders, a file from its own folder), so two inputs never share an
    output and a user can map every output back to its source. A file reached twice (by two specs or a
    link) is embedded once."""
    entries: List[Tuple[Path, Path]] = []          # (file as found, the root it was found from)
    for spec in paths:
        if glob.has_magic(spec):
            matches = [Path(p) for p in sorted(glob.glob(spec, recursive=True))]
            if not matches:
                raise FileNotFoundError(f"no file matches {spec!r}")
            root = _glob_root(spec)
        else:
            matches, root = [Path(spec)], None
        for m in matches:
            if m.is_dir():
                entries.extend((f, m if root is None else root) for f in sorted(m.rglob("*"))
                               if f.is_file() and f.suffix.lower() in AUDIO_EXTENSIONS)
            elif m.is_file():
                entries.append((m, m.parent if root is None else root))
            else:
                raise FileNotFoundError(f"no such file or folder: {m}")
    if not entries:
        return []
    try:
        common = Path(os.path.commonpath([os.path.abspath(r) for _, r in entries]))
    except ValueError as e:   # e.g. inputs on two Windows drives
        raise ValueError(f"the inputs have no common folder to name their outputs from: {e}") from e
    found, seen = [], set()
    for f, _ in entries:
        key = f.resolve()
        if key in seen:
            continue
        seen.add(key)
        found.append((f, Path(os.path.relpath(os.path.abspath(f), common))))
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
    from .weights import WeightsError, cache_status, manifest_entry

    enc = audio_repr.load(args.name, pretrained=False)
    c = enc.card
    fe = enc.frontend
    try:
        entry = manifest_entry(c.name)
    except WeightsError:
        entry = {}
    frontend = {"type": type(fe).__name__, **dict(c.frontend),
                "window_samples": fe.frame_length, "hop_samples": fe.hop_length,
                "frame_offset_ms": fe.frame_offset_ms}
    status = cache_status(c.name) if entry else "absent"
    info = {
        "name": c.name, "family": c.family, "description": c.description, "sample_rate": c.sample_rate,
        "frame_hop_ms": enc.frame_hop_ms(), "output_layer": c.default_layer, "layers": enc.layer_dims,
        "fusion_layers": list(c.fusion_layers), "fusion_size": enc.output_size("fusion"),
        "frontend": frontend, "normalisation": c.to_dict()["normalisation"],
        "resampler": c.resampler, "weights": entry,
        "cached": status in ("verified", "unpinned"), "cache_status": status,
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
            mine = key not in extras and get_card(entry["for"]).weights == get_card(key).weights
            if mine and extra not in args.names:
                print(f"  (optional companion file: audio-repr download {extra}  # {entry['format'].split(' (')[0]})")
    return 0


def _extra_files() -> dict:
    """Manifest entries that are not models (files some models can use, e.g. VGGish's PCA)."""
    from .weights import companion_files

    return companion_files()


from ._io import RUN_RECORD  # noqa: E402  (what made an output folder, compared when a run resumes)
_COMPARED = ("model", "weights", "layers", "normalisation", "format", "library")


def _out_path(out_dir: Path, rel: Path) -> Path:
    return out_dir / rel.with_suffix(rel.suffix + ".npz")


def consolidate(out_dir: Path, files: List[Tuple[Path, Path]], dest: Path) -> Path:
    """One ``.npz`` for a dataset: ``files [N]`` (output names, relative to the inputs' common root),
    ``sources [N]`` (the paths as given), ``clip [N, D]``, all ``frames`` concatenated with
    ``frame_offsets [N + 1]`` (file i's frames are ``frames[offsets[i]:offsets[i + 1]]``), ``timestamps_ms``.
    Each source appears once, with its own rows; files without an output (failed) are left out."""
    import numpy as np

    names, sources, clips, frames, stamps, offsets = [], [], [], [], [], [0]
    meta = None
    for src, rel in files:
        p = _out_path(out_dir, rel)
        if not p.is_file():
            continue
        with np.load(p) as d:
            names.append(rel.as_posix())
            sources.append(str(src))
            clips.append(d["clip"])
            frames.append(d["frames"])
            stamps.append(d["timestamps_ms"])
            offsets.append(offsets[-1] + len(d["frames"]))
            meta = (d["model"], d["layers"])
    if not names:
        raise ValueError("nothing to consolidate: no file was embedded")
    if len(set(names)) != len(names):     # _collect guarantees this; a broken guarantee must not pass silently
        raise RuntimeError("two inputs share an output name")
    _atomic_savez(dest, files=np.array(names), sources=np.array(sources), clip=np.stack(clips),
                  frames=np.concatenate(frames), timestamps_ms=np.concatenate(stamps),
                  frame_offsets=np.array(offsets), model=meta[0], layers=meta[1])
    return dest


def _atomic_savez(dest: Path, **arrays) -> None:
    import numpy as np

    from ._io import atomic_write

    with atomic_write(dest) as f:
        np.savez(f, **arrays)


def _prepare_out_dir(out_dir: Path) -> Tuple[List[Path], bool]:
    """Create ``out_dir`` if needed and prove it writable, before any long work.
    Returns the folders this call created (outermost first) and whether the folder's file system
    ignores letter case (then two outputs differing only in case would collide)."""
    from ._io import make_dirs, remove_empty

    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {out_dir} is a file, not a folder")
    created: List[Path] = []
    try:
        created = make_dirs(out_dir)
        fd, probe = tempfile.mkstemp(prefix=".audio-repr-probe-", dir=out_dir)
        os.close(fd)
        try:
            case_insensitive = os.path.exists(os.path.join(out_dir, os.path.basename(probe).upper()))
        finally:
            os.unlink(probe)
    except OSError as e:
        remove_empty(created)
        raise OSError(f"cannot write to the output folder {out_dir}: {e.strerror or e}") from e
    return created, case_insensitive


def _state_digest(module) -> str:
    """SHA-256 of a network's parameters and buffers (names, dtypes, shapes, values): the weights as
    used, whatever file format they came from."""
    import hashlib

    import torch

    h = hashlib.sha256()
    for k, t in module.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _run_settings(enc, layers: List[str], args) -> dict:
    import audio_repr

    n = enc.normalisation
    norm = ({"mode": "per_clip", "scale": n.scale} if n.per_clip
            else {"mode": "fixed", "mean": n.mean, "std": n.std, "scale": n.scale})
    return json.loads(json.dumps({
        "model": enc.name,
        "weights": _state_digest(enc.network),
        "weights_source": "random-init (seed 0)" if args.random_init else str(args.weights or "default (cache/mirror/download)"),
        "layers": layers,
        "normalisation": norm,
        "format": getattr(args, "format", "npz"),
        "library": audio_repr.__version__,
    }))


def _check_resume(out_dir: Path, settings: dict, n_done: int, overwrite: bool, outputs: List[Path]) -> None:
    """Refuse to mix outputs of different settings in one folder (``--overwrite`` re-embeds instead).
    ``n_done``: how many of this run's inputs already have an output; ``outputs``: the .npz paths of all inputs."""
    record = out_dir / RUN_RECORD
    if record.is_file():
        try:
            old = json.loads(record.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ValueError(f"{record} is unreadable ({e}); remove it, or use --overwrite") from e
        old.setdefault("format", "npz")          # records of runs before --format existed
        diff = [f"{k}: {_short(old.get(k))} -> {_short(settings[k])}" for k in _COMPARED if old.get(k) != settings[k]]
        if diff and not overwrite:
            raise ValueError(f"{out_dir} holds embeddings made with other settings ({'; '.join(diff)}). "
                             "Use another --out, or --overwrite to embed every input again with these settings")
        if diff and overwrite and settings["format"] == "npz":
            ours = set(outputs)
            stale = [p for p in out_dir.rglob("*.npz") if p not in ours]
            if stale:
                print(f"audio-repr: warning: {len(stale)} other .npz file(s) in {out_dir} were made with the earlier "
                      "settings and are not inputs of this run; remove them", file=sys.stderr)
    elif n_done and not overwrite:
        raise ValueError(f"{out_dir} already holds {n_done} embedding(s) of these inputs but no record of the "
                         f"settings that made them ({RUN_RECORD}); use --overwrite to embed them again, or another --out")


def _short(v) -> str:
    """A setting for a one-line message: digests cut to 12 hex digits, other values whole up to 80 characters."""
    if isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v):
        return v[:12] + "…"
    s = json.dumps(v) if not isinstance(v, str) else v
    return s if len(s) <= 80 else s[:77] + "…"


def _parse_shard(text: Optional[str]) -> Optional[Tuple[int, int]]:
    """``--shard i/N`` (0 <= i < N) or ``auto`` (torchrun's RANK/WORLD_SIZE, a SLURM array's task id and count,
    or SLURM_PROCID/SLURM_NTASKS) -> ``(i, N)``; ``None`` without sharding."""
    if text is None:
        return None
    env = os.environ
    if text == "auto":
        if "RANK" in env and "WORLD_SIZE" in env:
            i, n, where = env["RANK"], env["WORLD_SIZE"], "RANK/WORLD_SIZE"
        elif "SLURM_ARRAY_TASK_ID" in env and "SLURM_ARRAY_TASK_COUNT" in env:
            i = str(int(env["SLURM_ARRAY_TASK_ID"]) - int(env.get("SLURM_ARRAY_TASK_MIN", "0")))
            n, where = env["SLURM_ARRAY_TASK_COUNT"], "SLURM_ARRAY_TASK_ID/COUNT"
        elif "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
            i, n, where = env["SLURM_PROCID"], env["SLURM_NTASKS"], "SLURM_PROCID/SLURM_NTASKS"
        else:
            raise ValueError("--shard auto: no RANK/WORLD_SIZE (torchrun) nor SLURM array or task variables are "
                             "set; give the shard as --shard i/N")
        text = f"{i}/{n}"
    else:
        where = "--shard"
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard {text!r}: expected i/N with whole numbers (0 <= i < N), e.g. 0/4, or auto") from None
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"--shard {text!r} (from {where}): expected 0 <= i < N")
    return i, n


def shard_files(files: List[Tuple[Path, Path]], shard: Optional[Tuple[int, int]]) -> List[Tuple[Path, Path]]:
    """Shard ``i`` of ``N``: every N-th input from the i-th, in the order of their output names (the same split
    in every worker, whatever order the inputs were listed or found in)."""
    if shard is None:
        return files
    i, n = shard
    return sorted(files, key=lambda fr: fr[1].as_posix())[i::n]


def _cmd_embed(args) -> int:
    from ._io import atomic_write, remove_empty
    from .corpus import open_store

    # everything a user can get wrong is checked before the model is loaded or any audio read
    files = _collect(args.paths)
    if not files:
        raise FileNotFoundError(f"no audio files ({', '.join(sorted(AUDIO_EXTENSIONS))}) found in "
                                + ", ".join(args.paths))
    shard = _parse_shard(args.shard)
    if args.consolidate and args.format != "npz":
        raise ValueError("--consolidate gathers .npz outputs into one file: Parquet shards already are one table "
                         "(read them with audio_repr.read_embeddings or pandas)")
    if args.consolidate and shard is not None:
        raise ValueError("--consolidate with --shard: each worker sees only its share; consolidate once all "
                         "shards are done (audio_repr.read_embeddings reads the whole folder)")
    if args.format == "parquet":
        _require("pyarrow.parquet", "parquet", "pyarrow")
    if args.engine == "ray":
        _require("ray.data", "ray", "ray[data]")
        if args.format != "parquet":
            raise ValueError("--engine ray writes Parquet: add --format parquet")
        if shard is not None:
            raise ValueError("--engine ray spreads the work over the cluster itself: drop --shard")
    elif args.address:
        raise ValueError("--address names a Ray cluster: use it with --engine ray")
    if args.device == "cuda" and shard is not None and "LOCAL_RANK" in os.environ:
        args.device = f"cuda:{int(os.environ['LOCAL_RANK'])}"      # torchrun: one GPU per local worker
    out_dir = Path(args.out)
    layers = _check_model_args(args)
    created, case_insensitive = _prepare_out_dir(out_dir)
    outputs = [_out_path(out_dir, rel) for _, rel in files]
    tag = f"{shard[0]}of{shard[1]}" if shard else "0of1"
    log = out_dir / (f"_failures-{tag}.log" if shard else "_failures.log")
    try:
        keys = [str(o).casefold() if case_insensitive else str(o) for o in outputs]
        reserved = {(out_dir / n) for n in (RUN_RECORD, log.name)}
        if args.consolidate:
            if Path(args.consolidate).name != args.consolidate or not args.consolidate.endswith(".npz"):
                raise ValueError(f"--consolidate {args.consolidate!r}: give a file name ending in .npz "
                                 "(it is written inside --out)")
            reserved.add(out_dir / args.consolidate)
        clash = _first_clash(keys, outputs, reserved, case_insensitive)   # over all inputs, not one shard's
        if clash:
            raise ValueError(clash)
        files = shard_files(files, shard)
        names = [rel.as_posix() for _, rel in files]
        # Ray: the driver only records the weights' digest (the actors' machines have the GPUs)
        enc = _load_for(args, device="cpu" if args.engine == "ray" else None)
        settings = _run_settings(enc, layers, args)
        store = open_store(args.format, out_dir, settings, shard=tag, rows_per_file=args.rows_per_file)
        done_before = store.done(names)
        _check_resume(out_dir, settings, len(done_before), args.overwrite, outputs)
    except BaseException:
        remove_empty(created)
        raise
    if shard is None:
        for stale in out_dir.rglob(".*.part"):       # left by a run that was killed mid-write (with --shard other
            stale.unlink()                           # workers may be writing theirs: left alone)
    if log.exists():                                 # it describes one run: the last
        log.unlink()
    with atomic_write(out_dir / RUN_RECORD, "w", encoding="utf-8") as f:
        json.dump(settings, f, indent=2)
    if args.overwrite:
        store.clear()
        done_before = set()
    if args.engine == "ray":
        from .ray import embed_folder

        gpus = 1 if (args.device or "cpu").startswith("cuda") else 0     # --device cuda: one GPU per model actor
        n, failures = embed_folder([str(f) for f, _ in files], names, out_dir, model=args.model, layers=layers,
                                   weights=args.weights, random_init=args.random_init, settings=settings,
                                   address=args.address, batch_size=args.batch_size,
                                   rows_per_file=args.rows_per_file, skip=done_before, num_gpus=gpus,
                                   progress=not args.quiet)
        print(f"embedded {n} file(s) with Ray, skipped {len(done_before)} already done, {len(failures)} failed "
              f"-> {out_dir}", file=sys.stderr)
        return _report_failures(failures, log)

    todo = [(str(f), name) for (f, _), name in zip(files, names) if name not in done_before]
    skipped = len(files) - len(todo)
    from .inference.pipeline import durations, embed_files

    seconds = durations([f for f, _ in todo])
    name_of = {i: name for i, (_, name) in enumerate(todo)}
    stats = {"files": 0}
    t0 = time.perf_counter()
    bar = None
    if not args.quiet:
        try:
            from tqdm.auto import tqdm

            bar = tqdm(total=round(sum(seconds), 1), unit="s", unit_scale=False, desc=f"{enc.name} (audio s)",
                       bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}{postfix}]")
        except ImportError:  # pragma: no cover
            bar = None

    def advance(sec: float) -> None:   # called by embed after each batch of pieces: long files move the bar
        if bar is not None:
            bar.update(sec)
            el = max(time.perf_counter() - t0, 1e-9)
            bar.set_postfix(files=f"{stats['files']}/{len(todo)}", x_realtime=f"{bar.n / el:.0f}", refresh=False)

    def write(r) -> None:              # on the writer thread
        store.write(name_of[r.index], r.source, r.embedding)
        stats["files"] += 1

    failures: List[Tuple[str, str]] = []
    try:
        done, failures = embed_files(enc, [f for f, _ in todo], write, layers=layers, batch_size=args.batch_size,
                                     num_workers=args.workers, seconds=seconds, progress=advance)
    finally:
        store.close()                  # rows of whole files written so far are kept (Parquet: a last shard)
        if bar is not None:
            bar.close()
    print(f"embedded {done} file(s), skipped {skipped} already done, {len(failures)} failed -> {out_dir}",
          file=sys.stderr)
    if args.consolidate:
        path = consolidate(out_dir, files, out_dir / args.consolidate)
        print(f"consolidated {len(files) - len(failures)} file(s) into {path}", file=sys.stderr)
    return _report_failures(failures, log)


def _report_failures(failures: List[Tuple[str, str]], log: Path) -> int:
    """Each failed input on stderr and in ``log`` (this run's only); the exit status (2 when some failed)."""
    from ._io import atomic_write

    if not failures:
        return 0
    with atomic_write(log, "w", encoding="utf-8") as fh:
        fh.writelines(f"{f}\t{msg}\n" for f, msg in failures)
    for f, msg in failures:
        print(f"  failed: {f}: {msg}", file=sys.stderr)
    print(f"  (also written to {log})", file=sys.stderr)
    return 2


def _first_clash(keys: List[str], outputs: List[Path], reserved, case_insensitive: bool) -> Optional[str]:
    """A message when two inputs would write one output, or an input would overwrite a file of the run."""
    first = {}
    for k, o in zip(keys, outputs):
        if k in first:
            return (f"two inputs would write the same output {o}"
                    + (" (this file system ignores letter case)" if case_insensitive else "")
                    + "; rename one of them or embed them into different --out folders")
        first[k] = o
    for r in reserved:
        rk = str(r).casefold() if case_insensitive else str(r)
        if rk in first:
            return f"an input's output {first[rk]} would overwrite {r.name}, a file of the run itself"
    return None


def _check_model_args(args) -> List[str]:
    """Every model option checked before any model is loaded or audio read (embed, evaluate, plot): the
    layers (returned, resolved), the device, ``--weights`` (it exists; not with ``--random-init``)."""
    import audio_repr

    from .models import resolve_model_layers

    layers = resolve_model_layers(args.model, args.layers)   # checked without loading the model
    if args.device is not None and getattr(args, "engine", "local") != "ray":   # Ray: the actors' machines check it
        audio_repr.check_device(args.device)
    if args.weights and args.random_init:
        raise ValueError("--weights and --random-init exclude each other")
    if args.weights and not Path(args.weights).expanduser().exists():
        raise FileNotFoundError(f"--weights {args.weights}: no such file or folder")
    return layers


def _load_for(args, seed: int = 0, device: Optional[str] = None):
    """The encoder the arguments ask for (on ``device``, default ``--device``); with ``--random-init`` a network
    drawn from ``seed`` (reproducible, and the caller's random state is left as it was)."""
    import torch

    import audio_repr

    device = device or args.device
    if not args.random_init:
        return audio_repr.load(args.model, weights=args.weights, device=device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return audio_repr.load(args.model, device=device, pretrained=False)


def _cmd_tag(args) -> int:
    from .inference.tagging import TaggingError, taggers
    from .registry import get_card

    if get_card(args.model).labels is None:
        raise TaggingError(f"{get_card(args.model).name} has no classifier to tag with; models that tag: "
                           + ", ".join(taggers()))
    _check_model_args(args)
    for p in args.files:
        if not Path(p).is_file():
            raise FileNotFoundError(f"no such file: {p}")
    enc = _load_for(args)
    tags = enc.tag(list(args.files), top_k=args.top_k, batch_size=args.batch_size)
    if args.json:
        rows = [{"file": str(f), "labels": t.labels, "scores": [float(x) for x in t.scores],
                 "indices": [int(i) for i in t.indices], "windows": t.windows} for f, t in zip(args.files, tags)]
        Path(args.json).write_text(json.dumps(rows, indent=2))
    for t in tags:
        print(t)
    return 0


def _cmd_evaluate(args) -> int:
    from .evaluate import SmallDataWarning, evaluate

    warnings.simplefilter("ignore", SmallDataWarning)     # the report below says it, once

    if args.C is not None and args.probe != "logistic":
        raise ValueError("--C sets the logistic probe's regularisation: use it with --probe logistic")
    if args.C is not None and not args.C > 0:
        raise ValueError(f"--C must be positive, got {args.C}")
    _check_model_args(args)

    # a random baseline draws its own network for each probe seed (the mean is then not one draw's luck)
    enc = (lambda seed: _load_for(args, seed)) if args.random_init else _load_for(args)
    extra = {"seeds": args.seeds} if args.seeds is not None else {}
    probe_kwargs = {"C": args.C} if args.C is not None else {}
    res = evaluate(enc, args.csv, layers=args.layers, batch_size=args.batch_size,
                   cache=Path(args.cache) if args.cache else None, progress=not args.quiet,
                   fold_column=args.folds_from, calibrate=args.calibrate, unit_sec=args.unit_sec,
                   probe=args.probe, file_column=args.file_column, label_column=args.label_column,
                   audio_dir=args.audio_dir, **extra, **probe_kwargs)
    if args.calibrate and not args.random_init:
        print(f"normalisation statistics calibrated on the dataset: mean {enc.norm_stats[0]:.4f}, "
              f"std {enc.norm_stats[1]:.4f}")
    print(res.report())
    if args.json:
        Path(args.json).write_text(res.to_json(
            layers=args.layers, csv=str(args.csv), calibrated=args.calibrate, folds_from=args.folds_from,
            unit_sec=args.unit_sec, weights="random-init" if args.random_init else (args.weights or "default"),
            file_column=args.file_column, label_column=args.label_column, audio_dir=args.audio_dir,
            probe_settings={"C": args.C if args.C is not None else 1.0} if args.probe == "logistic" else None))
    return 0


def _cmd_plot(args) -> int:
    _require("matplotlib", "plot")
    if args.map:
        _require("sklearn", "plot", "scikit-learn")
    from .plot import plot_file, plot_map

    if not args.map:
        given = [o for o, v in (("--limit", args.limit), ("--file-column", args.file_column != "file"),
                                ("--label-column", args.label_column != "label"), ("--audio-dir", args.audio_dir)) if v]
        if given:
            raise ValueError(f"{', '.join(given)}: for the map of a CSV; add --map")
    _check_model_args(args)
    if args.map:
        from .evaluate import read_dataset

        read_dataset(args.input, file_column=args.file_column, label_column=args.label_column)   # before loading
    enc = _load_for(args)
    if args.map:
        path = plot_map(enc, args.input, args.out, layers=args.layers, method=args.method,
                        cache=Path(args.cache) if args.cache else None, limit=args.limit,
                        file_column=args.file_column, label_column=args.label_column, audio_dir=args.audio_dir)
    else:
        path = plot_file(enc, args.input, args.out, layers=args.layers)
    print(path)
    return 0


def _require(module: str, extra: str, package: Optional[str] = None) -> None:
    import importlib

    try:
        importlib.import_module(module)
    except ImportError as e:
        raise MissingExtraError(f"this command needs {package or module}, which is not installed or does not "
                                f"load ({e}): pip install 'audio-repr[{extra}]'") from e


def _int_at_least(low: int):
    """An argparse type: a whole number >= ``low``."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if v < low:
            raise argparse.ArgumentTypeError(f"must be {low} or more, got {v}")
        return v
    return parse


_positive_int, _non_negative_int = _int_at_least(1), _int_at_least(0)


def _seed_list(text: str) -> List[int]:
    try:
        seeds = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}") from None
    if len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"a seed is repeated in {text!r}")
    return seeds


def _column_args(q, prefix: str = "") -> None:
    """The CSV's column options (evaluate, plot --map)."""
    q.add_argument("--file-column", default="file", metavar="NAME",
                   help=f"{prefix}the CSV column of audio paths (default file)")
    q.add_argument("--label-column", default="label", metavar="NAME",
                   help=f"{prefix}the CSV column of labels (default label)")
    q.add_argument("--audio-dir", metavar="DIR", help=f"{prefix}folder the CSV's paths are relative to (relative "
                   "to the CSV's folder; default that folder)")


def _model_args(q, default_model=None):
    q.add_argument("--model", "-m", required=default_model is None, default=default_model)
    q.add_argument("--weights", help="weights file in the original format (default: cache/mirror/download)")
    q.add_argument("--layers", help="'fusion', 'all' or comma-separated layer names (default: standard output)")
    q.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default cpu)")
    q.add_argument("--random-init", action="store_true", help="random weights (baselines, testing pipelines): a reproducible draw "
                   "(seed 0; evaluate draws one network per probe seed)")


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors in the one form every error of this program has: one line
    ``audio-repr: error: ...`` with a pointer to ``--help`` (not argparse's usage block first)."""

    def error(self, message: str):
        sub = self.prog.split(" ", 1)[1] if " " in self.prog else ""
        if message.startswith("the following arguments are required: cmd"):
            message = "a command is needed (list, info, download, embed, tag, evaluate, plot)"
        where = f"{sub}: " if sub else ""
        hint = f"audio-repr {sub} --help" if sub else "audio-repr --help"
        self.exit(2, f"audio-repr: error: {where}{message} (see '{hint}')\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="audio-repr", description="Pretrained general-purpose audio encoders.")
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
    q = sub.add_parser("embed", help="embed files, folders or globs into one .npz per file or Parquet shards")
    q.add_argument("paths", nargs="+", help="audio files, folders (recursive) or glob patterns")
    _model_args(q)
    q.add_argument("--out", "-o", required=True, help="output folder (mirrors the input tree)")
    q.add_argument("--batch-size", type=_positive_int, default=None,
                   help="pieces per batch (default: the model's choice for the device: on a CPU as many pieces as "
                        "fit the card's frame budget (BYOL-A: 1024 frames) or its count, 16 on a GPU)")
    q.add_argument("--format", choices=["npz", "parquet"], default="npz",
                   help="npz: one file per input (default); parquet: shards of --rows-per-file rows (needs pyarrow)")
    q.add_argument("--rows-per-file", type=_positive_int, default=1000, metavar="N",
                   help="--format parquet: rows (inputs) per shard file (default 1000)")
    q.add_argument("--workers", type=_non_negative_int, default=None, metavar="N",
                   help="processes that read and resample files while the model computes (default: on a GPU "
                        "cores - 1, at most 8; on a CPU none up to 4 cores, then one per 4 more; 0 reads in the "
                        "main process)")
    q.add_argument("--shard", metavar="i/N",
                   help="embed only shard i of N (0-based; a deterministic split of the inputs by output name), "
                        "for N workers into one --out; 'auto' reads torchrun's RANK/WORLD_SIZE or a SLURM array's ids")
    q.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="ray: run on a Ray cluster (pip install 'audio-repr[ray]'; writes --format parquet)")
    q.add_argument("--address", help="--engine ray: the cluster's address (default: RAY_ADDRESS, or a local instance)")
    q.add_argument("--overwrite", action="store_true", help="redo files whose output exists")
    q.add_argument("--consolidate", metavar="NAME.npz",
                   help="also write one file for the whole dataset (clip matrix, frames with offsets) under --out")
    q.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    q.set_defaults(func=_cmd_embed)
    q = sub.add_parser("tag", help="the top AudioSet labels of audio files (models with a classifier: "
                       "EfficientAT, PANNs)")
    q.add_argument("files", nargs="+", help="audio files")
    _model_args(q)
    q.add_argument("--top-k", type=_positive_int, default=5, help="labels per file (default 5)")
    q.add_argument("--batch-size", type=_positive_int, default=None)
    q.add_argument("--json", help="also write the tags as JSON")
    q.set_defaults(func=_cmd_tag)
    q = sub.add_parser("evaluate", help="linear-probe accuracy on a file,label[,fold|split] CSV")
    q.add_argument("csv")
    _model_args(q)
    q.add_argument("--probe", choices=["evar", "logistic"], default="evar",
                   help="evar: one linear layer, Adam, early stopping on a validation holdout (default); "
                        "logistic: standardise + L2 logistic regression (L-BFGS), deterministic. "
                        "Both reuse one --cache")
    q.add_argument("--C", type=float, default=None, help="inverse L2 strength of --probe logistic (default 1.0)")
    q.add_argument("--seeds", type=_seed_list, default=None, metavar="S1,S2,...",
                   help="probe seeds (and random draws with --random-init); default 42,43,44")
    _column_args(q)
    q.add_argument("--batch-size", type=_positive_int, default=32)
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
    q.add_argument("--limit", type=_positive_int, metavar="N",
                   help="--map: at most N clips, drawn across the classes (every class present when N >= their count)")
    _column_args(q, "--map: ")
    q.add_argument("--cache", help="folder to cache the embeddings in")
    q.set_defaults(func=_cmd_plot)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:
        # the reader of our output went away (``audio-repr info ... | head -1``): stop quietly, as a Unix tool
        # killed by SIGPIPE does (status 128 + 13), and keep Python from failing again when it flushes at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def _main(argv: Optional[List[str]]) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit:
        sys.stdout.flush()       # --help into a closed pipe: the BrokenPipeError surfaces here, not at exit
        raise
    from .audio import AudioError
    from .registry import UnknownModelError
    from .weights import WeightsError

    with warnings.catch_warnings():
        _console_warnings(quiet=getattr(args, "quiet", False))
        try:
            code = int(args.func(args) or 0)
            sys.stdout.flush()
            return code
        except BrokenPipeError:
            raise
        except (UnknownModelError, WeightsError, AudioError, FileNotFoundError, ValueError) as e:   # TaggingError too
            return _fail(e)
        except MissingExtraError as e:
            return _fail(e)
        except OSError as e:     # permissions, a full disk, a path that is a file: the user's to fix
            return _fail(e)
        except KeyboardInterrupt:
            print("audio-repr: interrupted (finished outputs are kept; run the same command again to resume)",
                  file=sys.stderr)
            return 130


def _console_warnings(quiet: bool) -> None:
    """Warnings of this library as one line each, ``audio-repr: warning: ...`` (no file:line nor source line);
    ``--quiet`` silences the ones about the data (truncated files). Others keep Python's form. Called inside
    ``warnings.catch_warnings()``; reader processes forked later inherit it."""
    from .audio import TruncatedAudioWarning

    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if not category.__module__.startswith("audio_repr"):
            return default(message, category, filename, lineno, file, line)
        text = f"audio-repr: warning: {message}"
        try:
            try:
                from tqdm import tqdm

                tqdm.write(text, file=file or sys.stderr)     # on its own line, not into a progress bar's
            except ImportError:  # pragma: no cover
                print(text, file=file or sys.stderr)
        except OSError:
            pass

    warnings.showwarning = show
    if quiet:
        warnings.simplefilter("ignore", TruncatedAudioWarning)


class MissingExtraError(ImportError):
    """An optional dependency a command needs is not installed."""


def _fail(e: BaseException) -> int:
    msg = str(e) if not isinstance(e, OSError) or not e.filename else f"{e.strerror or e}: {e.filename}"
    print(f"audio-repr: error: {msg}", file=sys.stderr)
    return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
