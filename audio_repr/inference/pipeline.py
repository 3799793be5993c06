"""The corpus pipeline: many files through one encoder, with the device kept busy.

* **read** — files are read, downmixed and resampled to the model's rate in background worker processes
  (a ``torch.utils.data.DataLoader`` over :class:`Reader`; ``num_workers=0`` reads in this process), handed
  over in pinned memory when the model is on a GPU and copied with ``non_blocking=True``;
* **group** — files are ordered by length (from their headers), longest first, and grouped (at most
  ``group_files`` files and ``group_seconds`` of audio, by default 64 and 300 s: several full batches each; a longer
  file alone), so the batches of a group waste little padding; outputs are written group by group, so an
  interrupted run keeps every group but the last; within a group :meth:`Encoder.embed_waveforms` batches the pieces of all its clips;
* **results** — :func:`stream` yields one :class:`Result` per file (in group order) while the workers read the
  next groups; :func:`embed_files` writes them from a writer thread (``concurrent.futures``) while the device
  computes the next group.

A file that cannot be read, or is too short for the model, gives a ``Result`` with its ``error`` (the exception
itself, raised in the reader or the encoder) and does not stop the others. Numbers are those of ``Encoder.embed`` on the same files: bit-identical on a CPU for the same
batch composition (the same resampler runs in the workers), within the batch-invariance bound otherwise.
"""

from __future__ import annotations

import os
import pickle
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..audio import get_resampler, load_audio, to_mono_tensor
from ..fusion import LayerSpec
from .embedding import Embedding

__all__ = ["Result", "Reader", "stream", "embed_files", "default_workers", "durations", "length_groups",
           "check_batch_size", "describe_error"]


@dataclass
class Result:
    """One input of :func:`stream`: its index in the input list, its path, and its embedding or the exception
    that stopped it."""

    index: int
    source: str
    embedding: Optional[Embedding]
    error: Optional[BaseException] = None

    @property
    def reason(self) -> Optional[str]:
        """``"ExceptionType: message"`` of the error (``None`` without one), as failure logs print it."""
        return None if self.error is None else describe_error(self.error)


def describe_error(error: BaseException) -> str:
    """``"ExceptionType: message"``: an error as one line of a failure log."""
    return f"{type(error).__name__}: {error}"


def _picklable(error: Exception) -> Exception:
    """``error`` itself when it crosses a process boundary intact, else a ``RuntimeError`` saying what it was."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:  # noqa: BLE001 - an exception type that cannot be rebuilt from its args
        return RuntimeError(describe_error(error))


class Reader(torch.utils.data.Dataset):
    """``reader[i]`` -> ``(i, mono float32 waveform at the model's rate, None)`` or ``(i, None, the exception)``:
    what a DataLoader worker does for one file (picklable: paths, a rate and a resampler name)."""

    def __init__(self, paths: Sequence[str], sample_rate: int, resampler: str):
        self.paths = [str(p) for p in paths]
        self.sample_rate = int(sample_rate)
        self.resampler = resampler

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Tuple[int, Optional[torch.Tensor], Optional[Exception]]:
        path = self.paths[i]
        try:
            wav, sr = load_audio(path)
            wav = to_mono_tensor(wav, path)
            if sr != self.sample_rate:
                wav = get_resampler(self.resampler)(wav, sr, self.sample_rate)
            return i, wav.contiguous(), None
        except Exception as e:  # noqa: BLE001 - reported per file, never fatal
            return i, None, _picklable(e)


def check_batch_size(batch_size) -> None:
    """``None`` (the model's choice) or a whole number >= 1."""
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer))
                                   or batch_size < 1):
        raise ValueError(f"batch_size must be a whole number >= 1, got {batch_size!r}")


def _keep(group):
    return group


def default_workers(device: Union[str, torch.device] = "cuda") -> int:
    """Reader processes by default. With the model on an accelerator the CPUs only read: every core but one,
    at most 8. With the model on the CPU the readers take cores from it: none on up to 4 cores (2 cores,
    FSDD: one reader made ``audio-repr embed`` 1.2x slower than reading in the main process, 10-s files
    no faster), then one per further 4 cores, at most 4."""
    cores = os.cpu_count() or 2
    if torch.device(device).type != "cpu":
        return max(1, min(8, cores - 1))
    return max(0, min(4, (cores - 4 + 3) // 4))


def durations(paths: Sequence[str]) -> List[float]:
    """Seconds of audio in each file from its header (0 where unreadable: that file fails when read)."""
    import soundfile as sf

    out = []
    for p in paths:
        try:
            info = sf.info(str(p))
            out.append(info.frames / info.samplerate if info.frames > 0 else 0.0)
        except Exception:  # noqa: BLE001 - reported when the file is read
            out.append(0.0)
    return out


def length_groups(seconds: Sequence[float], group_files: int = 64, group_seconds: float = 300.0) -> List[List[int]]:
    """Indices ordered by length, longest first, in groups of at most ``group_files`` files and
    ``group_seconds`` of audio (a longer file is a group of its own)."""
    order = sorted(range(len(seconds)), key=lambda i: (-seconds[i], i))
    groups: List[List[int]] = []
    cur: List[int] = []
    total = 0.0
    for i in order:
        if cur and (len(cur) >= group_files or total + seconds[i] > group_seconds):
            groups.append(cur)
            cur, total = [], 0.0
        cur.append(i)
        total += seconds[i]
    if cur:
        groups.append(cur)
    return groups


def stream(encoder, paths: Sequence[str], *, layers: LayerSpec = None, batch_size: Optional[int] = None,
           num_workers: Optional[int] = None, seconds: Optional[Sequence[float]] = None,
           group_files: int = 64, group_seconds: float = 300.0,
           progress: Optional[Callable[[float], None]] = None, short: str = "error") -> Iterator[Result]:
    """Embed ``paths`` with ``encoder``, one :class:`Result` per file, longest files first.

    ``encoder``: the object that computes (an :class:`~audio_repr.inference.encoder.Encoder`, handed in: this
    module does not import it); used are its ``embed_waveforms``, ``_layers``, ``device``, ``sample_rate`` and
    ``card.resampler``.

    ``num_workers``: reader processes (``None``: :func:`default_workers` for the model's device; 0: read in this
    process).
    ``seconds``: each file's duration if known (else read from the headers). ``progress(seconds)`` is called
    after every batch (see ``Encoder.embed``). ``short``: ``"pad"`` zero-pads clips shorter than the model's
    minimum (see ``Encoder.embed``); ``"error"`` reports them as failed."""
    check_batch_size(batch_size)
    names = encoder._layers(layers)
    paths = [str(p) for p in paths]
    if not paths:
        return
    if seconds is None:
        seconds = durations(paths)
    workers = default_workers(encoder.device) if num_workers is None else int(num_workers)
    cuda = encoder.device.type == "cuda"
    loader = torch.utils.data.DataLoader(
        Reader(paths, encoder.sample_rate, encoder.card.resampler),
        batch_sampler=length_groups(seconds, group_files, group_seconds), collate_fn=_keep,
        num_workers=workers, pin_memory=cuda, prefetch_factor=2 if workers else None)
    for group in loader:
        clips, readable = [], []
        for i, wav, error in group:
            if wav is None:
                yield Result(i, paths[i], None, error)
                continue
            clips.append((paths[i], wav.to(encoder.device, non_blocking=cuda), paths[i]))
            readable.append(i)
        if not clips:
            continue
        try:
            embs = encoder.embed_waveforms(clips, names, batch_size, progress or False, short=short)
        except Exception:  # noqa: BLE001 - one bad file must not stop the others: again one by one
            embs = None
        if embs is not None:
            for i, e in zip(readable, embs):
                yield Result(i, paths[i], e)
            continue
        for i, clip in zip(readable, clips):
            try:
                e = encoder.embed_waveforms([clip], names, batch_size, progress or False, short=short)[0]
                yield Result(i, paths[i], e)
            except Exception as err:  # noqa: BLE001
                yield Result(i, paths[i], None, err)


def embed_files(encoder, paths: Sequence[str], write: Callable[[Result], None], *, pending: int = 64,
                **kwargs) -> Tuple[int, List[Tuple[str, str]]]:
    """:func:`stream` ``paths`` and hand every embedded file to ``write(result)`` on one writer thread (at
    most ``pending`` results wait for it), so writing overlaps the next group's computation.
    Returns ``(files written, [(path, error)] for the files that failed)``."""
    failures: List[Tuple[str, str]] = []
    written = 0
    queue: deque = deque()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="audio-repr-writer") as pool:
        try:
            for r in stream(encoder, paths, **kwargs):
                if r.embedding is None:
                    failures.append((r.source, r.reason or "unknown error"))
                    continue
                queue.append(pool.submit(write, r))
                while len(queue) > pending or (queue and queue[0].done()):
                    queue.popleft().result()
                    written += 1
            while queue:
                queue.popleft().result()
                written += 1
        finally:
            for f in queue:       # on an error or Ctrl-C: writes not started are dropped (the running one
                f.cancel()        # finishes; each is atomic, so a resumed run redoes exactly the rest)
    return written, failures
