"""Command line, one subcommand per task (``audio-repr COMMAND --help`` for each):

``audio-repr list | info NAME | download NAME...|--all | verify | embed PATHS... --model NAME --out DIR |
tag PATHS... --model NAME | zero-shot PATHS... --model NAME --labels A,B | search EMB_DIR TEXT --model NAME |
evaluate CSV --model NAME | plot FILE|--map CSV --model NAME | bench prepare TASK SRC | bench run``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path
from typing import List, Optional, Tuple


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
        lines.append(f"| `{name}` | {c.family} | {c.sample_rate / 1000:g} kHz | {enc.frame_hop_ms():g} ms | "
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
    from .weights import WeightsError, cache_status, manifest_entry, mirror_location, pin_summary

    enc = audio_repr.load(args.name, pretrained=False)
    c = enc.card
    fe = enc.frontend
    try:
        entry = manifest_entry(c.name)
        entry["pinned"] = pin_summary(entry)
    except WeightsError:
        entry = {}
    frontend = {"type": type(fe).__name__, **dict(c.frontend),
                "window_samples": fe.frame_length, "hop_samples": fe.hop_length,
                "frame_offset_ms": fe.frame_offset_ms}
    status = cache_status(c.name) if entry else "absent"
    mirror = mirror_location(c.name) if entry else None
    info = {
        "name": c.name, "family": c.family, "description": c.description, "sample_rate": c.sample_rate,
        "frame_hop_ms": enc.frame_hop_ms(), "output_layer": c.default_layer, "layers": enc.layer_dims,
        "fusion_layers": list(c.fusion_layers), "fusion_size": enc.output_size("fusion"),
        "frontend": frontend, "normalisation": c.to_dict()["normalisation"],
        "resampler": c.resampler, "weights": entry,
        "cached": status in ("verified", "unpinned"), "cache_status": status,
        # the files the model needs besides its weights (text towers), fetched with it by `download`
        "companions": {extra: cache_status(extra) for extra in c.companions},
        # where AUDIO_REPR_MIRROR holds the file (checked when used); usable without the network
        "mirror": mirror, "available": status in ("verified", "unpinned") or mirror is not None,
        "licence": c.licence, "citation": c.citation, "paper": c.paper, "published": dict(c.published),
    }
    print(json.dumps(info, indent=2))
    return 0


def _cmd_download(args) -> int:
    from .registry import get_card
    from .weights import WeightsError, download, download_all, download_model

    progress = False if args.quiet else None
    if args.all or args.family:
        if args.names:
            raise ValueError("give model names or --all [--family F], not both")
        failed = []

        def done(model, got):
            if isinstance(got, Exception):
                failed.append(model)
                print(f"audio-repr: error: {model}: {str(got).splitlines()[0]}", file=sys.stderr)
            else:
                print(f"{model}: {got}")

        results = download_all(args.family, force=args.force, progress=progress, on_done=done)
        if failed:
            raise WeightsError(f"{len(failed)} of {len(results)} files could not be fetched: {', '.join(failed)} "
                               f"(see above; `audio-repr download NAME` says where to get each)")
        return 0
    if not args.names:
        raise ValueError("name the models to download, or use --all [--family F]")
    from .weights import companion_files

    extras = companion_files()
    for name in args.names:
        # a model (with the companion files its card needs), or a companion file of the manifest (e.g. vggish-pca)
        key = name if name in extras else get_card(name).name
        got = {key: download(key, force=args.force, progress=progress)} if key in extras else \
            download_model(key, force=args.force, progress=progress)
        for what, path in got.items():
            print(f"{what}: {path}" if what == key else f"  {what}: {path}")
        for extra, entry in extras.items():
            mine = key not in extras and get_card(entry["for"]).weights == get_card(key).weights
            if mine and extra not in args.names and extra not in got:
                print(f"  (optional companion file: audio-repr download {extra}  # {entry['format'].split(' (')[0]})")
    return 0


def _cmd_verify(args) -> int:
    from .weights import cache_dir, verify_cache

    results = verify_cache()
    labels = {"ok": "OK", "recorded": "OK", "unchecked": "UNPINNED", "mismatch": "MISMATCH"}
    for name, state, detail in results:
        print(f"{labels[state]} {name}: {detail}")
    bad = [name for name, state, _ in results if state == "mismatch"]
    if not results:
        print(f"no weights files in the cache ({cache_dir()})")
    if bad:
        print(f"audio-repr: error: {len(bad)} cached file(s) no longer match: {', '.join(bad)}", file=sys.stderr)
        return 1
    return 0


def _cmd_embed(args) -> int:
    from .corpus_run import embed_corpus

    summary = embed_corpus(
        args.paths, args.model, args.out, format=args.format, layers=args.layers, weights=args.weights,
        random_init=args.random_init, shard=args.shard, overwrite=args.overwrite, batch_size=args.batch_size,
        device=args.device, num_workers=args.workers, progress=not args.quiet, rows_per_file=args.rows_per_file,
        consolidate_to=args.consolidate, engine=args.engine, address=args.address, verbose=args.verbose,
        short=args.short)
    print(summary, file=sys.stderr)
    if summary.consolidated is not None:
        print(f"consolidated {summary.embedded + summary.skipped} file(s) into {summary.consolidated}",
              file=sys.stderr)
    return _report_failures(summary.failed, summary.failures_log)


def _report_failures(failures: List[Tuple[str, str]], log: Optional[Path]) -> int:
    """Each failed input on stderr (and where the run's log of them is); the exit status (2 when some failed)."""
    if not failures:
        return 0
    for f, msg in failures:
        print(f"  failed: {f}: {msg}", file=sys.stderr)
    if log is not None:
        print(f"  (also written to {log})", file=sys.stderr)
    return 2


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
    from .corpus import load_encoder

    return load_encoder(args.model, weights=args.weights, device=device or args.device,
                        random_init=args.random_init, seed=seed)


def _cmd_tag(args) -> int:
    from ._io import atomic_write
    from .corpus_run import tag_corpus

    if args.layers is not None:
        raise ValueError("tag scores the model's classifier ('logits' layer): --layers does not apply to it "
                         "(audio-repr embed --layers gives other layers' embeddings)")
    if args.json and Path(args.json).is_dir():
        raise ValueError(f"--json {args.json} is a folder: give a file name")
    rows, failures = tag_corpus(args.paths, args.model, top_k=args.top_k, batch_size=args.batch_size,
                                out=args.out, weights=args.weights, random_init=args.random_init,
                                device=args.device, progress=not args.quiet,
                                on_tags=None if args.out else print)
    if args.json:
        with atomic_write(args.json, "w", encoding="utf-8") as f:
            f.write(json.dumps(rows, indent=2))
    if args.out:
        print(f"tagged {len(rows)} file(s), {len(failures)} failed -> {args.out}", file=sys.stderr)
    return _report_failures(failures, None)


def _text_model(args) -> None:
    """Checked before anything is loaded: the model has a text tower, and --layers does not apply."""
    from .models import _meta_network
    from .models.base import TextTower
    from .registry import get_card, list_models

    if getattr(args, "layers", None) is not None:
        raise ValueError(f"{args.cmd} compares the model's joint audio-text space ('joint' layer): --layers does not "
                         f"apply to it")
    name = get_card(args.model).name
    if not isinstance(_meta_network(name), TextTower):
        with_text = [n for n in list_models() if isinstance(_meta_network(n), TextTower)]
        raise ValueError(f"{name} has no text tower: {args.cmd} needs an audio-text model ({', '.join(with_text)})")
    if args.device is not None:
        import audio_repr

        audio_repr.check_device(args.device)
    if args.weights and args.random_init:
        raise ValueError("--weights and --random-init exclude each other")
    if args.weights and not Path(args.weights).expanduser().exists():
        raise FileNotFoundError(f"--weights {args.weights}: no such file or folder")


def _cmd_zero_shot(args) -> int:
    from ._io import atomic_write
    from .corpus_run import collect_inputs
    from .inference.zero_shot import prompts, zero_shot

    labels = [x.strip() for x in args.labels.split(",")]
    if any(not x for x in labels):
        raise ValueError(f"--labels {args.labels!r} has an empty label: give comma-separated names, e.g. dog,cat,rain")
    _text_model(args)
    if args.template is not None:
        prompts(labels, args.template)                       # a bad template fails before the model loads
    files = [str(f) for f, _ in collect_inputs(args.paths)]
    if not files:
        raise FileNotFoundError(f"no audio files found in {', '.join(args.paths)}")
    if args.json and Path(args.json).is_dir():
        raise ValueError(f"--json {args.json} is a folder: give a file name")
    enc = _load_for(args)
    probs = zero_shot(enc, files, labels, template=args.template, batch_size=args.batch_size)
    if len(files) == 1:
        probs = probs[None]
    rows = []
    k = min(args.top_k or len(labels), len(labels))
    for f, p in zip(files, probs.tolist()):
        order = sorted(range(len(labels)), key=lambda i: -p[i])
        rows.append({"file": f, "probabilities": {labels[i]: p[i] for i in range(len(labels))}})
        print(f"{f}\t" + "\t".join(f"{labels[i]} {p[i]:.4f}" for i in order[:k]))
    if args.json:
        with atomic_write(args.json, "w", encoding="utf-8") as out:
            out.write(json.dumps(rows, indent=2))
    return 0


def _cmd_search(args) -> int:
    from .corpus import read_embeddings, weights_digest
    from .inference.zero_shot import check_corpus, search
    from .registry import get_card

    if not args.query.strip():
        raise ValueError("the search text is empty")
    _text_model(args)
    corpus = read_embeddings(args.emb_dir)
    name = get_card(args.model).name
    check_corpus(name, corpus, where=f"the embeddings in {args.emb_dir}")      # before loading the model
    enc = _load_for(args)
    recorded = corpus.settings.get("weights")
    if recorded and recorded != weights_digest(enc.network):
        raise ValueError(f"the embeddings in {args.emb_dir} were made with other weights of {name} than these "
                         f"(their run record's digest differs): embed and search with the same weights")
    scores, idx = search(enc, corpus.clip, [args.query], top_k=args.top_k)
    for rank, (s, i) in enumerate(zip(scores[0].tolist(), idx[0].tolist()), 1):
        print(f"{rank}\t{s:.4f}\t{corpus.names[i]}\t{corpus.sources[i]}")
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


def _cmd_bench_prepare(args) -> int:
    from .bench import prepare

    path = prepare(args.task, args.src, args.out)
    with open(path, encoding="utf-8") as f:
        n = sum(1 for _ in f) - 1
    print(f"{args.task}: {n} clips -> {path}")
    return 0


def _cmd_bench_run(args) -> int:
    from .bench import run, seeds_for

    weights = {}
    for spec in args.weights or []:
        model, eq, path = spec.partition("=")
        if not eq or not model or not path:
            raise ValueError(f"--weights {spec!r}: expected MODEL=PATH")
        weights[model] = path
    models = [m for m in args.models.split(",") if m]
    records = run(models, args.tasks, args.out, probe=args.probe, seeds=seeds_for(args.seeds),
                  random_init=args.random_init, weights=weights, device=args.device, batch_size=args.batch_size,
                  progress=not args.quiet, log=lambda m: print(m, file=sys.stderr))
    print(Path(args.out, "results.md").read_text(encoding="utf-8") if records else "no task was run")
    return 0 if records else 2


def _require(module: str, extra: str, package: Optional[str] = None) -> None:
    from ._io import require

    require(module, extra, package)


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
    _add_download_parser(sub)
    q = sub.add_parser("verify", help="re-hash every cached weights file and name any that no longer matches")
    q.set_defaults(func=_cmd_verify)
    _add_embed_parser(sub)
    _add_tag_parser(sub)
    _add_zero_shot_parser(sub)
    _add_search_parser(sub)
    _add_evaluate_parser(sub)
    _add_plot_parser(sub)
    _add_bench_parser(sub)
    return p


def _add_download_parser(sub) -> None:
    from .weights import companion_files

    q = sub.add_parser("download", help="fetch weights into the cache for offline use (copied from "
                       "AUDIO_REPR_MIRROR when the file is there, else downloaded; verified)")
    q.add_argument("names", nargs="*", help="models, or companion files: " + ", ".join(companion_files()))
    q.add_argument("--all", action="store_true", help="every weights file (air-gapped preparation)")
    q.add_argument("--family", help="with --all: only the files of this family's models")
    q.add_argument("--force", action="store_true", help="download again even if cached")
    q.add_argument("--quiet", "-q", action="store_true", help="no progress bar (none either when not a terminal)")
    q.set_defaults(func=_cmd_download)


def _add_embed_parser(sub) -> None:
    q = sub.add_parser("embed", help="embed files, folders or globs into one .npz per file or Parquet part files")
    q.add_argument("paths", nargs="+", help="audio files, folders (recursive) or glob patterns")
    _model_args(q)
    q.add_argument("--out", "-o", required=True, help="output folder (mirrors the input tree)")
    q.add_argument("--batch-size", type=_positive_int, default=None,
                   help="pieces per batch (default: the model's choice for the device: on a CPU as many pieces as "
                        "fit the card's frame budget (BYOL-A: 1024 frames) or its count, 16 on a GPU)")
    q.add_argument("--format", choices=["npz", "parquet"], default="npz",
                   help="npz: one file per input (default); parquet: files of --rows-per-file rows (needs pyarrow)")
    q.add_argument("--rows-per-file", type=_positive_int, default=None, metavar="N",
                   help="--format parquet: rows (inputs) per Parquet file (default 1000)")
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
    q.add_argument("--short", choices=["error", "pad"], default="error",
                   help="a clip shorter than the model's minimum: fails (error, default) or is zero-padded, "
                        "centred, to the minimum (pad)")
    q.add_argument("--overwrite", action="store_true", help="redo files whose output exists")
    q.add_argument("--consolidate", metavar="NAME.npz",
                   help="also write one file for the whole dataset (clip matrix, frames with offsets) under --out")
    q.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    q.add_argument("--verbose", "-v", action="store_true", help="--engine ray: Ray's own INFO logs on the console")
    q.set_defaults(func=_cmd_embed)


def _add_tag_parser(sub) -> None:
    q = sub.add_parser("tag", help="the top AudioSet labels of files, folders or globs (models with a classifier: "
                       "EfficientAT, PANNs)")
    q.add_argument("paths", nargs="+", help="audio files, folders (recursive) or glob patterns")
    _model_args(q)
    q.add_argument("--top-k", type=_positive_int, default=5, help="labels per file (default 5)")
    q.add_argument("--batch-size", type=_positive_int, default=None)
    q.add_argument("--out", "-o", help="write the tags to FILE.jsonl (one JSON object a line), FILE.parquet "
                   "(needs pyarrow) or FILE.json instead of printing them")
    q.add_argument("--json", help="also write the tags as one JSON list (as --out FILE.json)")
    q.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    q.set_defaults(func=_cmd_tag)


def _add_zero_shot_parser(sub) -> None:
    q = sub.add_parser("zero-shot", help="zero-shot classification of files by text labels (audio-text models: "
                       "laion-clap-htsat)")
    q.add_argument("paths", nargs="+", help="audio files, folders (recursive) or glob patterns")
    _model_args(q)
    q.add_argument("--labels", required=True, help="comma-separated class names, e.g. 'dog,rain,car horn'")
    q.add_argument("--template", default=None,
                   help="the prompt, {} for the label (default: the model's, e.g. 'This is a sound of {}.')")
    q.add_argument("--top-k", type=_positive_int, default=None, help="labels printed per file (default all)")
    q.add_argument("--batch-size", type=_positive_int, default=None)
    q.add_argument("--json", help="also write every file's probabilities as one JSON list")
    q.set_defaults(func=_cmd_zero_shot)


def _add_search_parser(sub) -> None:
    q = sub.add_parser("search", help="the clips of an embedded folder (audio-repr embed) nearest a text")
    q.add_argument("emb_dir", help="a folder written by audio-repr embed --model NAME (npz or parquet)")
    q.add_argument("query", help="the text, e.g. 'a dog barking'")
    _model_args(q)
    q.add_argument("--top-k", type=_positive_int, default=10, help="clips to list (default 10)")
    q.set_defaults(func=_cmd_search)


def _add_evaluate_parser(sub) -> None:
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


def _add_plot_parser(sub) -> None:
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


def _add_bench_parser(sub) -> None:
    q = sub.add_parser("bench", help="every model on a suite of tasks: prepare task CSVs, run, one table")
    bench = q.add_subparsers(dest="bench_cmd", required=True)
    b = bench.add_parser("prepare", help="a task CSV (file,label,fold|split) from a dataset's official layout")
    from .bench import TASKS

    b.add_argument("task", choices=list(TASKS))
    b.add_argument("src", help="the dataset's folder, as distributed")
    b.add_argument("--out", "-o", required=True, help="folder of task CSVs (writes OUT/TASK.csv)")
    b.set_defaults(func=_cmd_bench_prepare)
    b = bench.add_parser("run", help="embed (cached, resumable) and probe every model on every task")
    b.add_argument("--models", "-m", required=True, help="comma-separated model names")
    b.add_argument("--tasks", "-t", required=True, nargs="+", help="folders of task CSVs, or CSV files")
    b.add_argument("--out", "-o", required=True, help="folder for embeddings, results.json/.md/.png")
    b.add_argument("--probe", choices=["evar", "logistic"], default="evar")
    b.add_argument("--seeds", type=_positive_int, default=3, metavar="N",
                   help="probe seeds (and random draws): the first N of 42, 43, ... (default 3)")
    b.add_argument("--random-init", action="store_true",
                   help="also run each model's random-initialisation twin (one network per seed)")
    b.add_argument("--weights", action="append", metavar="MODEL=PATH",
                   help="a weights file for a model (repeatable; default cache/mirror/download)")
    b.add_argument("--device", default=None)
    b.add_argument("--batch-size", type=_positive_int, default=None)
    b.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    b.set_defaults(func=_cmd_bench_run)


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
    from . import weights
    from .audio import AudioError
    from .registry import UnknownModelError
    from .weights import WeightsError

    weights.PROGRESS = False if getattr(args, "quiet", False) else None   # -q: no download progress bar either

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

    from .corpus_run import CorpusWarning

    default = warnings.showwarning
    shown = set()

    def show(message, category, filename, lineno, file=None, line=None):
        if not category.__module__.startswith("audio_repr"):
            return default(message, category, filename, lineno, file, line)
        text = f"audio-repr: warning: {message}"
        if text in shown:                  # each once per command
            return
        shown.add(text)
        try:
            try:
                from tqdm.auto import tqdm    # the class the library's bars are made of: it knows them

                tqdm.write(text, file=file or sys.stderr)     # on its own line, not into a progress bar's
            except ImportError:  # pragma: no cover
                print(text, file=file or sys.stderr)
        except OSError:
            pass

    warnings.showwarning = show
    warnings.simplefilter("always", CorpusWarning)     # shown (once, above) even if Python saw it before
    if quiet:
        warnings.simplefilter("ignore", TruncatedAudioWarning)


from ._io import MissingExtraError  # noqa: E402  (an optional dependency a command needs is not installed)


def _fail(e: BaseException) -> int:
    msg = str(e) if not isinstance(e, OSError) or not e.filename else f"{e.strerror or e}: {e.filename}"
    print(f"audio-repr: error: {msg}", file=sys.stderr)
    return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
