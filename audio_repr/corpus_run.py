"""A corpus run: :func:`embed_corpus` (``audio-repr embed`` as one Python call) and :func:`tag_corpus` (``audio-repr tag``).

The steps of :func:`embed_corpus`, each checked before the next starts, and everything a user can get wrong
checked before a model is loaded or any audio read:

1. **inputs** (:func:`collect_inputs`): files, folders (recursive) and glob patterns; each file's output name is
   its path below the inputs' common folder (``a/x.wav`` and ``b/x.wav`` keep their folders), a file reached
   twice is embedded once;
2. **names** (:func:`first_clash`): two inputs that would write one output (also on a file system that ignores
   letter case), or an input that would overwrite a file of the run itself, are refused;
3. **shards** (:func:`parse_shard`, :func:`shard_files`): ``shard=(i, n)``, ``"i/N"`` or ``"auto"`` (torchrun,
   SLURM) takes every N-th input by output name, the same split in every worker, into one output folder;
4. **stores** (:mod:`audio_repr.corpus`): one ``.npz`` per input, or Parquet files of ``rows_per_file`` rows;
5. **resume** (:func:`check_resume`): the run's settings (model, weights digest, layers, normalisation, format,
   library version) are recorded in ``OUT/_audio-repr-run.json``; a second run with the same settings embeds
   only the inputs without an output, one with other settings is refused with a ``ValueError`` naming what
   differs (``overwrite=True`` embeds everything again). The model, layers and format are compared before any
   weights are looked for; the weights and normalisation once the model is loaded.

A file that cannot be read or embedded is reported (:attr:`CorpusSummary.failed`, ``OUT/_failures.log``) and
the run goes on. ``engine="ray"`` runs the same steps with :func:`audio_repr.ray.embed_folder` as the compute.
"""

from __future__ import annotations

import glob
import json
import os
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple, Union

from ._io import RUN_RECORD, atomic_write, make_dirs, remove_empty, require
from ._version import __version__
from .corpus import FORMATS, load_encoder, npz_path, open_store, weights_digest

__all__ = ["embed_corpus", "tag_corpus", "CorpusSummary", "CorpusWarning", "AUDIO_EXTENSIONS", "collect_inputs",
           "parse_shard", "shard_files", "consolidate", "first_clash"]

AUDIO_EXTENSIONS = {".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".au", ".opus"}

#: the settings two runs into one folder must share
COMPARED = ("model", "weights", "layers", "normalisation", "format", "library")
#: those known before the model is loaded (compared first, so a clash costs no weights download)
COMPARED_EARLY = ("model", "layers", "format", "library")

PathLike = Union[str, os.PathLike]


class CorpusWarning(UserWarning):
    """Something the user should know about an output folder (e.g. stale files of earlier settings)."""


@dataclass
class CorpusSummary:
    """What :func:`embed_corpus` did: ``embedded`` files, ``skipped`` (already done, resumed), ``failed``
    (``[(path, reason)]``), the output folder, and the failures log / consolidated file when written."""

    out_dir: Path
    embedded: int
    skipped: int
    failed: List[Tuple[str, str]] = field(default_factory=list)
    failures_log: Optional[Path] = None
    consolidated: Optional[Path] = None
    engine: str = "local"

    @property
    def ok(self) -> bool:
        return not self.failed

    def __str__(self) -> str:
        how = " with Ray" if self.engine == "ray" else ""
        return (f"embedded {self.embedded} file(s){how}, skipped {self.skipped} already done, "
                f"{len(self.failed)} failed -> {self.out_dir}")


# ---- 1. inputs -------------------------------------------------------------------------------------------
def _glob_root(pattern: str) -> Path:
    """The folder a glob pattern searches from: its leading parts without wildcards."""
    parts = Path(pattern).parts
    lead = []
    for part in parts[:-1]:
        if glob.has_magic(part):
            break
        lead.append(part)
    return Path(*lead) if lead else Path(".")


def _as_list(inputs) -> List[str]:
    if isinstance(inputs, (str, os.PathLike)):
        return [os.fspath(inputs)]
    out = []
    for p in inputs:
        if not isinstance(p, (str, os.PathLike)):
            raise TypeError(f"inputs: expected paths, folders or glob patterns (str or os.PathLike), got {p!r}")
        out.append(os.fspath(p))
    return out


def collect_inputs(paths: Iterable[PathLike]) -> List[Tuple[Path, Path]]:
    """Expand files, folders (recursive) and globs into ``(file, output name)`` pairs.

    Output names mirror each file's path relative to the common root of all inputs (a folder counts from
    itself, a glob from its leading folders, a file from its own folder), so two inputs never share an
    output and a user can map every output back to its source. A file reached twice (by two specs or a
    link) is embedded once."""
    entries: List[Tuple[Path, Path]] = []          # (file as found, the root it was found from)
    for spec in _as_list(paths):
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


def _collect_or_fail(inputs) -> List[Tuple[Path, Path]]:
    files = collect_inputs(inputs)
    if not files:
        raise FileNotFoundError(f"no audio files ({', '.join(sorted(AUDIO_EXTENSIONS))}) found in "
                                + ", ".join(_as_list(inputs)))
    return files


# ---- 2. names --------------------------------------------------------------------------------------------
def first_clash(keys: List[str], outputs: List[Path], reserved, case_insensitive: bool) -> Optional[str]:
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


def prepare_out_dir(out_dir: Path) -> Tuple[List[Path], bool]:
    """Create ``out_dir`` if needed and prove it writable, before any long work.
    Returns the folders this call created (outermost first) and whether the folder's file system
    ignores letter case (then two outputs differing only in case would collide)."""
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


# ---- 3. shards -------------------------------------------------------------------------------------------
def parse_shard(shard) -> Optional[Tuple[int, int]]:
    """``(i, N)``, ``"i/N"`` (0 <= i < N) or ``"auto"`` (torchrun's RANK/WORLD_SIZE, a SLURM array's task id and
    count, or SLURM_PROCID/SLURM_NTASKS) -> ``(i, N)``; ``None`` without sharding."""
    if shard is None:
        return None
    if isinstance(shard, (tuple, list)):
        if (len(shard) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in shard)
                or not (shard[1] >= 1 and 0 <= shard[0] < shard[1])):
            raise ValueError(f"shard {tuple(shard)!r}: expected (i, N) with whole numbers, 0 <= i < N")
        return int(shard[0]), int(shard[1])
    text = str(shard)
    where = "--shard"
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


# ---- 5. the run record and resume ------------------------------------------------------------------------
def run_settings(enc, layers: List[str], fmt: str, weights_source: str) -> dict:
    """What ``_audio-repr-run.json`` records (``COMPARED`` are compared when a run resumes)."""
    n = enc.normalisation
    norm = ({"mode": "per_clip", "scale": n.scale} if n.per_clip
            else {"mode": "fixed", "mean": n.mean, "std": n.std, "scale": n.scale})
    return json.loads(json.dumps({
        "model": enc.name,
        "weights": weights_digest(enc.network),
        "weights_source": weights_source,
        "layers": layers,
        "normalisation": norm,
        "format": fmt,
        "library": __version__,
    }))


def _short(v) -> str:
    """A setting for a one-line message: digests cut to 12 hex digits, other values whole up to 80 characters."""
    if isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v):
        return v[:12] + "…"
    s = json.dumps(v) if not isinstance(v, str) else v
    return s if len(s) <= 80 else s[:77] + "…"


def _read_record(out_dir: Path) -> Optional[dict]:
    record = out_dir / RUN_RECORD
    if not record.is_file():
        return None
    try:
        old = json.loads(record.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"{record} is unreadable ({e}); remove it, or use --overwrite") from e
    old.setdefault("format", "npz")          # records of runs before --format existed
    return old


def _differences(old: dict, settings: dict, keys: Sequence[str]) -> List[str]:
    return [f"{k}: {_short(old.get(k))} -> {_short(settings[k])}" for k in keys if old.get(k) != settings[k]]


def _refuse(out_dir: Path, diff: List[str]) -> ValueError:
    return ValueError(f"{out_dir} holds embeddings made with other settings ({'; '.join(diff)}). "
                      "Use another --out, or --overwrite to embed every input again with these settings")


def check_resume(out_dir: Path, settings: dict, n_done: int, overwrite: bool, outputs: List[Path]) -> None:
    """Refuse to mix outputs of different settings in one folder (``overwrite`` re-embeds instead).
    ``n_done``: how many of this run's inputs already have an output; ``outputs``: the .npz paths of all inputs."""
    old = _read_record(out_dir)
    if old is not None:
        diff = _differences(old, settings, COMPARED)
        if diff and not overwrite:
            raise _refuse(out_dir, diff)
        if diff and overwrite and settings["format"] == "npz":
            ours = set(outputs)
            stale = [p for p in out_dir.rglob("*.npz") if p not in ours]
            if stale:
                warnings.warn(f"{len(stale)} other .npz file(s) in {out_dir} were made with the earlier settings "
                              "and are not inputs of this run; remove them", CorpusWarning, stacklevel=3)
    elif n_done and not overwrite:
        raise ValueError(f"{out_dir} already holds {n_done} embedding(s) of these inputs but no record of the "
                         f"settings that made them ({RUN_RECORD}); use --overwrite to embed them again, or another --out")


# ---- outputs beside the embeddings -----------------------------------------------------------------------
def consolidate(out_dir: Path, files: List[Tuple[Path, Path]], dest: Path) -> Path:
    """One ``.npz`` for a dataset: ``files [N]`` (output names, relative to the inputs' common root),
    ``sources [N]`` (the paths as given), ``clip [N, D]``, all ``frames`` concatenated with
    ``frame_offsets [N + 1]`` (file i's frames are ``frames[offsets[i]:offsets[i + 1]]``), ``timestamps_ms``.
    Each source appears once, with its own rows; files without an output (failed) are left out."""
    import numpy as np

    from .inference.embedding import Embedding

    names, sources, clips, frames, stamps, offsets = [], [], [], [], [], [0]
    meta = None
    for src, rel in files:
        p = npz_path(out_dir, rel.as_posix())
        if not p.is_file():
            continue
        emb = Embedding.load(p)
        names.append(rel.as_posix())
        sources.append(str(src))
        clips.append(emb.clip.numpy())
        frames.append(emb.frames.numpy())
        stamps.append(emb.timestamps_ms.numpy())
        offsets.append(offsets[-1] + len(emb.frames))
        meta = (np.array(emb.model), np.array(emb.layers))
    if not names:
        raise ValueError("nothing to consolidate: no file was embedded")
    if len(set(names)) != len(names):     # collect_inputs guarantees this; a broken guarantee must not pass silently
        raise RuntimeError("two inputs share an output name")
    with atomic_write(dest) as f:
        np.savez(f, files=np.array(names), sources=np.array(sources), clip=np.stack(clips),
                 frames=np.concatenate(frames), timestamps_ms=np.concatenate(stamps),
                 frame_offsets=np.array(offsets), model=meta[0], layers=meta[1])
    return dest


def _write_failures(failures: List[Tuple[str, str]], log: Path) -> Optional[Path]:
    """Each failed input and why, in ``log`` (this run's only); None when nothing failed."""
    if not failures:
        return None
    with atomic_write(log, "w", encoding="utf-8") as fh:
        fh.writelines(f"{f}\t{msg}\n" for f, msg in failures)
    return log


class _Progress:
    """A bar over the seconds of audio to embed, with ``files=done/N`` (``N``: the files this run handles);
    it ends at the total and ``files=N/N`` however the pieces' shares summed."""

    def __init__(self, enabled: bool, total_s: float, n_files: int, desc: str):
        self.n_files, self.files, self.failed = n_files, 0, 0
        self.t0 = time.perf_counter()
        self.bar = None
        if enabled:
            try:
                from tqdm.auto import tqdm
            except ImportError:  # pragma: no cover
                return
            self.bar = tqdm(total=round(total_s, 1), unit="s", unit_scale=False, desc=desc,
                            bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}{postfix}]")

    def _postfix(self, refresh: bool) -> None:
        el = max(time.perf_counter() - self.t0, 1e-9)
        extra = {"failed": self.failed} if self.failed else {}
        self.bar.set_postfix(files=f"{self.files}/{self.n_files}", **extra,
                             x_realtime=f"{self.bar.n / el:.0f}", refresh=refresh)

    def advance(self, sec: float) -> None:      # after each batch of pieces: long files move the bar
        if self.bar is not None:
            self.bar.update(sec)
            self._postfix(False)

    def file_done(self, failed: bool = False) -> None:
        self.files += 1
        self.failed += int(failed)

    def close(self, finished: bool, failed: Optional[int] = None) -> None:
        if self.bar is None:
            return
        if finished:          # every file handled: the bar ends at its total and N/N
            self.bar.n = self.bar.total
            self.files = self.n_files
            self.failed = self.failed if failed is None else failed
            self._postfix(True)
        self.bar.close()


# ---- the run ---------------------------------------------------------------------------------------------
def embed_corpus(inputs, model, out: PathLike, *, format: str = "npz", layers=None, weights: Optional[PathLike] = None,
                 random_init: bool = False, shard=None, overwrite: bool = False, batch_size: Optional[int] = None,
                 device: Optional[str] = None, num_workers: Optional[int] = None, progress: bool = False,
                 rows_per_file: Optional[int] = None, consolidate_to: Optional[str] = None, engine: str = "local",
                 address: Optional[str] = None, actor_timeout_s: float = 300.0,
                 verbose: bool = False, short: str = "error") -> CorpusSummary:
    """Embed a corpus into the folder ``out``: what ``audio-repr embed`` does, as one call.

    ``inputs``: a file, folder (recursive) or glob pattern, or a list of them; output names are the files' paths
    below the inputs' common folder. ``model``: a model name, or an :class:`~audio_repr.Encoder` already loaded
    (then ``weights``, ``random_init`` and ``device`` are the Encoder's own). ``format``: ``"npz"`` (one file
    per input) or ``"parquet"`` (files of ``rows_per_file`` rows, default 1000; needs ``pyarrow``). ``layers``,
    ``batch_size``: as for :meth:`Encoder.embed`. ``weights``: a weights file in the original format;
    ``random_init``: a random network drawn from seed 0. ``shard``: ``(i, N)``, ``"i/N"`` or ``"auto"``.
    ``overwrite``: embed every input again (else a second call resumes: only the inputs without an output are
    embedded, and a folder made with other settings is refused with a ``ValueError`` naming what differs).
    ``num_workers``: reader processes (``None``: the device's default). ``progress``: a bar on stderr.
    ``consolidate_to``: also write one ``.npz`` of the whole corpus under ``out`` (npz only).
    ``engine="ray"``: embed on a Ray cluster (``address``; ``device="cuda"`` gives each model actor one GPU),
    Parquet only; the cluster must hold the resources an actor asks for, and actors that cannot start within
    ``actor_timeout_s`` end the run with an error. ``verbose``: Ray's own INFO logs on the console.
    ``short``: ``"error"`` (a clip shorter than the model's minimum fails) or ``"pad"`` (zero-padded, centred, to
    the minimum; see :meth:`Encoder.embed`; local engine only).

    Returns a :class:`CorpusSummary`; a file that fails is in ``summary.failed`` (and ``OUT/_failures.log``)
    and does not stop the others. Every mistake in the arguments raises before a model is loaded or audio read.
    """
    from .inference.encoder import Encoder

    # everything a user can get wrong is checked before the model is loaded or any audio read
    given = isinstance(model, Encoder)
    _check_run_options(model, given, format, engine, batch_size, num_workers, short)
    files = _collect_or_fail(inputs)
    shard_ = parse_shard(shard)
    rows_per_file = _check_output_options(format, engine, rows_per_file, consolidate_to, shard_, address, given)
    name, layer_names, device = (_given_encoder(model, layers, weights, random_init, device) + (device,) if given
                                 else _named_model(model, layers, weights, random_init, device, engine, shard_))
    out_dir = Path(out)
    created, case_insensitive = prepare_out_dir(out_dir)
    outputs = [npz_path(out_dir, rel.as_posix()) for _, rel in files]
    worker = f"{shard_[0]}of{shard_[1]}" if shard_ else "0of1"
    log = out_dir / (f"_failures-{worker}.log" if shard_ else "_failures.log")
    ray_session = None
    try:
        _check_outputs(out_dir, outputs, case_insensitive, log, consolidate_to)
        _check_early_resume(out_dir, name, layer_names, format, overwrite)   # before any weights are looked for
        if engine == "ray":            # the cluster can run the actors, checked before the model is loaded here
            ray_session = _start_ray(address, verbose, device)
        files = shard_files(files, shard_)
        names = [rel.as_posix() for _, rel in files]
        # Ray: the driver only records the weights' digest (the actors have the GPUs)
        enc, source = ((model, "given as an Encoder") if given
                       else _load_for_run(name, weights, random_init, "cpu" if engine == "ray" else device))
        settings = run_settings(enc, layer_names, format, source)
        store = open_store(format, out_dir, settings, worker=worker, rows_per_file=rows_per_file)
        done_before = store.done(names)
        check_resume(out_dir, settings, len(done_before), overwrite, outputs)
    except BaseException:
        if ray_session is not None:
            ray_session.stop()
        remove_empty(created)
        raise
    try:
        had_record = _start_run(out_dir, shard_ is not None, log, settings, store if overwrite else None)
    except BaseException:
        if ray_session is not None:
            ray_session.stop()
        raise
    todo = [(str(f), n) for (f, _), n in zip(files, names) if overwrite or n not in done_before]
    skipped = len(files) - len(todo)
    if engine == "ray":
        return _embed_with_ray(ray_session, todo, skipped, out_dir, log, had_record, created, model=name,
                               layers=layer_names, weights=weights, random_init=random_init, settings=settings,
                               batch_size=batch_size, rows_per_file=rows_per_file, progress=progress,
                               actor_timeout_s=actor_timeout_s, verbose=verbose)
    summary = _embed_locally(enc, store, todo, skipped, out_dir, log, layer_names, batch_size, num_workers, progress,
                             short)
    if consolidate_to:
        summary.consolidated = consolidate(out_dir, files, out_dir / consolidate_to)
    return summary


def _whole_number(value, minimum: int) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and value >= minimum


def _check_run_options(model, given: bool, format: str, engine: str, batch_size, num_workers, short) -> None:
    """The model argument's type, the format, the engine, the batch size, the reader count and ``short``."""
    from .inference.encoder import check_batch_size, check_short

    if not given and not isinstance(model, str):
        raise TypeError(f"model: a model name or an audio_repr.Encoder, got {type(model).__name__}")
    if format not in FORMATS:
        raise ValueError(f"format {format!r}: expected one of {', '.join(FORMATS)}")
    if engine not in ("local", "ray"):
        raise ValueError(f"engine {engine!r}: expected 'local' or 'ray'")
    check_batch_size(batch_size)
    check_short(short)
    if short != "error" and engine == "ray":
        raise ValueError("--short pad runs on the local engine: drop --engine ray (or --short)")
    if num_workers is not None and not _whole_number(num_workers, 0):
        raise ValueError(f"num_workers must be a whole number >= 0, got {num_workers!r}")


def _check_output_options(format: str, engine: str, rows_per_file, consolidate_to, shard_, address,
                          given: bool) -> int:
    """The options that go with a format or an engine, and the packages they need; -> the rows per Parquet file."""
    if rows_per_file is not None and format != "parquet":
        raise ValueError("--rows-per-file sets the rows of each Parquet file: use it with --format parquet "
                         "(npz writes one file per input)")
    if rows_per_file is not None and not _whole_number(rows_per_file, 1):
        raise ValueError(f"rows_per_file must be a whole number >= 1, got {rows_per_file!r}")
    if consolidate_to and format != "npz":
        raise ValueError("--consolidate gathers .npz outputs into one file: Parquet shards already are one table "
                         "(read them with audio_repr.read_embeddings or pandas)")
    if consolidate_to and shard_ is not None:
        raise ValueError("--consolidate with --shard: each worker sees only its share; consolidate once all "
                         "shards are done (audio_repr.read_embeddings reads the whole folder)")
    if format == "parquet":
        require("pyarrow.parquet", "parquet", "pyarrow")
    if engine == "ray":
        require("ray.data", "ray", "ray[data]")
        if format != "parquet":
            raise ValueError("--engine ray writes Parquet: add --format parquet")
        if shard_ is not None:
            raise ValueError("--engine ray spreads the work over the cluster itself: drop --shard")
        if given:
            raise ValueError("engine='ray' loads the model on each actor: give the model's name, not an Encoder")
    elif address:
        raise ValueError("--address names a Ray cluster: use it with --engine ray")
    return 1000 if rows_per_file is None else rows_per_file


def _given_encoder(model, layers, weights, random_init: bool, device) -> Tuple[str, List[str]]:
    """A loaded Encoder as the model: -> (its name, the layers)."""
    if weights is not None or random_init or device is not None:
        raise ValueError("model is an Encoder: weights, random_init and device are its own (load it with them, "
                         "or give the model's name)")
    from .fusion import resolve_layers

    return model.name, resolve_layers(layers, list(model.layer_dims), model.card.default_layer,
                                      model.card.fusion_layers)


def _named_model(model: str, layers, weights, random_init: bool, device, engine: str,
                 shard_) -> Tuple[str, List[str], Optional[str]]:
    """A model name: -> (the card's name, the layers, the device), checked without loading the model."""
    from .models import resolve_model_layers
    from .registry import get_card

    name = get_card(model).name
    layer_names = resolve_model_layers(model, layers)
    if device is not None and engine != "ray":           # Ray: the actors' machines check it
        from .inference.loader import check_device

        check_device(device)
    _check_weights(weights, random_init)
    if device == "cuda" and shard_ is not None and "LOCAL_RANK" in os.environ:
        device = f"cuda:{int(os.environ['LOCAL_RANK'])}"      # torchrun: one GPU per local worker
    return name, layer_names, device


def _check_weights(weights, random_init: bool) -> None:
    if weights and random_init:
        raise ValueError("--weights and --random-init exclude each other")
    if weights and not Path(weights).expanduser().exists():
        raise FileNotFoundError(f"--weights {weights}: no such file or folder")


def _check_outputs(out_dir: Path, outputs: List[Path], case_insensitive: bool, log: Path, consolidate_to) -> None:
    """No two inputs share an output and none overwrites a file of the run (over all inputs, not one shard's)."""
    keys = [str(o).casefold() if case_insensitive else str(o) for o in outputs]
    reserved = {(out_dir / n) for n in (RUN_RECORD, log.name)}
    if consolidate_to:
        if Path(consolidate_to).name != consolidate_to or not consolidate_to.endswith(".npz"):
            raise ValueError(f"--consolidate {consolidate_to!r}: give a file name ending in .npz "
                             "(it is written inside --out)")
        reserved.add(out_dir / consolidate_to)
    clash = first_clash(keys, outputs, reserved, case_insensitive)
    if clash:
        raise ValueError(clash)


def _check_early_resume(out_dir: Path, name: str, layer_names: List[str], format: str, overwrite: bool) -> None:
    """Refuse a folder of other settings on what is known before the model is loaded (and an unreadable record)."""
    old = _read_record(out_dir)
    if old is not None and not overwrite:
        early = {"model": name, "layers": layer_names, "format": format, "library": __version__}
        diff = _differences(old, early, COMPARED_EARLY)
        if diff:
            raise _refuse(out_dir, diff)


def _start_ray(address, verbose: bool, device):
    from .ray import Session

    session = Session(address, verbose=verbose)
    session.start()
    session.check_resources(num_gpus=1 if (device or "cpu").startswith("cuda") else 0)
    return session


def _load_for_run(name: str, weights, random_init: bool, device) -> Tuple[object, str]:
    """-> (the encoder, where its weights come from, as the run record says)."""
    enc = load_encoder(name, weights=weights, random_init=random_init, device=device)
    return enc, "random-init (seed 0)" if random_init else str(weights or "default (cache/mirror/download)")


def _start_run(out_dir: Path, sharded: bool, log: Path, settings: dict, clear=None) -> bool:
    """Clear what an earlier run left (half-written files, its failures log; with ``--overwrite`` the ``clear``
    store's earlier files) and write the run record. Returns whether a record was there before."""
    if not sharded:
        for stale in out_dir.rglob(".*.part"):       # left by a run that was killed mid-write (with a shard other
            stale.unlink()                           # workers may be writing theirs: left alone)
    if log.exists():                                 # it describes one run: the last
        log.unlink()
    record = out_dir / RUN_RECORD
    had_record = record.is_file()
    with atomic_write(record, "w", encoding="utf-8") as f:
        json.dump(settings, f, indent=2)
    if clear is not None:
        clear.clear()
    return had_record


def _embed_with_ray(session, todo: List[Tuple[str, str]], skipped: int, out_dir: Path, log: Path, had_record: bool,
                    created: List[Path], **options) -> CorpusSummary:
    """The inputs still to do on the Ray cluster of ``session`` (stopped at the end); ``options`` go to
    :func:`audio_repr.ray.embed_folder`. A run that fails before writing anything leaves no record."""
    from .ray import embed_folder

    try:
        n, failures = embed_folder([f for f, _ in todo], [n for _, n in todo], out_dir,
                                   num_gpus=session.num_gpus, **options)
    except BaseException:
        if not had_record and not list(out_dir.glob("part-*.parquet")):   # nothing of this run: no record
            (out_dir / RUN_RECORD).unlink(missing_ok=True)
            remove_empty(created)
        raise
    finally:
        session.stop()
    return CorpusSummary(out_dir, n, skipped, failures, _write_failures(failures, log), engine="ray")


def _embed_locally(enc, store, todo: List[Tuple[str, str]], skipped: int, out_dir: Path, log: Path,
                   layer_names: List[str], batch_size, num_workers, progress: bool,
                   short: str = "error") -> CorpusSummary:
    """The inputs still to do through the corpus pipeline into ``store``, with the progress bar."""
    from .inference.pipeline import durations, embed_files

    seconds = durations([f for f, _ in todo])
    name_of = {i: n for i, (_, n) in enumerate(todo)}
    bar = _Progress(progress, sum(seconds), len(todo), f"{enc.name} (audio s)")

    def write(r) -> None:              # on the writer thread
        store.write(name_of[r.index], r.source, r.embedding)
        bar.file_done()

    finished, failures = False, []
    try:
        done, failures = embed_files(enc, [f for f, _ in todo], write, layers=layer_names, batch_size=batch_size,
                                     num_workers=num_workers, seconds=seconds, progress=bar.advance, short=short)
        store.close()                  # rows of whole files written so far are kept (Parquet: a last part file)
        finished = True
    finally:
        if not finished:
            try:
                store.close()
            except Exception:  # noqa: BLE001 - the first error is the one to report
                pass
        bar.close(finished, len(failures))
    return CorpusSummary(out_dir, done, skipped, failures, _write_failures(failures, log))


# ---- tagging a corpus ------------------------------------------------------------------------------------
TAG_FORMATS = {".jsonl": "jsonl", ".parquet": "parquet", ".json": "json"}


def _tag_row(source: str, name: str, t) -> dict:
    return {"file": source, "name": name, "labels": list(t.labels), "scores": [float(x) for x in t.scores],
            "indices": [int(i) for i in t.indices], "windows": int(t.windows)}


def tag_corpus(inputs, model, *, top_k: int = 5, batch_size: Optional[int] = None, out: Optional[PathLike] = None,
               weights: Optional[PathLike] = None, random_init: bool = False, device: Optional[str] = None,
               progress: bool = False, files_per_call: int = 16, on_tags=None):
    """Tag files, folders (recursive) and globs with a model that has a classifier (``audio-repr tag``).

    Files are tagged ``files_per_call`` at a time (a file that cannot be read or tagged is retried alone, then
    reported, and the others go on). ``out``: also write every file's tags, ``.jsonl`` (one JSON object a line:
    ``file``, ``name``, ``labels``, ``scores``, ``indices``, ``windows``), ``.parquet`` (the same columns; needs
    ``pyarrow``) or ``.json`` (one list). ``on_tags(tags)`` is called for each file as it is done.
    Returns ``(rows, failures)``: the rows above and ``[(path, reason)]``."""
    from .inference.encoder import Encoder, check_batch_size
    from .inference.pipeline import durations
    from .inference.tagging import TaggingError, taggers
    from .inference.tagging import tag as tag_clips
    from .registry import get_card

    given = isinstance(model, Encoder)
    card = model.card if given else get_card(model)
    if card.labels is None:
        raise TaggingError(f"{card.name} has no classifier to tag with; models that tag: " + ", ".join(taggers()))
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be a whole number >= 1, got {top_k!r}")
    check_batch_size(batch_size)
    kind = None if out is None else _tags_file_kind(out)
    _check_weights(weights, random_init)
    if device is not None and not given:
        from .inference.loader import check_device

        check_device(device)
    files = _collect_or_fail(inputs)
    enc = model if given else load_encoder(card.name, weights=weights, device=device, random_init=random_init)
    sources = [str(f) for f, _ in files]
    seconds = durations(sources)
    bar = _Progress(progress, sum(seconds), len(files), f"{enc.name} (tagging, audio s)")
    rows, failures = [], []

    def one(i: int, t) -> None:
        rows.append(_tag_row(sources[i], files[i][1].as_posix(), t))
        bar.file_done()
        if on_tags is not None:
            on_tags(t)

    def tag(audio, report):
        return tag_clips(enc, audio, top_k=top_k, batch_size=batch_size, progress=report)

    finished = False
    try:
        for at in range(0, len(files), files_per_call):
            idx = list(range(at, min(at + files_per_call, len(files))))
            report = _share_reporter(bar, sum(seconds[i] for i in idx))
            _tag_group(tag, sources, idx, one, report, failures, bar)
            report(None)                         # the group's whole share, however its windows added up
        finished = True
    finally:
        bar.close(finished)
    if out is not None and rows:
        _write_tags(rows, Path(out), kind)
    return rows, failures


def _tags_file_kind(out: PathLike) -> str:
    """The format of a tags file from its name (``jsonl``, ``parquet``, ``json``), checked to be writable."""
    kind = TAG_FORMATS.get(Path(out).suffix.lower())
    if kind is None:
        raise ValueError(f"--out {out}: the tags go into a .jsonl, .parquet or .json file")
    if kind == "parquet":
        require("pyarrow.parquet", "parquet", "pyarrow")
    if Path(out).is_dir():
        raise ValueError(f"--out {out} is a folder: give a file name ending in .jsonl, .parquet or .json")
    if not Path(out).parent.is_dir():
        raise FileNotFoundError(f"--out {out}: no such folder {Path(out).parent}")
    return kind


def _share_reporter(bar: "_Progress", share: float):
    """``report(seconds)`` after each batch of a group of files: moves the bar by at most the group's ``share``
    in all (a long file moves it as it goes); ``report(None)`` completes the share."""
    moved = [0.0]

    def report(sec: Optional[float]) -> None:
        step = min(share if sec is None else sec, share - moved[0])
        if step > 0:
            moved[0] += step
            bar.advance(step)

    return report


def _tag_group(tag, sources: List[str], idx: List[int], one, report, failures: list, bar: "_Progress") -> None:
    """Tag the files ``idx`` in one call; when that fails, one by one, each failure reported and the rest going on."""
    from .inference.pipeline import describe_error

    try:
        tags = tag([sources[i] for i in idx] if len(idx) > 1 else sources[idx[0]], report)
        for i, t in zip(idx, tags if len(idx) > 1 else [tags]):
            one(i, t)
    except Exception:  # noqa: BLE001 - one bad file must not stop the others: again one by one
        for i in idx:
            try:
                one(i, tag(sources[i], report))
            except Exception as e:  # noqa: BLE001
                failures.append((sources[i], describe_error(e)))
                bar.file_done(failed=True)


def _write_tags(rows: List[dict], out: Path, kind: str) -> None:
    if kind == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist(rows, schema=pa.schema([
            ("file", pa.string()), ("name", pa.string()), ("labels", pa.list_(pa.string())),
            ("scores", pa.list_(pa.float32())), ("indices", pa.list_(pa.int64())), ("windows", pa.int64())]))
        with atomic_write(out) as f:
            pq.write_table(table, f)
        return
    with atomic_write(out, "w", encoding="utf-8") as f:
        if kind == "jsonl":
            f.writelines(json.dumps(r) + "\n" for r in rows)
        else:
            f.write(json.dumps(rows, indent=2))
