"""The task suite: ``audio-repr bench prepare`` (a dataset's official layout -> a task CSV) and ``audio-repr bench
run`` (every model on every task, one protocol, one table).

**Tasks.** A task is a CSV with ``file,label`` and a ``fold`` or ``split`` column (read by
:func:`audio_repr.evaluate.read_dataset`; paths relative to the CSV's folder, or absolute). :func:`prepare` writes
one from a dataset's own layout and official folds/splits (see :data:`TASKS` and each ``_prepare_*``); any such
CSV a user writes is a task too (its name: the file's stem).

**The protocol** (:func:`run`), per model and task:

1. clip embeddings of every file of the CSV through :func:`audio_repr.embed_corpus` (the corpus path: batched,
   cached in ``OUT/embeddings/<model>/<task>/`` as one ``.npz`` per file, resumable: an interrupted run embeds
   only what is missing), the model's standard layer, its card's fixed normalisation (no calibration), every
   clip whole (no ``unit_sec`` crop); a clip shorter than the model's minimum is zero-padded, centred, to that
   minimum (``short="pad"``, as EVAR and HEAR pad short clips) instead of failing;
2. the probe of :mod:`audio_repr.evaluate` on those embeddings, with its folds/splits, seeds and checks
   (``probe="evar"``: EVAR's linear layer with early stopping; ``"logistic"``: L2 logistic regression):
   the numbers equal ``audio-repr evaluate TASK.csv --model M`` with the same seeds;
3. with ``random_init=True`` every model also runs as its random-initialisation twin, one network per seed
   (as ``audio-repr evaluate --random-init``), embedded under ``OUT/embeddings/<model>-random-s<seed>/``.

**Outputs.** ``OUT/results.json`` (a list of records: ``model``, ``init``, ``task``, ``metric`` (accuracy),
``mean``, ``std`` (over seeds), ``n_clips``, with the probe, seeds, folds and warnings), ``OUT/results.md``
(models x tasks, each model's average over the tasks it ran) and ``OUT/results.png`` (the same as a heatmap;
needs matplotlib). Each finished (model, task) is also kept in ``OUT/runs/`` so a resumed run does not probe
it again. A task whose audio files are missing is reported and skipped; the others run.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ._io import atomic_write, make_dirs

__all__ = ["TASKS", "prepare", "find_tasks", "run", "write_tables", "Task", "seeds_for", "SHORT_RULE"]

#: how the bench treats clips shorter than a model's minimum (see Encoder.embed's ``short``)
SHORT_RULE = "pad"
FIRST_SEED = 42
AUDIO = {".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".au", ".opus"}


def seeds_for(n: int) -> List[int]:
    """The first ``n`` seeds of the protocol: 42, 43, ... (``audio-repr evaluate``'s default is the first 3)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"seeds: expected a whole number >= 1, got {n!r}")
    return list(range(FIRST_SEED, FIRST_SEED + n))


# ---- prepare: official layouts -> task CSVs ----------------------------------------------------------------
def _rows_csv(rows: List[Tuple[str, str, str]], out_csv: Path, group: str = "fold",
              extra: Optional[List[str]] = None) -> Path:
    """Write ``file,label,<group>[,extra]`` rows (sorted by file) atomically."""
    if not rows:
        raise FileNotFoundError(f"no audio files of the expected layout were found for {out_csv.stem}")
    make_dirs(out_csv.parent)
    header = ["file", "label", group] + (extra or [])
    with atomic_write(out_csv, "w", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(sorted(rows))
    return out_csv


def _audio_files(root: Path) -> List[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO)


def _stable_fold(key: str, n: int) -> str:
    """A fold in 1..n from a key (speaker, actor): the same for every file of that key, on every machine."""
    return str(int(hashlib.sha1(key.encode()).hexdigest(), 16) % n + 1)


def _find(src: Path, name: str) -> Path:
    hits = sorted(src.rglob(name))
    if not hits:
        raise FileNotFoundError(f"{src}: no {name} found (is this the dataset's folder?)")
    return hits[0]


def _locate(src: Path, first: str, near: Path) -> Path:
    """The folder holding the file named ``first`` (a CSV's first entry), searched below ``src``."""
    for cand in (near / "audio", near.parent / "audio", near / "audio" / "audio" / "16000", src / "audio", src):
        if (cand / first).is_file():
            return cand
    hits = sorted(src.rglob(first))
    if not hits:
        raise FileNotFoundError(f"{src}: the audio file {first} (first in {near}) is not below this folder")
    return hits[0].parent


def _prepare_esc50(src: Path) -> Tuple[List, str, List[str]]:
    """ESC-50: ``esc50.csv`` (``filename,fold,target,category,...``) and its audio (``audio/``, or the 16 kHz
    copy's ``audio/audio/16000/``); label = ``category``, the 5 official folds."""
    meta = _find(src, "esc50.csv")
    with open(meta, newline="", encoding="utf-8") as f:
        items = list(csv.DictReader(f))
    audio = _locate(src, items[0]["filename"], meta.parent)
    return [(str((audio / r["filename"]).resolve()), r["category"], r["fold"]) for r in items], "fold", []


US8K_CLASSES = ("air_conditioner", "car_horn", "children_playing", "dog_bark", "drilling", "engine_idling",
                "gun_shot", "jackhammer", "siren", "street_music")


def _prepare_us8k(src: Path):
    """UrbanSound8K: ``audio/fold<N>/<fsID>-<classID>-<occurrence>-<slice>.wav``; label = the class (from
    ``UrbanSound8K.csv`` when present, else the file name's ``classID``, whose names the dataset fixes), the 10
    official folds (the folder). A partial copy (some folds, part of a fold) gives a task over what is there."""
    files = [p for p in _audio_files(src) if re.fullmatch(r"fold\d+", p.parent.name)]
    metas = sorted(src.rglob("UrbanSound8K.csv"))
    classes = {}
    if metas:
        with open(metas[0], newline="", encoding="utf-8") as f:
            classes = {r["slice_file_name"]: r["class"] for r in csv.DictReader(f)}
    rows = []
    for p in files:
        m = re.fullmatch(r"\d+-(\d)-\d+-\d+", p.stem)
        label = classes.get(p.name) or (US8K_CLASSES[int(m.group(1))] if m else None)
        if label is not None:
            rows.append((str(p.resolve()), label, p.parent.name[len("fold"):]))
    return rows, "fold", []


SPC12 = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")


def _prepare_speechcommands(src: Path):
    """Speech Commands v0.02. With ``testing_list.txt``/``validation_list.txt`` (the full dataset): its 35 words,
    the official train/valid/test lists (``_background_noise_`` left out). With only the 12-class test set
    (folders of the 10 commands, ``_unknown_``, ``_silence_``): those 12 classes in 5 speaker-disjoint folds
    (the speaker is the hash before ``_nohash_``; a file without one, e.g. silence, is its own speaker)."""
    tl = sorted(src.rglob("testing_list.txt"))
    if tl:
        root = tl[0].parent
        lists = {}
        for name, split in (("testing_list.txt", "test"), ("validation_list.txt", "valid")):
            p = root / name
            if p.is_file():
                lists.update({ln.strip(): split for ln in p.read_text().splitlines() if ln.strip()})
        rows = []
        for p in _audio_files(root):
            rel = p.relative_to(root).as_posix()
            if rel.startswith("_background_noise_") or len(p.relative_to(root).parts) != 2:
                continue
            rows.append((str(p.resolve()), p.parent.name, lists.get(rel, "train")))
        return rows, "split", []
    rows = []
    for p in _audio_files(src):
        word = p.parent.name
        if word not in SPC12 + ("_unknown_", "_silence_"):
            continue
        m = re.search(r"([0-9a-f]{8})_nohash_", p.name)
        speaker = m.group(1) if m else f"{word}/{p.stem}"
        rows.append((str(p.resolve()), word, _stable_fold(speaker, 5), speaker))
    return rows, "fold", ["speaker"]


def _prepare_fsdd(src: Path):
    """Free Spoken Digit Dataset: ``recordings/<digit>_<speaker>_<take>.wav``; label = the digit; the official
    split of its README: takes 0-4 of every speaker and digit are the test set, the rest train."""
    rows = []
    for p in _audio_files(src):
        m = re.fullmatch(r"(\d)_([A-Za-z]+)_(\d+)", p.stem)
        if m:
            rows.append((str(p.resolve()), m.group(1), "test" if int(m.group(3)) < 5 else "train", m.group(2)))
    return rows, "split", ["speaker"]


def _prepare_gtzan_music_speech(src: Path):
    """GTZAN music/speech (128 clips of 30 s). The original layout (``music_wav/``, ``speech_wav/``) has no
    official split: 10 folds, each class's files in name order dealt round-robin. The course copy
    (``train/{music,speech}/``, ``test/{music,speech}_N.wav``) keeps its train/test split."""
    files = _audio_files(src)
    rows = []
    if any(p.parent.name == "test" for p in files):
        for p in files:
            if p.parent.name == "test":
                rows.append((str(p.resolve()), p.stem.split("_")[0], "test"))
            elif p.parent.name in ("music", "speech") and p.parent.parent.name == "train":
                rows.append((str(p.resolve()), p.parent.name, "train"))
        return rows, "split", []
    for label in ("music", "speech"):
        mine = [p for p in files if p.parent.name.startswith(label)]
        rows += [(str(p.resolve()), label, str(i % 10 + 1)) for i, p in enumerate(mine)]
    return rows, "fold", []


def _prepare_crema_d(src: Path):
    """CREMA-D: ``AudioWAV/<actor>_<sentence>_<emotion>_<level>.wav``; label = the emotion (6 classes), 5
    actor-disjoint folds (EVAR uses a random split of its own; this one keeps speakers out of their test fold)."""
    rows = []
    for p in _audio_files(src):
        parts = p.stem.split("_")
        if len(parts) == 4 and parts[0].isdigit():
            rows.append((str(p.resolve()), parts[2], _stable_fold(parts[0], 5), parts[0]))
    return rows, "fold", ["speaker"]


def _prepare_gtzan(src: Path):
    """GTZAN genres: ``<genre>/<genre>.000NN.wav`` (10 x 100). With the fault-filtered split lists
    (``train_filtered.txt``, ``valid_filtered.txt``, ``test_filtered.txt``, as EVAR uses) those; else 10 folds by
    the clip number's last digit."""
    files = [p for p in _audio_files(src) if re.fullmatch(r"[a-z]+\.\d{5}", p.stem)]
    lists = {}
    for name, split in (("train_filtered.txt", "train"), ("valid_filtered.txt", "valid"),
                        ("test_filtered.txt", "test")):
        for p in src.rglob(name):
            lists.update({Path(ln.strip()).name: split for ln in p.read_text().splitlines() if ln.strip()})
    if lists:
        return [(str(p.resolve()), p.stem.split(".")[0], lists[p.name]) for p in files if p.name in lists], "split", []
    return [(str(p.resolve()), p.stem.split(".")[0], str(int(p.stem[-1]) + 1)) for p in files], "fold", []


def _prepare_nsynth(src: Path):
    """NSynth: ``nsynth-{train,valid,test}/examples.json`` and ``audio/``; label = ``instrument_family_str``, the
    official splits (a split whose folder is absent is left out)."""
    rows = []
    for split in ("train", "valid", "test"):
        for meta in sorted(src.rglob(f"nsynth-{split}/examples.json")):
            for key, ex in json.loads(meta.read_text()).items():
                p = meta.parent / "audio" / f"{key}.wav"
                if p.is_file():
                    rows.append((str(p.resolve()), ex["instrument_family_str"], split))
    return rows, "split", []


def _prepare_vocalsound(src: Path):
    """VocalSound: ``<speaker>_<n>_<label>.wav`` (e.g. ``f0003_0_cough.wav``); with the official split files
    (``datafiles/{tr,val,te}.json``) those, else 5 speaker-disjoint folds."""
    files = [p for p in _audio_files(src) if len(p.stem.split("_")) >= 3]
    lists = {}
    for name, split in (("tr.json", "train"), ("val.json", "valid"), ("te.json", "test")):
        for p in src.rglob(name):
            for d in json.loads(p.read_text()).get("data", []):
                lists[Path(d["wav"]).name] = split
    if lists:
        return ([(str(p.resolve()), p.stem.split("_")[-1], lists[p.name]) for p in files if p.name in lists],
                "split", [])
    return [(str(p.resolve()), p.stem.split("_")[-1], _stable_fold(p.stem.split("_")[0], 5)) for p in files], "fold", []


def _prepare_voxceleb1(src: Path):
    """VoxCeleb1 identification: ``iden_split.txt`` (``1|2|3 idXXXXX/<video>/<n>.wav``: train/valid/test) and
    the ``wav/`` tree; label = the speaker (1,251 classes); lines whose file is absent are left out."""
    meta = _find(src, "iden_split.txt")
    wav = next((c for c in (meta.parent / "wav", src / "wav", src) if c.is_dir()), src)
    rows = []
    for line in meta.read_text().splitlines():
        if not line.strip():
            continue
        k, rel = line.split()
        p = wav / rel
        if p.is_file():
            rows.append((str(p.resolve()), rel.split("/")[0], {"1": "train", "2": "valid", "3": "test"}[k]))
    return rows, "split", []


TASKS: Dict[str, Callable] = {
    "esc50": _prepare_esc50, "us8k": _prepare_us8k, "speechcommands": _prepare_speechcommands,
    "gtzan-music-speech": _prepare_gtzan_music_speech, "fsdd": _prepare_fsdd, "crema-d": _prepare_crema_d,
    "gtzan": _prepare_gtzan, "nsynth": _prepare_nsynth, "vocalsound": _prepare_vocalsound,
    "voxceleb1": _prepare_voxceleb1,
}


def prepare(task: str, src, out) -> Path:
    """Write ``OUT/<task>.csv`` (``file,label,fold|split[,speaker]``, absolute paths) from the dataset ``task``'s
    own layout under ``src``; -> the CSV's path. ``task``: one of :data:`TASKS`."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}: choose one of {', '.join(TASKS)} (or write a file,label,fold CSV)")
    src = Path(src)
    if not src.is_dir():
        raise FileNotFoundError(f"no such folder: {src}")
    rows, group, extra = TASKS[task](src)
    return _rows_csv(rows, Path(out) / f"{task}.csv", group, extra)


# ---- run ---------------------------------------------------------------------------------------------------
class TaskError(RuntimeError):
    """A task could not be run (some of its files could not be embedded): reported, and the others go on."""


@dataclass
class Task:
    """A task CSV as read: ``name`` (the file's stem), files (absolute), labels, groups and their ``kind``
    (``fold`` or ``split``), and the files that do not exist (then it is skipped)."""

    name: str
    csv: Path
    files: List[Path]
    labels: List[str]
    groups: List[str]
    kind: str
    missing: List[Path]

    @property
    def digest(self) -> str:
        h = hashlib.sha256()
        for f, y, g in zip(self.files, self.labels, self.groups):
            h.update(f"{f}\t{y}\t{g}\n".encode())
        return h.hexdigest()[:16]


def find_tasks(paths: Sequence) -> List[Task]:
    """Task CSVs from folders (their ``*.csv``, by name) and files; each read and checked (columns, a ``fold`` or
    ``split`` column) before any work. Two tasks with one name are refused."""
    from .evaluate import read_dataset

    csvs: List[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            found = sorted(p.glob("*.csv"))
            if not found:
                raise FileNotFoundError(f"--tasks {p}: no .csv task in this folder (audio-repr bench prepare writes them)")
            csvs += found
        elif p.is_file():
            csvs.append(p)
        else:
            raise FileNotFoundError(f"--tasks {p}: no such file or folder")
    tasks, seen = [], {}
    for c in csvs:
        if c.stem in seen:
            raise ValueError(f"two tasks are named {c.stem!r}: {seen[c.stem]} and {c}")
        seen[c.stem] = c
        files, labels, groups, kind = read_dataset(c)
        if kind == "none":
            raise ValueError(f"{c}: a task needs a 'fold' or a 'split' column to define its test data")
        files = [Path(os.path.abspath(f)) for f in files]
        tasks.append(Task(c.stem, c, files, labels, groups, kind, [f for f in files if not f.is_file()]))
    return tasks


def _splits(task: Task):
    """The task's (name, train, valid or None, test) index splits, as :func:`audio_repr.evaluate.evaluate` makes them."""
    labels = task.labels
    classes = sorted(set(labels))
    y = np.array([classes.index(v) for v in labels])
    allidx = np.arange(len(y))
    splits = []
    if task.kind == "fold":
        g = np.array(task.groups)
        for fold in sorted(set(task.groups), key=lambda s: (len(s), s)):
            splits.append((f"fold {fold}", allidx[g != fold], None, allidx[g == fold]))
    else:
        g = np.array([s.lower() for s in task.groups])
        tr, te = allidx[g == "train"], allidx[g == "test"]
        va = allidx[np.isin(g, ["valid", "val", "validation"])]
        if len(tr) == 0 or len(te) == 0:
            raise ValueError(f"{task.csv}: a 'split' column needs 'train' and 'test' rows")
        splits.append(("test", tr, va if len(va) else None, te))
    return splits, y, classes


def probe_task(features: Callable[[Optional[int]], np.ndarray], task: Task, *, probe: str = "evar",
               seeds: Sequence[int] = (42, 43, 44), per_seed_features: bool = False, name: str = "", **probe_kwargs):
    """The probe of :mod:`audio_repr.evaluate` on a task's embeddings: ``features(seed)`` -> ``X [N, D]`` in the
    task's row order (called once with ``None`` for one fixed network, once per seed with ``per_seed_features``,
    the random-init twins). The same splits, checks, holdout and probes as :func:`~audio_repr.evaluate.evaluate`,
    so the numbers are that function's. -> :class:`~audio_repr.evaluate.EvalResult`."""
    from .evaluate import EvalResult, SmallDataWarning, _check_splits, probe_splits

    splits, y, classes = _splits(task)
    notes = _check_splits(splits, y, classes, holdout=probe == "evar")
    for message in notes:
        warnings.warn(message, SmallDataWarning, stacklevel=2)
    per_seed, X = probe_splits(features, y, splits, seeds, probe, per_seed_features, probe_kwargs)
    deterministic = probe == "logistic" and not per_seed_features
    folds = {k: float(np.mean(v)) for k, v in per_seed.items()}
    return EvalResult(model=name, folds=folds, per_seed=per_seed, seeds=list(seeds),
                      init="one random initialisation per seed" if per_seed_features else None, warnings=notes,
                      probe=probe, deterministic=deterministic, dims=int(X.shape[1]))


def _embeddings(enc, task: Task, folder: Path, batch_size, progress: bool, log) -> np.ndarray:
    """The task's clip embeddings by ``enc`` in row order, through (and cached by) :func:`embed_corpus`."""
    from .corpus import read_embeddings
    from .corpus_run import embed_corpus

    unique = list(dict.fromkeys(str(f) for f in task.files))
    summary = embed_corpus(unique, enc, folder, batch_size=batch_size, progress=progress, short=SHORT_RULE)
    if summary.failed:
        first = "; ".join(f"{f}: {m}" for f, m in summary.failed[:3])
        raise TaskError(f"{len(summary.failed)} file(s) could not be embedded ({first})")
    if summary.skipped:
        log(f"    resumed: {summary.skipped} of {len(unique)} file(s) were already embedded in {folder}")
    got = read_embeddings(folder)
    by_source = {os.path.abspath(s): v for s, v in zip(got.sources, got.clip)}
    return np.stack([by_source[str(f)] for f in task.files]).astype(np.float32)


def _variant(model: str, random_init: bool) -> str:
    return f"{model} (random init)" if random_init else model


def _seconds(files: Sequence[Path]) -> float:
    from .inference.pipeline import durations

    return float(sum(durations([str(f) for f in files])))


def run(models: Sequence[str], tasks: Sequence, out, *, probe: str = "evar", seeds: Sequence[int] = (42, 43, 44),
        random_init: bool = False, weights: Optional[Dict[str, str]] = None, device: Optional[str] = None,
        batch_size: Optional[int] = None, progress: bool = False, log: Callable[[str], None] = print,
        **probe_kwargs) -> List[dict]:
    """Every model of ``models`` (and with ``random_init`` its random-init twin) on every task of ``tasks``
    (folders of task CSVs, or CSV files); see the module docstring. ``weights``: ``{model: weights file}``
    (others: cache/mirror/download). -> the records written to ``OUT/results.json`` (also ``results.md`` and
    ``results.png``). Everything a user can get wrong is checked before any model is loaded or audio read;
    a task with missing audio files is reported through ``log`` and skipped."""
    from .corpus import load_encoder

    models, seeds, weights = _check_run_args(models, probe, seeds, weights, batch_size, device)
    found = find_tasks([tasks] if isinstance(tasks, (str, os.PathLike)) else list(tasks))
    out = Path(out)
    make_dirs(out)
    ready = _ready_tasks(found, log)
    seconds = {t.name: _seconds(t.files) for t in ready}
    variants = [(m, False) for m in models] + ([(m, True) for m in models] if random_init else [])
    total = sum(seconds.values()) * sum(len(seeds) if r else 1 for _, r in variants)
    twins = " and their random-init twins" if random_init else ""
    log(f"bench: {len(models)} model(s){twins} x {len(ready)} task(s), {total:.0f} s of audio to embed "
        f"(fewer when cached), {probe} probe, seeds {seeds}")
    records, done_s, step = [], 0.0, 0
    settings = dict(out=out, probe=probe, seeds=seeds, device=device, batch_size=batch_size, progress=progress,
                    log=log, probe_kwargs=probe_kwargs)
    for model, rnd in variants:
        enc = None if rnd else load_encoder(model, weights=weights.get(model), device=device)
        for t in ready:
            step += 1
            todo = seconds[t.name] * (len(seeds) if rnd else 1)
            log(f"[{step}/{len(variants) * len(ready)}] {_variant(model, rnd)} on {t.name}: {len(t.files)} clips, "
                f"{todo:.0f} s of audio (done so far: {done_s:.0f} of {total:.0f} s)")
            rec = _model_on_task(model, rnd, enc, t, seconds[t.name], **settings)
            done_s += todo
            if rec is not None:
                records.append(rec)
    write_tables(records, out, log=log)
    return records


def _check_run_args(models, probe, seeds, weights, batch_size, device):
    """:func:`run`'s arguments checked before any work -> (model names, seeds, ``{model: weights file}``)."""
    from .evaluate import PROBES
    from .inference.encoder import check_batch_size
    from .registry import get_card

    if probe not in PROBES:
        raise ValueError(f"unknown probe {probe!r}: choose one of {', '.join(PROBES)}")
    seeds = list(seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds: expected distinct seeds, at least one, got {seeds}")
    check_batch_size(batch_size)
    models = [get_card(m).name for m in models]
    if not models:
        raise ValueError("no model given")
    if len(set(models)) != len(models):
        raise ValueError(f"a model is named twice: {', '.join(models)}")
    weights = dict(weights or {})
    for m, w in weights.items():
        if get_card(m).name not in models:
            raise ValueError(f"--weights {m}={w}: {m} is not one of the models run")
        if not Path(w).expanduser().exists():
            raise FileNotFoundError(f"--weights {m}={w}: no such file")
    if device is not None:
        from .inference.loader import check_device

        check_device(device)
    return models, seeds, {get_card(m).name: w for m, w in weights.items()}


def _ready_tasks(found, log) -> list:
    """The tasks whose audio is all there (the others reported through ``log``); each one's splits checked."""
    ready = []
    for t in found:
        if t.missing:
            log(f"task {t.name}: skipped, {len(t.missing)} of {len(t.files)} audio file(s) missing "
                f"(first: {t.missing[0]})")
            continue
        _splits(t)                       # a split column without train/test rows: refused before any work
        ready.append(t)
    return ready


def _model_on_task(model, rnd, enc, t, audio_s, *, out, probe, seeds, device, batch_size, progress, log,
                   probe_kwargs) -> Optional[dict]:
    """One model (or its random twin) on one task: the record kept from an earlier run, or embed (cached) and
    probe, the record written under ``OUT/runs/``; ``None`` when the task cannot be probed for this model."""
    from .corpus import load_encoder, weights_digest

    digest = "random" if rnd else weights_digest(enc.network)
    key = hashlib.sha256(json.dumps([model, rnd, digest, t.digest, probe, seeds, SHORT_RULE,
                                     sorted(probe_kwargs.items())]).encode()).hexdigest()[:16]
    cached = out / "runs" / (model + ("-random" if rnd else "")) / f"{t.name}-{key}.json"
    if cached.is_file():
        rec = json.loads(cached.read_text(encoding="utf-8"))
        log(f"    probed before: {100 * rec['mean']:.2f}% (kept in {cached})")
        return rec

    def features(seed):
        if rnd:
            e = load_encoder(model, device=device, random_init=True, seed=seed)
            folder = out / "embeddings" / f"{model}-random-s{seed}" / t.name
        else:
            e, folder = enc, out / "embeddings" / model / t.name
        return _embeddings(e, t, folder, batch_size, progress, log)

    try:
        with warnings.catch_warnings(record=True):     # the notes are kept in the record
            warnings.simplefilter("always")
            res = probe_task(features, t, probe=probe, seeds=seeds, per_seed_features=rnd, name=model,
                             **probe_kwargs)
    except TaskError as e:
        log(f"    task {t.name}: skipped for {_variant(model, rnd)}: {e}")
        return None
    rec = {"model": model, "init": "random" if rnd else "pretrained", "task": t.name,
           "metric": "accuracy", "mean": res.mean, "std": res.std, "n_clips": len(t.files),
           "probe": probe, "seeds": seeds, "folds": res.folds, "per_seed": res.per_seed,
           "dims": res.dims, "audio_s": audio_s, "short": SHORT_RULE,
           "csv": str(t.csv), "warnings": res.warnings}
    make_dirs(cached.parent)
    with atomic_write(cached, "w", encoding="utf-8") as f:
        json.dump(rec, f, indent=2)
    log(f"    {_variant(model, rnd)} on {t.name}: {100 * res.mean:.2f}% ± {100 * res.std:.2f}%"
        + "".join(f"\n    warning: {w}" for w in res.warnings))
    return rec


def _cell(r: dict) -> str:
    return f"{100 * r['mean']:.2f}" + (f" ± {100 * r['std']:.2f}" if r["std"] > 0 else "")


def write_tables(records: List[dict], out, log: Callable[[str], None] = print) -> List[Path]:
    """``OUT/results.json``, ``OUT/results.md`` (models x tasks, mean ± std over seeds in %, each model's average
    over its tasks) and, with matplotlib, ``OUT/results.png`` (a heatmap of the same)."""
    out = Path(out)
    with atomic_write(out / "results.json", "w", encoding="utf-8") as f:
        json.dump(records, f, indent=2)
    rows = list(dict.fromkeys(_variant(r["model"], r["init"] == "random") for r in records))
    tasks = list(dict.fromkeys(r["task"] for r in records))
    cell = {(_variant(r["model"], r["init"] == "random"), r["task"]): r for r in records}
    probe = records[0]["probe"] if records else "evar"
    avg = {}
    for v in rows:
        got = [cell[(v, t)]["mean"] for t in tasks if (v, t) in cell]
        avg[v] = float(np.mean(got)) if got else float("nan")
    with atomic_write(out / "results.md", "w", encoding="utf-8") as f:
        f.write("\n".join(_markdown(records, rows, tasks, cell, avg, probe)) + "\n")
    written = [out / "results.json", out / "results.md"]
    try:
        import matplotlib

        matplotlib.use("Agg")
    except ImportError:
        log("results.png not drawn: matplotlib is not installed (pip install 'audio-repr[plot]')")
        return written
    if not records:
        return written
    _heatmap(out / "results.png", rows, tasks, cell, avg, probe)
    return written + [out / "results.png"]


def _markdown(records, rows, tasks, cell, avg, probe) -> List[str]:
    """results.md's lines: the models x tasks table (each model's average) and the tasks' sizes."""
    lines = [f"Accuracy (%), {probe} probe, mean ± std over seeds {records[0]['seeds'] if records else []}; "
             "average: mean over the tasks the model ran.", "",
             "| model | " + " | ".join(tasks) + " | average |", "|---|" + "---|" * (len(tasks) + 1)]
    for v in rows:
        n = sum((v, t) in cell for t in tasks)
        part = "" if n == len(tasks) else f" ({n} of {len(tasks)})"
        lines.append(f"| {v} | " + " | ".join(_cell(cell[(v, t)]) if (v, t) in cell else "–" for t in tasks)
                     + f" | {100 * avg[v]:.2f}{part} |")
    lines += ["", "| task | clips | audio (s) |", "|---|---|---|"]
    for t in tasks:
        r = next(r for r in records if r["task"] == t)
        lines.append(f"| {t} | {r['n_clips']} | {r['audio_s']:.0f} |")
    return lines


def _heatmap(path: Path, rows, tasks, cell, avg, probe) -> None:
    """The models x tasks (+ average) accuracies as a PNG heatmap."""
    import matplotlib.pyplot as plt

    cols = tasks + ["average"]
    M = np.array([[cell[(v, t)]["mean"] if (v, t) in cell else np.nan for t in tasks] + [avg[v]] for v in rows]) * 100
    fig, ax = plt.subplots(figsize=(1.6 + 1.25 * len(cols), 1.0 + 0.55 * len(rows)))
    im = ax.imshow(np.ma.masked_invalid(M), cmap="viridis", vmin=np.nanmin(M) if np.isfinite(M).any() else 0,
                   vmax=100, aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.axvline(len(tasks) - 0.5, color="white", lw=2)
    for i in range(len(rows)):
        for j in range(len(cols)):
            if np.isfinite(M[i, j]):
                ax.text(j, i, f"{M[i, j]:.1f}", ha="center", va="center",
                        color="black" if M[i, j] > np.nanmean(M) else "white", fontsize=9)
    ax.set_title(f"accuracy (%), {probe} probe")
    fig.colorbar(im, ax=ax, fraction=0.04)
    fig.tight_layout()
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
