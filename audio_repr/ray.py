"""Ray Data for clusters: a corpus embedded by model actors on many CPUs/GPUs/machines (``pip install 'audio-repr[ray]'``).

* :func:`embed` builds a lazy ``ray.data.Dataset`` in two stages: **read** (stateless Ray tasks read,
  downmix and resample each file to the model's rate, exactly as :class:`audio_repr.inference.pipeline.Reader`
  does for the local pipeline) and **embed** (``map_batches`` with a callable class: each actor loads the
  model once, in ``__init__``, and embeds ``files_per_batch`` files per call with
  :meth:`Encoder.embed_waveforms`, pieces batched across the files). Its rows are the Parquet schema of
  :func:`audio_repr.corpus.rows_to_table` (plain Arrow list columns), so ``ds.write_parquet(...)``,
  ``ds.to_pandas()`` or :func:`embed_folder` store them as they are.
* **Failures**: a file that cannot be read, or that the model refuses (too short), gives no row and does
  not stop the job; the actor logs it (``audio_repr.ray`` logger, in the worker's log, which Ray forwards to
  the driver). With ``keep_errors=True`` the dataset instead keeps one row per failed file and has one more
  column, ``error`` (``None`` for the files that worked) — what :func:`embed_folder` uses to report them.
* :func:`embed_folder` is ``audio-repr embed --engine ray``: it writes the rows on the driver into
  ``OUT/part-ray-<run>-<n>.parquet`` files of at most ``rows_per_file`` rows, each written atomically with the
  run's settings in its metadata (as :class:`audio_repr.corpus.ParquetStore`), so the output folder,
  :func:`audio_repr.read_embeddings` and resuming work as for the local engine, wherever the workers run.

Numbers are those of ``Encoder.embed`` on the same files: bit-identical on a CPU for the same batch
composition and thread count (an actor runs as many torch threads as CPUs it reserved: 1 by default), within
float32 reordering otherwise.
Ray itself is imported only inside these functions: ``import audio_repr`` never needs it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from ._io import require
from .corpus import ParquetStore, embedding_row, load_encoder, rows_to_table, weights_digest

__all__ = ["embed", "embed_folder", "Session"]

log = logging.getLogger(__name__)



def _require_ray():
    require("ray.data", "ray", "ray[data]")
    import ray

    return ray


#: loggers whose INFO and WARNING lines (the instance's start, Ray Data's plans, resource and progress notes) stay
#: off the console unless a run is verbose
_LOGGERS = ("ray", "ray.data")


class Session:
    """Ray for one run: the instance already initialised in this process, else ``ray.init(address)`` (``None``:
    ``RAY_ADDRESS`` or a new local instance), which :meth:`stop` shuts down again. Unless ``verbose``, Ray's
    own logs stay off the console while the session lasts (its errors reach the caller as exceptions; Ray's log
    files keep everything)."""

    def __init__(self, address: Optional[str] = None, verbose: bool = False):
        self.address, self.verbose = address, verbose
        self.ray = None
        self.started = False
        self.num_gpus = 0
        self._levels: Dict[str, int] = {}

    def start(self) -> "Session":
        ray = self.ray = _require_ray()
        if not self.verbose:
            for name in _LOGGERS:
                lg = logging.getLogger(name)
                self._levels[name] = lg.level
                lg.setLevel(logging.ERROR)
        if not ray.is_initialized():
            kwargs = {} if self.verbose else {"logging_level": logging.ERROR, "log_to_driver": False}
            ray.init(address=self.address, include_dashboard=False, **kwargs)
            self.started = True
        return self

    def check_resources(self, num_gpus: float = 0, num_cpus: Optional[float] = None) -> None:
        """A ``ValueError`` naming what is missing when the cluster cannot hold one model actor (``num_gpus``
        GPUs, ``num_cpus`` CPUs, default 1), before any work."""
        self.num_gpus = num_gpus
        have = self.ray.cluster_resources()
        missing = [f"{need:g} {what}" for what, need in (("GPU", num_gpus), ("CPU", num_cpus or 1))
                   if need and have.get(what, 0) < need]
        if missing:
            shown = ", ".join(f"{k} {have.get(k, 0):g}" for k in ("CPU", "GPU"))
            hint = " (--device cuda gives each model actor one GPU: drop it, or use a cluster with GPUs)" \
                if num_gpus else ""
            raise ValueError(f"the Ray cluster cannot run a model actor: it needs {' and '.join(missing)}, the "
                             f"cluster has {shown}{hint}")

    def stop(self) -> None:
        if self.ray is not None and self.started:
            self.ray.shutdown()
            self.started = False
        for name, level in self._levels.items():
            logging.getLogger(name).setLevel(level)
        self._levels = {}


def _timed_out(e: BaseException) -> bool:
    """Whether ``e`` (or what it wraps) is Ray's timeout waiting for actors to start."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if type(e).__name__ == "GetTimeoutError":
            return True
        e = e.__cause__ or e.__context__
    return False


# ---- stage 1: read (Ray tasks) ---------------------------------------------------------------------------
def _read_batch(batch, sample_rate: int, resampler: str):
    """``path`` [, ``source``, ``name``] -> ``source``, ``name``, ``waveform`` (mono float32 at the model's rate,
    empty on failure), ``error`` (``None`` or why the file could not be read)."""
    import pyarrow as pa

    from .inference.pipeline import Reader, describe_error

    cols = batch.column_names
    paths = [str(p) for p in batch.column("path").to_pylist()]
    sources = [str(s) for s in batch.column("source").to_pylist()] if "source" in cols else paths
    names = [str(n) for n in batch.column("name").to_pylist()] if "name" in cols else sources
    reader = Reader(paths, sample_rate, resampler)
    waves, errors = [], []
    for i in range(len(paths)):
        _, wav, error = reader[i]
        waves.append(wav.numpy().astype(np.float32, copy=False) if wav is not None else np.zeros(0, np.float32))
        errors.append(None if error is None else describe_error(error))
    lengths = np.array([w.size for w in waves], np.int64)
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))
    values = pa.array(np.concatenate(waves) if waves else np.zeros(0, np.float32))
    return pa.table({"source": pa.array(sources, pa.string()), "name": pa.array(names, pa.string()),
                     "waveform": pa.LargeListArray.from_arrays(offsets, values),
                     "error": pa.array(errors, pa.string())})


# ---- stage 2: embed (Ray actors) -------------------------------------------------------------------------
class _Embedder:
    """One model per actor, loaded once (as the CLI loads it: ``--random-init`` draws from seed 0)."""

    def __init__(self, model: str, layers: List[str], weights: Optional[str], random_init: bool, device: str,
                 batch_size: Optional[int], keep_errors: bool, expect_weights: Optional[str] = None):
        import ray
        import torch

        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
        if cpus:                 # as many threads as CPUs reserved, whatever OMP_NUM_THREADS the node has
            torch.set_num_threads(max(1, int(cpus)))
        self.encoder = load_encoder(model, weights=weights, device=device, random_init=random_init)
        if expect_weights is not None and weights_digest(self.encoder.network) != expect_weights:
            raise RuntimeError(f"{model}: this Ray worker loaded other weights than the run's settings record "
                               f"(weights {weights or 'default'}): give every node the same weights file")
        self.layers = list(layers)
        self.batch_size = batch_size
        self.keep_errors = keep_errors

    def __call__(self, batch):
        import pyarrow as pa
        import torch

        from .inference.pipeline import describe_error

        enc = self.encoder
        sources = batch.column("source").to_pylist()
        names = batch.column("name").to_pylist()
        errors = batch.column("error").to_pylist()
        wave = batch.column("waveform").combine_chunks()
        off = wave.offsets.to_numpy()
        values = wave.flatten().to_numpy(zero_copy_only=False)
        cuda = enc.device.type == "cuda"
        clips, readable = [], []
        for i, err in enumerate(errors):
            if err is None:
                wav = torch.from_numpy(np.array(values[off[i]: off[i + 1]], np.float32))
                clips.append((sources[i], wav.to(enc.device, non_blocking=cuda), sources[i]))
                readable.append(i)
        embs: Dict[int, object] = {}
        if clips:
            try:
                embs = dict(zip(readable, enc.embed_waveforms(clips, self.layers, self.batch_size)))
            except Exception:  # noqa: BLE001 - one bad file must not stop the others: again one by one
                for i, clip in zip(readable, clips):
                    try:
                        embs[i] = enc.embed_waveforms([clip], self.layers, self.batch_size)[0]
                    except Exception as e:  # noqa: BLE001
                        errors[i] = describe_error(e)
        rows, errs = [], []
        for i in range(len(names)):
            if i in embs:
                rows.append(embedding_row(names[i], sources[i], embs[i]))
                errs.append(None)
                continue
            if not self.keep_errors:
                log.warning("audio_repr.ray: %s failed (no row): %s", sources[i], errors[i])
            else:
                rows.append({"name": names[i], "source": sources[i], "duration_s": float("nan"), "model": enc.name,
                             "layers": self.layers, "clip": np.zeros(0, np.float32),
                             "frames": np.zeros((0, 0), np.float32), "timestamps_ms": np.zeros(0, np.float64)})
                errs.append(errors[i] or "unknown error")
        table = rows_to_table(rows)
        if self.keep_errors:
            table = table.append_column("error", pa.array(errs, pa.string()))
        return table


def embed(paths_or_dataset, model: str, *, layers=None, weights: Optional[str] = None, random_init: bool = False,
          names: Optional[Sequence[str]] = None, num_gpus: float = 0, num_cpus: Optional[float] = None,
          concurrency: Union[int, Tuple[int, int]] = 1, batch_size: Optional[int] = None, files_per_batch: int = 16,
          keep_errors: bool = False, order_by_length: bool = True, _expect_weights: Optional[str] = None):
    """Embed audio files with ``model`` on Ray; returns a lazy ``ray.data.Dataset`` of the Parquet schema
    (``name``, ``source``, ``duration_s``, ``model``, ``layers``, ``clip``, ``frames``, ``timestamps_ms``).

    ``paths_or_dataset``: a list of paths (each read by the workers: on a cluster, paths every node sees), or a
    ``ray.data.Dataset`` with a ``path`` column (optionally ``name``; its other columns are dropped).
    ``names``: the ``name`` of each path (default: the path as given). A list is ordered by length (from the
    file headers, longest first; ``order_by_length=False`` keeps it) so that batches waste little padding.
    ``layers``, ``weights``, ``random_init`` (seed 0, as ``audio-repr --random-init``): as for ``audio_repr.load``
    and ``Encoder.embed``; ``weights`` is a path every node sees. ``concurrency``: model actors (or ``(min, max)``),
    each with ``num_gpus`` GPUs (``> 0``: the model runs on CUDA) and ``num_cpus`` CPUs (Ray's default: 1).
    ``files_per_batch``: files one actor call embeds together; ``batch_size``: pieces per forward pass
    (``None``: the model's choice for the device). ``keep_errors``: keep failed files as rows with an ``error``
    column (else they are logged and dropped).
    """
    ray = _require_ray()
    from .registry import get_card

    card = get_card(model)
    from .models import resolve_model_layers

    names_ = resolve_model_layers(model, layers)
    if files_per_batch < 1:
        raise ValueError(f"files_per_batch must be 1 or more, got {files_per_batch}")
    from .inference.encoder import check_batch_size

    check_batch_size(batch_size)
    if isinstance(paths_or_dataset, ray.data.Dataset):
        if names is not None:
            raise ValueError("names= is for a list of paths: give the Dataset a 'name' column instead")
        ds = paths_or_dataset
        cols = list(ds.schema().names)
        if "path" not in cols:
            raise ValueError(f"the Dataset needs a 'path' column (it has {', '.join(cols)})")
        ds = ds.select_columns([c for c in ("path", "name") if c in cols])
    else:
        sources = [str(p) for p in paths_or_dataset]
        if not sources:
            raise ValueError("no paths given")
        names = sources if names is None else [str(n) for n in names]
        if len(names) != len(sources):
            raise ValueError(f"{len(names)} names for {len(sources)} paths")
        order = list(range(len(sources)))
        if order_by_length:
            from .inference.pipeline import durations

            seconds = durations(sources)
            order.sort(key=lambda i: (-seconds[i], i))
        ds = ray.data.from_items([{"path": os.path.abspath(sources[i]), "source": sources[i], "name": names[i]}
                                  for i in order])
    ds = ds.map_batches(_read_batch, batch_format="pyarrow", batch_size=files_per_batch,
                        fn_kwargs={"sample_rate": card.sample_rate, "resampler": card.resampler})
    pool = (ray.data.ActorPoolStrategy(min_size=int(concurrency[0]), max_size=int(concurrency[1]))
            if isinstance(concurrency, (tuple, list)) else ray.data.ActorPoolStrategy(size=int(concurrency)))
    extra = {} if num_cpus is None else {"num_cpus": num_cpus}
    return ds.map_batches(
        _Embedder, batch_format="pyarrow", batch_size=files_per_batch, compute=pool, num_gpus=num_gpus, **extra,
        fn_constructor_kwargs={"model": model, "layers": names_, "random_init": bool(random_init),
                               "weights": os.path.abspath(os.path.expanduser(weights)) if weights else None,
                               "device": "cuda" if num_gpus else "cpu", "batch_size": batch_size,
                               "keep_errors": keep_errors, "expect_weights": _expect_weights})


def embed_folder(paths: Sequence[str], names: Sequence[str], out_dir, *, model: str, layers=None,
                 weights: Optional[str] = None, random_init: bool = False, settings: Dict,
                 address: Optional[str] = None, batch_size: Optional[int] = None, rows_per_file: int = 1000,
                 skip: Iterable[str] = (), num_gpus: float = 0, num_cpus: Optional[float] = None,
                 concurrency=None, files_per_batch: int = 16, progress: bool = True,
                 actor_timeout_s: float = 300.0, verbose: bool = False) -> Tuple[int, List[Tuple[str, str]]]:
    """The compute of ``audio-repr embed --engine ray`` (:func:`audio_repr.corpus_run.embed_corpus` names the
    inputs, checks and records the run): embed ``paths`` (output names ``names``; those in ``skip`` are already
    done) with :func:`embed` and write the rows from the driver into ``out_dir`` as atomic
    ``part-ray-<run>-<n>.parquet`` files with ``settings`` in their metadata.

    Ray: a :class:`Session` (the instance already initialised in this process, else ``ray.init(address)``, shut
    down again at the end); the cluster must hold one actor's resources (else a ``ValueError`` naming what is
    missing), and actors that cannot start within ``actor_timeout_s`` seconds end the run with a
    ``TimeoutError``. ``concurrency`` (``None``): one actor per GPU of the cluster with ``num_gpus``, else one
    per two CPUs. Returns ``(files embedded, [(path, error)] of the files that failed)``."""
    skip = set(skip)
    todo = [(str(p), str(n)) for p, n in zip(paths, names) if n not in skip]
    if not todo:
        return 0, []
    if not actor_timeout_s > 0:
        raise ValueError(f"actor_timeout_s must be positive, got {actor_timeout_s!r}")
    session = Session(address, verbose=verbose).start()
    ray = session.ray
    ctx = ray.data.DataContext.get_current()
    saved = ctx.enable_progress_bars, ctx.wait_for_min_actors_s
    ctx.enable_progress_bars = bool(progress)
    ctx.wait_for_min_actors_s = max(1, int(np.ceil(actor_timeout_s)))
    failures: List[Tuple[str, str]] = []
    try:
        session.check_resources(num_gpus, num_cpus)
        writer = ParquetStore(Path(out_dir), settings, worker="ray", rows_per_file=rows_per_file)
        if concurrency is None:
            res = ray.cluster_resources()
            concurrency = (max(1, int(res.get("GPU", 0) // num_gpus)) if num_gpus
                           else max(1, int(res.get("CPU", 1)) // 2))
        ds = embed([p for p, _ in todo], model, names=[n for _, n in todo], layers=layers, weights=weights,
                   random_init=random_init, num_gpus=num_gpus, num_cpus=num_cpus, concurrency=concurrency,
                   batch_size=batch_size, files_per_batch=files_per_batch, keep_errors=True,
                   _expect_weights=settings.get("weights") if isinstance(settings, dict) else None)
        import pyarrow.compute as pc

        done = 0
        try:
            for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
                ok = pc.is_null(batch.column("error"))
                bad = batch.filter(pc.invert(ok))
                failures.extend(zip(bad.column("source").to_pylist(), bad.column("error").to_pylist()))
                good = batch.filter(ok).drop_columns(["error"])
                writer.write_table(good)
                done += good.num_rows
        except Exception as e:
            if not _timed_out(e):
                raise
            per = {"CPU": num_cpus or 1, **({"GPU": num_gpus} if num_gpus else {})}
            have = ray.cluster_resources()
            raise TimeoutError(
                f"Ray could not start the model actors ({concurrency} x {per}) within {actor_timeout_s:g} s; the "
                f"cluster has CPU {have.get('CPU', 0):g}, GPU {have.get('GPU', 0):g} (another job may hold them)"
            ) from None
        finally:
            writer.close()   # rows of whole files received so far are kept, even when the job stops (a last part)
        return done, failures
    finally:
        ctx.enable_progress_bars, ctx.wait_for_min_actors_s = saved
        session.stop()
