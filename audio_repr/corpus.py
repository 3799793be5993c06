"""Where a corpus's embeddings go, and how they come back: one ``.npz`` per input, or Parquet part files.

Words: a *shard* is a share ``(i, N)`` of a run's inputs (``--shard i/N``, one worker's); a *worker tag* names
one worker's Parquet files (``"0of1"``, ``"2of4"``, ``"ray"``); a *part file* is one Parquet file.

* ``npz`` (:class:`NpzStore`): ``OUT/<name>.npz`` per input (``frames``, ``timestamps_ms``, ``clip``, ``layers``,
  ``layer_slices``, ``model``, ``duration_s``), each written atomically.
* ``parquet`` (:class:`ParquetStore`, needs ``pyarrow``): ``OUT/part-<worker tag>-<run>-<n>.parquet`` files of at
  most ``rows_per_file`` rows, one row per input: ``name`` (the output name: the input's path below the
  inputs' common folder), ``source`` (the path as given), ``duration_s``, ``model``, ``layers``, ``clip``
  (list of float32), ``frames`` (list of lists of float32), ``timestamps_ms`` (list of float64); the run's
  settings (``_audio-repr-run.json``'s content) in each file's metadata under ``audio_repr``. Each file is
  written atomically; rows wait in memory until a file is full (or the run ends), so an interrupted run loses
  at most the rows of the files not yet written, which a resumed run embeds again. The part files load in pandas
  (``pd.read_parquet(OUT)``), Hugging Face ``datasets`` (``load_dataset("parquet", data_files=...)``) and Ray as
  they are.

Both keep the names already written (``done()``), so a resumed run embeds only the rest, and
:func:`read_embeddings` reads either back as one :class:`CorpusEmbeddings`.

Also here, shared by both engines (:mod:`audio_repr.corpus_run` and :mod:`audio_repr.ray`, which import this
module and not each other): :func:`load_encoder` (a model as a run loads it: ``random_init`` draws from a seed)
and :func:`weights_digest` (the weights as used, recorded in ``_audio-repr-run.json``).
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Set, Union

import numpy as np

from ._io import RUN_RECORD, atomic_write, require
from .inference.embedding import Embedding, NotAnEmbedding

__all__ = ["FORMATS", "NpzStore", "ParquetStore", "CorpusEmbeddings", "read_embeddings", "open_store",
           "embedding_row", "rows_to_table", "PART_GLOB", "METADATA_KEY", "load_encoder", "weights_digest",
           "npz_path", "StoredEmbedding"]

FORMATS = ("npz", "parquet")
PART_GLOB = "part-*.parquet"
METADATA_KEY = b"audio_repr"


def _require_pyarrow():
    require("pyarrow.parquet", "parquet", "pyarrow")


def weights_digest(module) -> str:
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


def load_encoder(model: str, *, weights=None, device=None, random_init: bool = False, seed: int = 0):
    """The encoder a run uses: ``audio_repr.load(model, weights=..., device=...)``, or with ``random_init`` a
    network drawn from ``seed`` (reproducible, and the caller's random state is left as it was)."""
    import torch

    from .inference.loader import load

    if not random_init:
        return load(model, weights=weights, device=device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return load(model, device=device, pretrained=False)


def npz_path(out_dir: Union[str, os.PathLike], name: str) -> Path:
    """The one output-path rule of ``--format npz``: the input with output name ``name`` (``a/x.wav``) is
    ``out_dir/a/x.wav.npz``."""
    return Path(out_dir) / (name + ".npz")


class NpzStore:
    """One ``.npz`` per input under ``out_dir``, at :func:`npz_path`."""

    format = "npz"

    def __init__(self, out_dir: Union[str, os.PathLike]):
        self.out_dir = Path(out_dir)

    def path(self, name: str) -> Path:
        return npz_path(self.out_dir, name)

    def done(self, names: List[str]) -> Set[str]:
        return {n for n in names if self.path(n).is_file()}

    def write(self, name: str, source: str, emb: Embedding) -> None:
        emb.save(self.path(name))

    def clear(self) -> None:
        """Nothing to do: ``--overwrite`` replaces each file as it is written."""

    def close(self) -> None:
        pass


def embedding_row(name: str, source: str, emb: Embedding) -> Dict:
    """One input's row of the Parquet schema (numpy arrays; :func:`rows_to_table` makes the Arrow columns)."""
    return {"name": name, "source": source, "duration_s": float(emb.duration_s), "model": emb.model,
            "layers": list(emb.layers), "clip": emb.clip.numpy().astype(np.float32, copy=False),
            "frames": emb.frames.numpy().astype(np.float32, copy=False),
            "timestamps_ms": emb.timestamps_ms.numpy().astype(np.float64, copy=False)}


def _schema():
    import pyarrow as pa

    return pa.schema([("name", pa.string()), ("source", pa.string()), ("duration_s", pa.float64()),
                      ("model", pa.string()), ("layers", pa.list_(pa.string())),
                      ("clip", pa.list_(pa.float32())), ("frames", pa.list_(pa.list_(pa.float32()))),
                      ("timestamps_ms", pa.list_(pa.float64()))])


def rows_to_table(rows: List[Dict], settings: Optional[Dict] = None):
    """Rows of :func:`embedding_row` -> a ``pyarrow.Table`` of the Parquet schema (built from flat buffers
    and offsets, no per-value Python objects), with ``settings`` in its metadata."""
    import pyarrow as pa

    def offsets(lengths):
        return pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32))

    def flat_list(arrays, dtype):
        values = np.concatenate([a.reshape(-1) for a in arrays]) if arrays else np.zeros(0, dtype)
        return pa.ListArray.from_arrays(offsets([a.size for a in arrays]), pa.array(values.astype(dtype, copy=False)))

    frames = [r["frames"] for r in rows]                        # [T_i, D] each
    values = pa.array(np.concatenate([f.reshape(-1) for f in frames]).astype(np.float32, copy=False)
                      if frames else np.zeros(0, np.float32))
    per_frame = offsets(np.repeat([f.shape[1] for f in frames], [f.shape[0] for f in frames]).astype(np.int64))
    frames_col = pa.ListArray.from_arrays(offsets([f.shape[0] for f in frames]),
                                          pa.ListArray.from_arrays(per_frame, values))
    cols = {
        "name": pa.array([r["name"] for r in rows], pa.string()),
        "source": pa.array([r["source"] for r in rows], pa.string()),
        "duration_s": pa.array([r["duration_s"] for r in rows], pa.float64()),
        "model": pa.array([r["model"] for r in rows], pa.string()),
        "layers": pa.array([r["layers"] for r in rows], pa.list_(pa.string())),
        "clip": flat_list([r["clip"] for r in rows], np.float32),
        "frames": frames_col,
        "timestamps_ms": flat_list([r["timestamps_ms"] for r in rows], np.float64),
    }
    table = pa.Table.from_arrays([cols[f.name] for f in _schema()], schema=_schema())
    if settings is not None:
        table = table.replace_schema_metadata({METADATA_KEY: json.dumps(settings).encode()})
    return table


class ParquetStore:
    """Parquet part files under ``out_dir`` (see the module docstring). ``worker``: the tag in the file names of
    this worker (``"0of1"``; with ``--shard i/N`` each worker writes its own files into one folder)."""

    format = "parquet"

    def __init__(self, out_dir: Union[str, os.PathLike], settings: Dict, worker: str = "0of1",
                 rows_per_file: int = 1000, max_bytes: int = 256 << 20):
        _require_pyarrow()
        self.out_dir = Path(out_dir)
        self.settings = settings
        self.worker = worker
        self.rows_per_file = int(rows_per_file)
        self.max_bytes = int(max_bytes)
        self.run = uuid.uuid4().hex[:8]           # files of this run never take an earlier run's names
        self._rows: List[Dict] = []           # rows of write(), not yet a table
        self._tables: List = []               # tables of write_table() (and the rest of a flush)
        self._bytes = 0
        self._n = 0
        self.files: List[Path] = []

    def parts(self, mine: bool = False) -> List[Path]:
        pattern = f"part-{self.worker}-*.parquet" if mine else PART_GLOB
        return sorted(self.out_dir.glob(pattern))

    def done(self, names: List[str]) -> Set[str]:
        import pyarrow.parquet as pq

        wanted, found = set(names), set()
        for p in self.parts():
            found.update(n for n in pq.read_table(p, columns=["name"]).column("name").to_pylist() if n in wanted)
        return found

    def write(self, name: str, source: str, emb: Embedding) -> None:
        row = embedding_row(name, source, emb)
        self._rows.append(row)
        self._bytes += row["frames"].nbytes + row["clip"].nbytes + row["timestamps_ms"].nbytes
        if self._pending_rows() >= self.rows_per_file or self._bytes >= self.max_bytes:
            self.flush(whole_files_only=True)

    def write_table(self, table) -> None:
        """Add rows already in the schema (a ``pyarrow.Table`` of :func:`rows_to_table`, e.g. from Ray)."""
        if table.num_rows:
            self._tables.append(table)
            self._bytes += table.nbytes
            if self._pending_rows() >= self.rows_per_file or self._bytes >= self.max_bytes:
                self.flush(whole_files_only=True)

    def _pending_rows(self) -> int:
        return len(self._rows) + sum(t.num_rows for t in self._tables)

    def flush(self, whole_files_only: bool = False) -> None:
        """Write the waiting rows as files of ``rows_per_file`` rows; the rest too unless ``whole_files_only``
        (and the waiting bytes are below ``max_bytes``)."""
        if not self._pending_rows():
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        tables = self._tables + ([rows_to_table(self._rows)] if self._rows else [])
        table = pa.concat_tables(tables).replace_schema_metadata(
            {METADATA_KEY: json.dumps(self.settings).encode()})
        self._rows, self._tables, self._bytes = [], [], 0
        at = 0
        while at < table.num_rows:
            n = min(self.rows_per_file, table.num_rows - at)
            if n < self.rows_per_file and whole_files_only and table.slice(at).nbytes < self.max_bytes:
                self._tables = [table.slice(at)]
                self._bytes = self._tables[0].nbytes
                break
            path = self.out_dir / f"part-{self.worker}-{self.run}-{self._n:05d}.parquet"
            with atomic_write(path) as f:
                pq.write_table(table.slice(at, n).combine_chunks(), f)
            self.files.append(path)
            self._n += 1
            at += n

    def clear(self) -> None:
        """``--overwrite``: remove this worker's earlier files (all of them when the run is not sharded)."""
        for p in self.parts(mine=self.worker != "0of1"):
            p.unlink()

    def close(self) -> None:
        self.flush()


def open_store(fmt: str, out_dir: Union[str, os.PathLike], settings: Dict, worker: str = "0of1", **kwargs):
    if fmt == "npz":
        return NpzStore(out_dir)
    if fmt == "parquet":
        return ParquetStore(out_dir, settings, worker=worker, **kwargs)
    raise ValueError(f"unknown output format {fmt!r}; expected one of {', '.join(FORMATS)}")


def _list_rows(col) -> List[np.ndarray]:
    """A ``list<number>`` Arrow array -> one numpy array per row (views of one buffer)."""
    off = col.offsets.to_numpy()
    values = col.flatten().to_numpy(zero_copy_only=False)
    return [values[off[i]: off[i + 1]] for i in range(len(col))]


@dataclass
class CorpusEmbeddings:
    """A corpus's embeddings as written by ``audio-repr embed`` (either format), ordered by ``names``.

    ``names`` (output names), ``sources`` (paths as given), ``clip [N, D]``, ``frames`` (one ``[T_i, D]`` array
    per input), ``timestamps_ms`` (one ``[T_i]`` per input), ``duration_s [N]``, ``model``, ``layers`` and the
    run's ``settings`` (``_audio-repr-run.json``, empty when absent)."""

    names: List[str]
    sources: List[str]
    clip: np.ndarray
    frames: List[np.ndarray]
    timestamps_ms: List[np.ndarray]
    duration_s: np.ndarray
    model: str
    layers: List[str]
    settings: Dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.names)


@dataclass
class StoredEmbedding:
    """One input's embedding as a store holds it (a Parquet row or an ``.npz``), in numpy."""

    name: str
    source: str
    clip: np.ndarray
    frames: np.ndarray
    timestamps_ms: np.ndarray
    duration_s: float
    model: str
    layers: List[str]

    @classmethod
    def from_embedding(cls, name: str, emb: Embedding) -> "StoredEmbedding":
        return cls(name, emb.source, emb.clip.numpy(), emb.frames.numpy(), emb.timestamps_ms.numpy(),
                   float(emb.duration_s), emb.model, list(emb.layers))


def _parquet_records(path: Path) -> List[StoredEmbedding]:
    """The rows of one part file."""
    import pyarrow.parquet as pq

    t = pq.read_table(path)
    clip, stamps = (_list_rows(t.column(c).combine_chunks()) for c in ("clip", "timestamps_ms"))
    frames = t.column("frames").combine_chunks()
    outer = frames.offsets.to_numpy()
    inner = frames.flatten()
    inner_off = inner.offsets.to_numpy()
    values = inner.flatten().to_numpy(zero_copy_only=False)
    meta = zip(*(t.column(c).to_pylist() for c in ("name", "source", "duration_s", "model", "layers")))
    out = []
    for i, (name, src, dur, model, layers) in enumerate(meta):
        a, b = inner_off[outer[i]], inner_off[outer[i + 1]]
        n = outer[i + 1] - outer[i]
        out.append(StoredEmbedding(name, src, clip[i], values[a:b].reshape(n, (b - a) // max(n, 1)), stamps[i], dur,
                                   model, layers))
    return out


def _npz_records(folder: Path) -> List[StoredEmbedding]:
    """Every embedding ``.npz`` under ``folder`` (others, e.g. a ``--consolidate`` file, are skipped)."""
    out = []
    for p in sorted(folder.rglob("*.npz")):
        try:
            emb = Embedding.load(p)
        except NotAnEmbedding:
            continue
        out.append(StoredEmbedding.from_embedding(p.relative_to(folder).as_posix()[: -len(".npz")], emb))
    return out


def read_embeddings(folder: Union[str, os.PathLike]) -> CorpusEmbeddings:
    """Read the embeddings ``audio-repr embed`` wrote into ``folder`` (``--format npz`` or ``parquet``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no such folder: {folder}")
    record = folder / RUN_RECORD
    settings = json.loads(record.read_text(encoding="utf-8")) if record.is_file() else {}
    parts = sorted(folder.glob(PART_GLOB))
    found = [r for p in parts for r in _parquet_records(p)] if parts else _npz_records(folder)
    rows: Dict[str, StoredEmbedding] = {r.name: r for r in found}
    if not rows:
        raise FileNotFoundError(f"{folder} holds no embeddings (neither {PART_GLOB} nor .npz files)")
    names = sorted(rows)
    models = {rows[n].model for n in names}
    if len(models) > 1:
        raise ValueError(f"{folder} mixes embeddings of several models: {', '.join(sorted(models))}")
    got = [rows[n] for n in names]
    return CorpusEmbeddings(
        names=names, sources=[r.source for r in got], clip=np.stack([r.clip for r in got]),
        frames=[r.frames for r in got], timestamps_ms=[r.timestamps_ms for r in got],
        duration_s=np.array([r.duration_s for r in got]), model=models.pop(), layers=list(got[0].layers),
        settings=settings)
