"""The encoder: a card's front end and backbone behind one interface — inputs, resampling, normalisation,
batching with true lengths, long-audio pieces, layer selection, pooling and timestamps. Nothing here knows a
particular family: what the encoder needs of one, its backbone states (``audio_repr.models.base.Backbone``)
and its front end states (``audio_repr.frontends.FrontEnd``).

``embed`` runs in three stages:

* **plan** — read and resample every input, check its length, edge-pad it once, cut its feature frames into
  pieces following the backbone's :class:`~audio_repr.models.base.Tiling` (context pieces: ``chunk_frames``
  each with ``context_frames`` of real context on both sides, whose outputs are dropped, so the stitched result
  equals the whole-clip computation; or the model's own independent windows), and compute per-clip
  statistics where the normalisation asks for them;
* **run** — pieces of all clips, longest first, in batches of ``batch_size``: features, normalisation, the
  backbone, the selected layers cut to each piece's own steps and fused; progress after every batch; on a CPU
  glibc's malloc thresholds fixed once per process (256 MB: short clips' batches reuse their heap blocks), a
  long input run under smaller thresholds (16 / 32 MB) and its heap trimmed only past a bound and at its end;
* **assemble** — each clip's pieces in order, timestamps from one frame grid, the clip embedding from the
  backbone's pooling rule.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from ..audio import AudioError, as_path, check_sample_rate, get_resampler, load_audio, to_mono_tensor
from ..fusion import LayerSpec, fuse, mean_max_pool, resolve_layers
from ..models.base import Backbone, TextTower, Tiling, length_mask
from ..registry import ModelCard, Normalisation
from .embedding import Embedding
from .pipeline import check_batch_size, durations, stream
from .stats import RunningMoments

__all__ = ["Encoder", "Embedding"]

Clip = Tuple[str, torch.Tensor, Optional[str]]      # (display name, mono waveform at the model's rate, source path)
SHORT = ("error", "pad")    # what embed does with a clip shorter than the model's minimum


def check_short(short) -> None:
    if short not in SHORT:
        raise ValueError(f"short={short!r}: expected 'error' (refuse clips shorter than the model's minimum) or "
                         "'pad' (zero-pad them, centred, to the minimum)")


@dataclass
class _Piece:
    clip: int
    start: int   # first core frame
    stop: int    # one past the last core frame
    left: int    # context frames before start
    right: int   # context frames after stop
    last: bool

    @property
    def n_frames(self) -> int:
        return self.left + (self.stop - self.start) + self.right


@dataclass
class _Plan:
    clips: List[Clip]
    layers: List[str]                # the selected layers, in output order
    strides: Dict[str, int]
    padded: List[torch.Tensor]       # each clip edge-padded once
    refs: List[Optional[torch.Tensor]]   # each clip's FrontEnd.clip_reference (None: frames need nothing more)
    n_frames: List[int]              # each clip's feature frames
    pieces: List[_Piece]
    per_clip: Optional[List[Tuple[float, float]]]   # per-clip (mean, std) when the normalisation asks for it

    @property
    def output_stride(self) -> int:
        """The coarsest selected stride (front-end frames per output step): the output grid."""
        return max(self.strides.values())


def frame_grid_ms(start: int, steps: int, stride: int, window: int, hop_ms: float, offset_ms: float) -> torch.Tensor:
    """Centres (ms) of ``steps`` output steps of ``stride`` front-end frames from frame ``start``, each reading
    ``window`` frames: computed from indices, so long inputs do not drift."""
    i = torch.arange(steps, dtype=torch.float64)
    return offset_ms + (start + i * stride + (window - 1) / 2.0) * hop_ms


def _pool_token(frames, piece_vectors, owned):
    w = torch.tensor(owned, dtype=torch.float32)
    return (torch.stack(list(piece_vectors)).cpu() * (w / w.sum())[:, None]).sum(dim=0)


#: clip embedding from (frames [T, D], per-piece clip vectors, frames each piece owns), by Backbone.clip_pooling
POOLERS: Dict[str, Callable] = {
    "mean_max": lambda frames, vectors, owned: mean_max_pool(frames),
    "mean": lambda frames, vectors, owned: frames.mean(dim=-2),
    "token": _pool_token,
}


class Encoder(nn.Module):
    """A pretrained audio encoder with a uniform interface (see :func:`audio_repr.load`)."""

    def __init__(self, card: ModelCard, frontend: nn.Module, network: Backbone):
        super().__init__()
        if network.clip_pooling not in POOLERS:
            raise ValueError(f"{card.name}: unknown clip_pooling {network.clip_pooling!r} (expected one of {list(POOLERS)})")
        self.card = card
        self.frontend = frontend
        self.network = network
        #: how long input is cut into pieces (the backbone's; may be changed, e.g. smaller pieces for less memory)
        self.tiling: Tiling = network.tiling
        self.register_buffer("norm_mean", torch.tensor(0.0), persistent=False)
        self.register_buffer("norm_divisor", torch.tensor(1.0), persistent=False)
        self.normalisation = card.normalisation

    # ---- the card ----------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.card.name

    @property
    def sample_rate(self) -> int:
        return self.card.sample_rate

    @property
    def layer_names(self) -> List[str]:
        return list(self.network.layer_dims)

    @property
    def layer_dims(self) -> Dict[str, int]:
        return dict(self.network.layer_dims)

    @property
    def embedding_size(self) -> int:
        return self.network.layer_dims[self.card.default_layer]

    def frame_hop_ms(self, layer: Optional[str] = None) -> float:
        s = self.network.layer_strides[layer or self.card.default_layer]
        return s * self.frontend.hop_length * 1000.0 / self.sample_rate

    def output_size(self, layers: LayerSpec = None) -> int:
        return sum(self.network.layer_dims[n] for n in self._layers(layers))

    @property
    def device(self) -> torch.device:
        return self.norm_mean.device

    @property
    def dtype(self) -> torch.dtype:
        p = next(self.network.parameters(), None)
        return p.dtype if p is not None else torch.float32

    def extra_repr(self) -> str:
        return f"name={self.name!r}, sample_rate={self.sample_rate}, layers={self.layer_names}"

    def _layers(self, layers: LayerSpec) -> List[str]:
        return resolve_layers(layers, self.layer_names, self.card.default_layer, self.card.fusion_layers)

    def default_batch_size(self) -> int:
        """Full-length pieces per batch when ``embed`` is not told: the card's CPU choice on a CPU, 16 on an
        accelerator. Where the card sets a frame budget for CPUs (``cpu_batch_frames``: BYOL-A, whose
        activations outgrow the caches at a few pieces), ``embed`` fills each batch with as many pieces as fit
        in it (:meth:`batch_budget`) and this is the count of full-length pieces that fit (at least one)."""
        budget = self.batch_budget()
        if budget is not None:
            return max(1, budget // self._full_piece_frames())
        return self.card.cpu_batch_size if self.device.type == "cpu" else 16

    def batch_budget(self) -> Optional[int]:
        """Front-end frames per padded batch by default (``None``: a fixed count of pieces)."""
        return self.card.cpu_batch_frames if self.device.type == "cpu" else None

    def _full_piece_frames(self) -> int:
        t = self.tiling
        return t.chunk_frames + 2 * t.context_frames + t.overlap_frames

    # ---- normalisation -----------------------------------------------------------------------
    @property
    def normalisation(self) -> Normalisation:
        """``(x - mean) / (scale * std)`` of the features, or per-clip statistics (see :class:`Normalisation`)."""
        return self._normalisation

    @normalisation.setter
    def normalisation(self, value: Normalisation) -> None:
        if not isinstance(value, Normalisation):
            raise TypeError(f"expected a Normalisation, got {type(value).__name__}")
        self._normalisation = value
        self.norm_mean.fill_(float(value.mean))
        self.norm_divisor.fill_(float(value.divisor))

    def set_norm_stats(self, mean: float, std: float) -> None:
        """Fix the normalisation statistics (the recipe's scale is kept: AST still divides by 2 std)."""
        self.normalisation = self.normalisation.fixed(mean, std)

    @property
    def norm_stats(self) -> Tuple[float, float]:
        """(mean, std) of the fixed normalisation, as given (the buffers hold them in float32)."""
        return self.normalisation.mean, self.normalisation.std

    @torch.inference_mode()
    def calibrate(self, audio, sr=None) -> Tuple[float, float]:
        """Set the feature mean/std from a dataset's clips (as the original evaluations do): the mean and
        (population) standard deviation over every time-frequency value of every clip. Returns ``(mean, std)``."""
        clips = self._prepare(audio, sr)[0]
        m = RunningMoments()
        for _, wav, _ in clips:
            for feats in self._feature_chunks(wav):
                m.add(feats)
        if not m.n:
            raise AudioError("calibrate() needs at least one clip")
        mean, std = m.mean_std(ddof=0)
        self.set_norm_stats(mean, std)
        return mean, std

    def _features(self, wav: torch.Tensor) -> torch.Tensor:
        """Un-normalised front-end features [F, T] of one mono clip at the model's rate."""
        fe = self.frontend
        T = fe.frames_for(wav.shape[-1])
        padded = fe.edge_pad(wav)
        return fe.apply_reference(fe.window_frames(padded[None], 0, T), [fe.clip_reference(padded)])[0]

    def _feature_chunks(self, wav: torch.Tensor, frames: int = 4096):
        """``_features(wav)`` in consecutive blocks of ``frames`` frames (bounded memory for long clips)."""
        fe = self.frontend
        T = fe.frames_for(wav.shape[-1])
        padded = fe.edge_pad(wav)
        ref = [fe.clip_reference(padded)]
        for a in range(0, T, frames):
            yield fe.apply_reference(fe.window_frames(padded[None], a, min(T, a + frames)), ref)[0]

    def _clip_stats(self, wav: torch.Tensor) -> Tuple[float, float]:
        """Mean and Bessel-corrected std (as torch's ``x.std()`` in the originals) of one clip's features: the
        per-clip statistics ``embed`` uses (streamed, bounded memory; :func:`_batch_clip_stats` is the same
        statistic on a padded batch, differentiable, for ``forward``)."""
        m = RunningMoments()
        for feats in self._feature_chunks(wav):
            m.add(feats)
        if not m.n:
            raise AudioError("no feature frames to normalise")
        return m.mean_std(ddof=1)

    # ---- inputs ------------------------------------------------------------------------------
    def _prepare(self, audio, sr) -> Tuple[List[Tuple[str, torch.Tensor, Optional[str]]], bool]:
        """-> [(display name, mono waveform at the model's rate on its device, source path or None)], single.

        ``sr``: the input sample rate of the arrays/tensors (a positive whole number of Hz: an int, a numpy
        integer or an integral float), or for a list of inputs a list/tuple (or 1-D numpy array) of one rate
        per input. Files always use their own rate (from their header): a scalar ``sr`` does not apply to
        them (though it is checked), and in a list of rates their entry must be ``None``.
        """
        single = not isinstance(audio, (list, tuple))
        items = [audio] if single else list(audio)
        if not items:
            raise AudioError("no audio given (empty list)")
        rates, per_item = self._input_rates(sr, len(items), single)
        out = []
        for i, (item, rate) in enumerate(zip(items, rates)):
            name = f"audio[{i}]" if not single else "audio"
            name, wav, source, in_sr = self._read_input(item, rate, name, i, per_item)
            out.append((name, self._to_model_rate(wav.to(self.device), in_sr, name), source))
        return out, single

    def _model_rate_note(self) -> str:
        return f"the model's rate is {self.sample_rate} Hz and inputs are resampled to it"

    def _input_rates(self, sr, n_items: int, single: bool) -> Tuple[list, bool]:
        """-> (one input rate per item, whether ``sr`` was given per item)."""
        if isinstance(sr, np.ndarray) and sr.ndim == 1:
            sr = list(sr)
        if not isinstance(sr, (list, tuple)):
            return [sr] * n_items, False
        if single:
            raise AudioError(f"sr is a list of {len(sr)} sample rates but audio is a single input: pass its one "
                             f"input sample rate (a list of rates is for a list of inputs, one rate each)")
        if len(sr) != n_items:
            raise AudioError(f"sr has {len(sr)} sample rates but there are {n_items} inputs: pass one input "
                             f"sample rate per input (None for a file), or one rate for all the arrays")
        return list(sr), True

    def _read_input(self, item, rate, name: str, i: int, per_item: bool):
        """One input -> (display name, mono waveform, source path or None, its sample rate)."""
        is_file = isinstance(item, (str, bytes, os.PathLike))     # bytes: a path as os.fsencode gives it
        in_sr = None
        if rate is not None:
            if is_file and per_item:
                raise AudioError(f"{name}: a file is read at the file's own sample rate (from its header), so "
                                 f"sr[{i}] must be None, got {rate!r}")
            try:                    # also for a file, which uses its own rate: a bad sr is a mistake anyway
                in_sr = check_sample_rate(rate, "input sample rate")
            except AudioError as e:
                raise AudioError(f"{name}: {e}; {self._model_rate_note()}") from None
        if is_file:
            item = as_path(item, name)
            name = str(item)
            wav, in_sr = load_audio(item)
            return name, to_mono_tensor(wav, name), name, in_sr
        if rate is None:
            where = f"sr[{i}] is None" if per_item else "embed(wav, sr=...)"
            raise AudioError(f"{name}: a waveform array needs its input sample rate: {where} "
                             f"({self._model_rate_note()})")
        return name, to_mono_tensor(item, name), None, in_sr

    def _to_model_rate(self, wav: torch.Tensor, in_sr: int, name: str) -> torch.Tensor:
        """Resample ``wav`` from ``in_sr`` to the model's rate with the card's resampler."""
        if in_sr == self.sample_rate:
            return wav
        try:
            return get_resampler(self.card.resampler)(wav, in_sr, self.sample_rate)
        except AudioError as e:
            raise AudioError(f"{name}: cannot resample from the input sample rate {in_sr} Hz to the "
                             f"model's rate {self.sample_rate} Hz: {e}") from e

    def waveforms(self, audio, sr: Optional[int] = None) -> Union[torch.Tensor, List[torch.Tensor]]:
        """What ``embed`` feeds its front end: each input read, downmixed and resampled (with the card's
        resampler) to the model's rate, on its device. One tensor, or a list for a list input."""
        clips, single = self._prepare(audio, sr)
        wavs = [w for _, w, _ in clips]
        return wavs[0] if single else wavs

    # ---- the model on batches -----------------------------------------------------------------
    def forward(self, wavs: torch.Tensor, lengths: Optional[Sequence[int]] = None) -> Dict[str, torch.Tensor]:
        """Every layer for a padded batch of waveforms [B, N] at the model's rate (differentiable).

        Returns ``{layer: [B, T_layer, D_layer]}``; frames past a clip's own length are not meaningful.
        """
        if wavs.ndim == 1:
            wavs = wavs[None]
        lengths = list(lengths) if lengths is not None else [wavs.shape[-1]] * wavs.shape[0]
        x = self.frontend(wavs, lengths)
        n_frames = torch.tensor([self.frontend.frames_for(L) for L in lengths], device=x.device)
        stats = None
        if self.normalisation.per_clip:
            mean, std = _batch_clip_stats(x, n_frames)
            stats = (mean, std * self.normalisation.scale)
        outs = self._network(x, n_frames, stats)
        for n in self.network.headed_layers:                # each frame through its head, as embed's frames
            outs[n] = self.network.apply_head(n, outs[n])
        return outs

    def _network(self, feats: torch.Tensor, n_frames: torch.Tensor,
                 stats: Optional[Tuple[torch.Tensor, torch.Tensor]] = None) -> Dict[str, torch.Tensor]:
        """Normalise features [B, F, T] by ``stats`` = (mean, divisor) (default: the fixed ones), apply the
        padding rule past each row's length, run the backbone."""
        if stats is None:
            stats = (self.norm_mean, self.norm_divisor)
        mean, div = (s.reshape(-1, 1, 1) if s.ndim else s for s in stats)
        need = max(self.network.in_frames(int(n)) for n in n_frames.tolist())
        if need > feats.shape[-1]:
            feats = torch.nn.functional.pad(feats, (0, need - feats.shape[-1]))
        valid = length_mask(n_frames.to(feats.device), feats.shape[-1])[:, None, :]
        pad_value = self.tiling.pad_value
        if pad_value is None:                               # zero after normalisation
            x = ((feats - mean) / div) * valid.to(feats.dtype)
        else:                                               # a raw value, then normalised
            x = (torch.where(valid, feats, torch.full_like(feats, pad_value)) - mean) / div
        return self.network(x.to(self.dtype), n_frames)

    # ---- embed: plan -> run -> assemble ---------------------------------------------------------
    @torch.inference_mode()
    def embed(self, audio, sr=None, *, layers: LayerSpec = None, batch_size: Optional[int] = None,
              progress: Union[bool, Callable[[float], None]] = False,
              num_workers: int = 0, short: str = "error") -> Union[Embedding, List[Embedding]]:
        """Embed a clip or a list of clips (paths, 1-D/2-D arrays or tensors).

        ``sr``: the input sample rate of arrays and tensors (files use their own): one rate, or for a list of
        inputs a list with one rate per input (``None`` for files). ``layers``: ``None`` (standard output),
        ``"fusion"``, ``"all"``, or names/indices. Several layers are max-pooled over time to the coarsest
        one's resolution and concatenated. ``batch_size``: pieces per batch (``None``:
        :meth:`default_batch_size`). ``progress``: ``True`` for a bar over pieces, or a function called after
        each batch with the seconds of audio it finished (long files report as they go).
        A list of paths (and no ``sr``) goes through the corpus pipeline (:mod:`audio_repr.inference.pipeline`):
        read group by group, longest first, so memory holds one group's audio, not the whole list's;
        ``num_workers`` reader processes read the next groups meanwhile (0: in this process).
        ``short``: a clip shorter than the model's minimum (:meth:`min_samples`) raises an ``AudioError``
        (``"error"``, the default) or is zero-padded, centred, to that minimum (``"pad"``, as EVAR and HEAR
        pad short clips); its ``timestamps_ms`` stay on the clip's own time line (the padding's left part is
        subtracted: the first frames may lie before 0 ms) and ``duration_s`` is the clip's own.
        Returns an :class:`Embedding` (a list of them for a list input).
        """
        check_batch_size(batch_size)
        check_short(short)
        names = self._layers(layers)
        if (isinstance(audio, (list, tuple)) and len(audio) > 1 and sr is None
                and all(isinstance(a, (str, os.PathLike)) for a in audio)):
            return self._embed_paths([str(a) for a in audio], names, batch_size, progress, num_workers, short)
        clips, single = self._prepare(audio, sr)
        embs = self.embed_waveforms(clips, names, batch_size, progress, short=short)
        return embs[0] if single else embs

    def _embed_paths(self, paths: List[str], names: List[str], batch_size, progress, num_workers,
                     short: str = "error") -> List[Embedding]:
        for p in paths:                              # before any work, as for a single file
            if not os.path.exists(p):
                raise FileNotFoundError(f"audio file not found: {p}")
        seconds = durations(paths)
        bar = _progress(sum(seconds), progress is True, self.name, unit="audio s")
        report = progress if callable(progress) else (bar.update if bar is not None else None)
        out: List[Optional[Embedding]] = [None] * len(paths)
        try:
            for r in stream(self, paths, layers=names, batch_size=batch_size, num_workers=num_workers,
                            seconds=seconds, progress=report, short=short):
                if r.error is not None:          # an AudioError's message already names the file
                    if type(r.error) is AudioError and r.source in str(r.error):
                        raise r.error
                    raise AudioError(f"{r.source}: {r.reason}") from r.error
                out[r.index] = r.embedding
            if bar is not None:
                bar.update(bar.total - bar.n)            # float sums of the pieces' shares: end exactly at the total
        finally:
            if bar is not None:
                bar.close()
        return out

    # ---- audio-text models (CLAP) ----------------------------------------------------------------
    @property
    def has_text(self) -> bool:
        """Whether the model has a text tower (:meth:`embed_text`, :func:`audio_repr.zero_shot`)."""
        return isinstance(self.network, TextTower)

    @torch.inference_mode()
    def embed_text(self, texts: Union[str, Sequence[str]], *, batch_size: Optional[int] = 64) -> torch.Tensor:
        """Texts -> ``[N, D]`` L2-normalised vectors in the joint space of the ``joint`` layer (one string: ``[1, D]``),
        float32 on the CPU, ``batch_size`` texts at a time (each is tokenised to the model's fixed context, so the
        numbers do not depend on the batch). Only for models with a text tower (:attr:`has_text`)."""
        if not self.has_text:
            from ..models import _meta_network
            from ..registry import list_models

            with_text = [n for n in list_models() if isinstance(_meta_network(n), TextTower)]
            raise ValueError(f"{self.name} has no text tower: embed_text needs an audio-text model "
                             f"({', '.join(with_text) or 'none registered'})")
        items = [texts] if isinstance(texts, str) else list(texts)
        if not items:
            raise ValueError("embed_text needs at least one text (got an empty list)")
        bad = [i for i, t in enumerate(items) if not isinstance(t, str) or not t.strip()]
        if bad:
            raise ValueError(f"embed_text takes non-empty strings; item {bad[0]} is {items[bad[0]]!r}")
        check_batch_size(batch_size)
        batch_size = 64 if batch_size is None else int(batch_size)
        was_training = self.training
        self.eval()
        try:
            out = [self.network.embed_text(items[a: a + batch_size]).to("cpu", torch.float32)
                   for a in range(0, len(items), batch_size)]
        finally:
            self.train(was_training)
        return torch.cat(out)

    def tag(self, audio, sr=None, *, top_k: int = 5, batch_size: Optional[int] = None):
        """The ``top_k`` labels of each input's clip-level ``logits`` with their scores (sigmoid, as the
        originals); long clips: the maximum over whole-length windows. See :func:`audio_repr.inference.tagging.tag`."""
        from .tagging import tag

        return tag(self, audio, sr=sr, top_k=top_k, batch_size=batch_size)

    @torch.inference_mode()
    def embed_waveforms(self, clips: List[Clip], layers: LayerSpec = None, batch_size: Optional[int] = None,
                        progress: Union[bool, Callable[[float], None]] = False,
                        short: str = "error") -> List[Embedding]:
        """``embed`` of clips already read and resampled: ``[(name, mono waveform at the model's rate, source
        path or None)]`` (the corpus pipeline reads files in worker processes and hands their waveforms here).
        ``short``: as for :meth:`embed`."""
        check_short(short)
        shifts = None
        if short == "pad":
            clips, shifts = self._pad_short(clips)
        if self.device.type == "cpu":
            _heap_policy()                  # once per process (glibc's thresholds: no page-fault storm per batch)
        long_heap = self.device.type == "cpu" and self._long_input(clips) and _long_input_thresholds(True)
        try:
            plan = self._plan(clips, self._layers(layers))
            results, vectors = self._run(plan, batch_size, progress)
            embs = self._assemble(plan, results, vectors)
        finally:
            if long_heap:
                _long_input_thresholds(False)
        for e, (left, n) in zip(embs, shifts or []):
            if left is not None:                 # back on the clip's own time line, with its own duration
                e.timestamps_ms = e.timestamps_ms - 1000.0 * left / self.sample_rate
                e.duration_s = n / self.sample_rate
        return embs

    def _long_input(self, clips: List[Clip]) -> bool:
        """Whether a clip is long: more than :data:`LONG_INPUT_PIECES` pieces (:func:`_long_input_thresholds`)."""
        if not clips:
            return False
        longest = max(c[1].shape[-1] for c in clips)
        return len(self._pieces(0, self.frontend.frames_for(longest))) > LONG_INPUT_PIECES

    def min_samples(self) -> int:
        """The fewest samples (at the model's rate) a clip needs to give the network its minimum of frames."""
        return int(self.frontend.min_samples(self.network.min_frames))

    def _pad_short(self, clips: List[Clip]) -> Tuple[List[Clip], List[Tuple[Optional[int], int]]]:
        """Clips shorter than :meth:`min_samples` zero-padded, centred, to it; -> (clips, [(left padding or
        None when untouched, original samples)])."""
        need = self.min_samples()
        out, shifts = [], []
        for name, wav, source in clips:
            n = wav.shape[-1]
            if n >= need:
                out.append((name, wav, source))
                shifts.append((None, n))
                continue
            left = (need - n) // 2
            out.append((name, torch.nn.functional.pad(wav, (left, need - n - left)), source))
            shifts.append((left, n))
        return out, shifts

    def _plan(self, clips: List[Clip], names: List[str]) -> _Plan:
        fe = self.frontend
        padded, refs, n_frames, pieces = [], [], [], []
        for ci, (name, wav, _) in enumerate(clips):
            T = self.check_min_length(name, wav)
            padded.append(fe.edge_pad(wav))
            refs.append(fe.clip_reference(padded[-1]))      # e.g. the clip's loudest frame, for a dB floor
            n_frames.append(T)
            pieces.extend(self._pieces(ci, T))
        per_clip = [self._clip_stats(w) for _, w, _ in clips] if self.normalisation.per_clip else None
        return _Plan(clips, names, {n: self.network.layer_strides[n] for n in names}, padded, refs, n_frames, pieces,
                     per_clip)

    def check_min_length(self, name: str, wav: torch.Tensor) -> int:
        """The feature frames of waveform ``wav`` (at the model's rate); raises the one "too short" error, naming
        the input ``name``, when they are fewer than the backbone's ``min_frames``."""
        fe = self.frontend
        T = fe.frames_for(wav.shape[-1])
        need = self.network.min_frames
        if T < need:
            min_ms = 1000.0 * fe.min_samples(need) / self.sample_rate
            raise AudioError(f"{name}: {1000.0 * wav.shape[-1] / self.sample_rate:.1f} ms of audio is too short "
                             f"for {self.name}: it needs at least {min_ms:.0f} ms")
        return T

    def _pieces(self, clip: int, n_frames: int) -> List[_Piece]:
        """Cut a clip of ``n_frames`` feature frames into pieces (see :class:`~audio_repr.models.base.Tiling`)."""
        stride = self.network.max_stride
        tiling = self.tiling
        chunk = max(stride, (tiling.chunk_frames // stride) * stride)
        context = -(-tiling.context_frames // stride) * stride
        overlap = tiling.overlap_frames
        pieces = []
        if tiling.independent_windows and overlap > 0:
            # independent windows of chunk + overlap frames every chunk frames (each also reads the overlap's
            # real frames after its own); the last window owns the rest when it fits in chunk + overlap frames
            a = 0
            while a < n_frames:
                last = n_frames <= a + chunk + overlap
                b = n_frames if last else a + chunk
                pieces.append(_Piece(clip, a, b, 0, 0 if last else overlap, last))
                a = b
            return pieces
        for a in range(0, n_frames, chunk):
            b = min(n_frames, a + chunk)
            pieces.append(_Piece(clip, a, b, min(context, a), min(context, n_frames - b), b == n_frames))
        return pieces

    def _core(self, p: _Piece, n_frames: int, layer: str) -> int:
        """How many output steps of ``layer`` belong to piece ``p`` (the rest is context)."""
        s = self.network.layer_strides[layer]
        if self.tiling.independent_windows:
            return self.network.out_frames(p.stop - p.start, layer)
        # the whole clip's steps that start in [start, stop): the clip has out_frames(n_frames) of them (n // s
        # by default; fewer for a valid convolution stack, whose last step needs samples past its stride)
        total = self.network.out_frames(n_frames, layer)
        return max(0, min(p.stop // s, total) - p.start // s)

    def _batches(self, pieces: List[_Piece], batch_size: Optional[int]) -> List[List[int]]:
        """Piece indices in batches, longest first: ``batch_size`` at a time, or by default (``None``) the
        card's count, or as many as fit in the frame budget of :meth:`batch_budget` (at least one, at most
        256), counting the padded size (pieces x the batch's longest)."""
        order = sorted(range(len(pieces)), key=lambda i: -pieces[i].n_frames)
        budget = self.batch_budget() if batch_size is None else None
        if budget is None:
            n = int(batch_size) if batch_size is not None else self.default_batch_size()
            return [order[b: b + n] for b in range(0, len(order), n)]
        batches, b = [], 0
        while b < len(order):
            longest = max(pieces[order[b]].n_frames, self.tiling.min_piece_frames, 1)
            n = min(256, max(1, budget // longest))
            batches.append(order[b: b + n])
            b += n
        return batches

    def _run(self, plan: _Plan, batch_size: Optional[int], progress) -> Tuple[Dict, Dict]:
        """Every piece through the backbone, longest first, in the batches of :meth:`_batches`. Returns each
        piece's fused output steps ``{(clip, start): [steps, D]}`` (own memory, on the CPU) and, for token
        pooling, its clip vector."""
        pieces = plan.pieces
        batches = self._batches(pieces, batch_size)
        long_audio = len(pieces) > max(len(plan.clips), len(batches[0]))   # some clip is split into many pieces
        heap_bound = None           # long audio: the free heap after its first batch (its working set) + a margin
        results: Dict[Tuple[int, int], torch.Tensor] = {}
        vectors: Dict[Tuple[int, int], torch.Tensor] = {}
        report = progress if callable(progress) else None
        bar = _progress(len(pieces), progress is True, self.name)
        was_training = self.training
        self.eval()
        try:
            for indices in batches:
                batch = [pieces[i] for i in indices]
                self._run_batch(plan, batch, results, vectors)
                if long_audio:      # trim only when the free heap grew past its first batch's by a margin
                    heap_bound = _trim_between_batches(heap_bound)
                if bar is not None:
                    bar.update(len(batch))
                if report is not None:
                    report(self._batch_seconds(plan, batch))
            if long_audio:          # the end of a long input: hand back what its batches freed
                _release_free_heap()
        finally:
            self.train(was_training)
            if bar is not None:
                bar.close()
        return results, vectors

    def _run_batch(self, plan: _Plan, batch: List[_Piece], results: Dict, vectors: Dict) -> None:
        """One batch of pieces: features, normalisation, the backbone; each piece's own steps into ``results``
        (and its clip vector into ``vectors`` for token pooling)."""
        token = self.network.clip_pooling == "token"
        feats = self._piece_features(batch, plan.padded, plan.refs)
        lens = torch.tensor([p.n_frames for p in batch], device=feats.device)
        outs = self._network(feats, lens, self._piece_stats(plan, batch, feats.device))
        tok = outs.clip if token else None
        if token and tok is None:
            raise ValueError(f"{self.name}: a backbone with clip_pooling='token' must return LayerOutputs.clip")
        # one copy to the host per batch and layer (each piece's steps are cut from it there)
        host = {n: outs[n].to("cpu", torch.float32) for n in plan.layers}
        host_tok = torch.cat([tok[n].to("cpu", torch.float32) for n in plan.layers], dim=-1) if token else None
        del outs, tok, feats
        for j, p in enumerate(batch):
            r = self._piece_steps(plan, p, {n: host[n][j] for n in plan.layers})
            # own the memory: a view would keep the whole batch output (context included) alive
            results[(p.clip, p.start)] = r.clone() if r._base is not None else r
            if host_tok is not None:
                vectors[(p.clip, p.start)] = host_tok[j].clone()

    def _piece_stats(self, plan: _Plan, batch: List[_Piece], device) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
        """Per-clip (mean, divisor) of each piece's clip, when the normalisation is per clip (else ``None``)."""
        if plan.per_clip is None:
            return None
        scale = self.normalisation.scale
        return (torch.tensor([plan.per_clip[p.clip][0] for p in batch], device=device),
                torch.tensor([plan.per_clip[p.clip][1] * scale for p in batch], device=device))

    def _piece_steps(self, plan: _Plan, p: _Piece, outputs: Dict[str, torch.Tensor]) -> torch.Tensor:
        """A piece's own output steps of each selected layer (its context cut off), fused into one [steps, D]."""
        strides = plan.strides
        parts = {}
        for n in plan.layers:
            s = strides[n]
            core = self._core(p, plan.n_frames[p.clip], n)
            parts[n] = outputs[n][p.left // s: p.left // s + core]
        return fuse(parts, strides) if len(plan.layers) > 1 else parts[plan.layers[0]]

    def _batch_seconds(self, plan: _Plan, batch: List[_Piece]) -> float:
        """The seconds of audio the batch's pieces own (their share of the clip)."""
        return sum(plan.clips[p.clip][1].shape[-1] / self.sample_rate * (p.stop - p.start) / plan.n_frames[p.clip]
                   for p in batch)

    def _assemble(self, plan: _Plan, results: Dict, vectors: Dict) -> List[Embedding]:
        names, strides, target = plan.layers, plan.strides, plan.output_stride
        fe = self.frontend
        slices, c = {}, 0
        for n in names:
            d = self.network.layer_dims[n]
            slices[n] = (c, c + d)
            c += d
        hop_ms = fe.hop_length * 1000.0 / self.sample_rate
        coarsest = next(n for n in names if strides[n] == target)
        window = self.network.layer_windows.get(coarsest, target)
        pool = POOLERS[self.network.clip_pooling]
        embs = []
        by_clip: Dict[int, List[_Piece]] = {}
        for p in plan.pieces:                          # planned once, in each clip's order
            by_clip.setdefault(p.clip, []).append(p)
        for ci, (name, wav, source) in enumerate(plan.clips):
            ps = by_clip[ci]
            sizes = [results[(ci, p.start)].shape[0] for p in ps]
            # filled piece by piece as the pieces are released: the output is held once, not twice
            frames = torch.empty((sum(sizes), results[(ci, ps[0].start)].shape[-1]), dtype=torch.float32)
            stamps, piece_vectors, owned = [], [], []
            at = released = 0
            for p, size in zip(ps, sizes):
                f = results.pop((ci, p.start))
                frames[at: at + size] = f
                at += size
                released += f.numel() * f.element_size()
                del f
                if released > HEAP_FREE_BOUND_BYTES:    # a long clip: its released pieces' heap back to the OS as
                    _release_free_heap()                # the output fills (kept free, the output came on top: +1 GB
                    released = 0                        # at 60 minutes of BYOL-A v2)
                if vectors:
                    piece_vectors.append(vectors.pop((ci, p.start)))
                    owned.append(p.stop - p.start)
                stamps.append(frame_grid_ms(p.start, size, target, window, hop_ms, fe.frame_offset_ms))
            clip = self._apply_heads(frames, pool(frames, piece_vectors, owned), slices)
            embs.append(Embedding(frames=frames, timestamps_ms=torch.cat(stamps),
                                  clip=clip, layers=names, model=self.name,
                                  layer_slices=slices, duration_s=wav.shape[-1] / self.sample_rate, source=source))
        return embs

    def _apply_heads(self, frames: torch.Tensor, clip: torch.Tensor, slices: Dict[str, Tuple[int, int]]) -> torch.Tensor:
        """The clip-level heads of the backbone's ``headed_layers`` on the pooled clip vector and on the frames
        (in place), after pooling: their clip vector is the head of the pooled input, as the original computes it."""
        for n, (a, b) in slices.items():
            if n in self.network.headed_layers:          # copied back into the float32 host tensors
                frames[:, a:b] = self.network.apply_head(n, frames[:, a:b])
                clip[a:b] = self.network.apply_head(n, clip[a:b])
        return clip

    def _piece_features(self, batch: List[_Piece], padded: List[torch.Tensor],
                        refs: List[Optional[torch.Tensor]]) -> torch.Tensor:
        fe = self.frontend
        span = [(p.start - p.left, p.stop + p.right) for p in batch]
        segs = []
        for p, (f0, f1) in zip(batch, span):
            segs.append(padded[p.clip][f0 * fe.hop_length: (f1 - 1) * fe.hop_length + fe.frame_length])
        longest = max(s.shape[-1] for s in segs)
        stack = segs[0].new_zeros((len(segs), longest))
        for j, s in enumerate(segs):
            stack[j, : s.shape[-1]] = s
        frames = max(max(f1 - f0 for f0, f1 in span), self.tiling.min_piece_frames)
        return fe.apply_reference(fe.window_frames(stack, 0, frames), [refs[p.clip] for p in batch])


def _batch_clip_stats(x: torch.Tensor, n_frames: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-row (mean, Bessel-corrected std) of features ``x`` [B, F, T] over each row's own ``n_frames``: the
    per-clip statistics of :meth:`Encoder._clip_stats` computed on a padded batch, on its device, differentiable."""
    valid = length_mask(n_frames, x.shape[-1])[:, None, :]
    count = valid.sum(dim=(1, 2)) * x.shape[1]
    mean = (x * valid).sum(dim=(1, 2)) / count
    # Bessel-corrected, as torch's x.std() that the originals apply to their batch
    var = (((x - mean[:, None, None]) * valid) ** 2).sum(dim=(1, 2)) / (count - 1).clamp(min=1)
    return mean, var.sqrt()



#: the heap policy on a CPU (glibc only; see :func:`_heap_policy`): malloc's mmap and trim thresholds, and the
#: free heap a long input may keep between batches before it is trimmed
HEAP_THRESHOLD_BYTES = 256 << 20
HEAP_FREE_BOUND_BYTES = 64 << 20
#: the thresholds while a call with a long input runs (mmap 16 MB, trim twice that; measured against glibc's own
#: ceilings of 32 / 64 MB: see :func:`_long_input_thresholds`), and what is long: a clip of more pieces than this
LONG_INPUT_MMAP_BYTES, LONG_INPUT_TRIM_BYTES = 16 << 20, 32 << 20
LONG_INPUT_PIECES = 8
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3        # glibc's mallopt parameters (malloc.h)
_LIBC = None
_HEAP_SET = False
_HEAP_ACTIVE = False        # the policy's thresholds are in force (set by _heap_policy)


def _glibc():
    """glibc's ``libc`` (ctypes) with ``mallopt``/``malloc_trim``, or ``False`` elsewhere (musl, macOS, Windows)."""
    global _LIBC
    if _LIBC is None:
        _LIBC = False
        try:
            import ctypes
            import ctypes.util

            name = ctypes.util.find_library("c")
            lib = ctypes.CDLL(name) if name else None
            if lib is not None and all(hasattr(lib, f) for f in ("gnu_get_libc_version", "mallopt", "malloc_trim")):
                if hasattr(lib, "mallinfo2"):
                    class MallInfo2(ctypes.Structure):
                        _fields_ = [(f, ctypes.c_size_t) for f in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                                                   "usmblks", "fsmblks", "uordblks", "fordblks",
                                                                   "keepcost")]
                    lib.mallinfo2.restype = MallInfo2
                _LIBC = lib
        except OSError:  # pragma: no cover
            pass
    return _LIBC


def _heap_policy() -> bool:
    """Fix glibc malloc's thresholds, once per process, when an encoder first runs on a CPU: ``mallopt``
    ``M_MMAP_THRESHOLD`` and ``M_TRIM_THRESHOLD`` at :data:`HEAP_THRESHOLD_BYTES` (256 MB). Returns whether set.

    By default glibc serves a block over its mmap threshold (128 kB at first, raised up to 32 MB as such blocks
    are freed) with a fresh ``mmap`` and hands it back on ``free``, and trims the heap's top past twice that
    threshold: the activations of every batch (MBs each) were mapped, faulted in page by page and unmapped again,
    150-550k minor page faults per run in some processes and none in others (BYOL-A on 200 one-second clips: 0.33
    or 0.67 s, by process). With the thresholds fixed, freed activations stay in the heap and the next batch
    reuses them (hundreds of faults). Not done when the user chose malloc's settings (``MALLOC_*_`` or
    ``GLIBC_TUNABLES`` in the environment) or sets ``AUDIO_REPR_MALLOPT=0``; a no-op where the C library is
    not glibc. Other allocations of the process get the same thresholds (what ``MALLOC_MMAP_THRESHOLD_`` does)."""
    global _HEAP_SET
    if _HEAP_SET:
        return False
    _HEAP_SET = True
    env = os.environ
    if env.get("AUDIO_REPR_MALLOPT", "1") == "0" or "GLIBC_TUNABLES" in env or any(
            k in env for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
                               "MALLOC_MMAP_MAX_")):
        return False
    global _HEAP_ACTIVE
    _HEAP_ACTIVE = _set_thresholds(HEAP_THRESHOLD_BYTES, HEAP_THRESHOLD_BYTES)
    return _HEAP_ACTIVE


def _set_thresholds(mmap_bytes: int, trim_bytes: int) -> bool:
    lib = _glibc()
    if not lib:
        return False
    return bool(lib.mallopt(_M_MMAP_THRESHOLD, mmap_bytes)) & bool(lib.mallopt(_M_TRIM_THRESHOLD, trim_bytes))


def _long_input_thresholds(on: bool) -> bool:
    """While a call with a long input runs (``on``: its plan, batches and assembly), smaller thresholds
    (:data:`LONG_INPUT_MMAP_BYTES` 16 MB, :data:`LONG_INPUT_TRIM_BYTES` 32 MB) instead of the policy's 256 MB, and
    what the heap kept free until then handed back; the policy's again after it (``on=False``). Only where
    :func:`_heap_policy` set the thresholds (never against the user's settings). Returns whether set.

    Short clips gain from the 256 MB thresholds (their batches reuse the same heap blocks, no faults); a long
    input's batches leave their kept results between the freed activations, and in a heap that keeps blocks up to
    256 MB the next batch's blocks no longer fit the holes: 10 minutes through AST at ``batch_size=8`` peaked at
    1.48 GB, BYOL-A v1 at 0.69 GB. With glibc's own ceilings (32 / 64 MB) the blocks between 16 and 32 MB still
    fragmented it (AST 0.66-0.67 GB, BYOL-A v1 0.48-0.53 GB, above the tree before issue 29); at 16 / 32 MB AST
    is at 0.35 GB and BYOL-A v1 at 0.41-0.47 GB, as before (docs/benchmarks.md, issue 29). A long input's batches
    are large, so the faults of its mapped blocks cost a small share of its time (AST +4%; BYOL-A v1 at its
    default batch, 10 minutes: 2.0-2.5 s, against 1.5-1.7 s at 32 MB and 4.0 s before issue 29)."""
    if not _HEAP_ACTIVE:
        return False
    if not on:
        return _set_thresholds(HEAP_THRESHOLD_BYTES, HEAP_THRESHOLD_BYTES)
    # what the 256 MB heap kept free until now (earlier calls' blocks, the reading of this input) would not fit
    # this input's blocks: handed back
    switched = _set_thresholds(LONG_INPUT_MMAP_BYTES, LONG_INPUT_TRIM_BYTES)
    _release_free_heap()
    return switched


def _free_heap_bytes() -> Optional[int]:
    """Free bytes glibc's heap holds (``mallinfo2().fordblks``, glibc >= 2.33), or ``None`` where unknown."""
    lib = _glibc()
    if not lib or not hasattr(lib, "mallinfo2"):
        return None
    return int(lib.mallinfo2().fordblks)


def _release_free_heap(bound: Optional[int] = None) -> bool:
    """Give the C heap's free pages back to the OS (glibc ``malloc_trim``; a no-op elsewhere) when it holds
    more than ``bound`` free bytes (``None``: always). Returns whether it trimmed.

    Long audio runs many batches whose large, short-lived activations alternate with the small per-piece
    results that are kept: the kept results pin the heap the activations were freed into, so without a trim
    the resident size climbs with the audio's length (AST, 20 min on a CPU: 1.7 GB instead of 0.8 GB).
    Trimming after every batch kept it flat but handed back the pages the next batch faults in again;
    trimming only past ``bound`` keeps the growth bounded by the batch's working set plus ``bound``."""
    lib = _glibc()
    if not lib:
        return False
    if bound is not None:
        free = _free_heap_bytes()
        if free is not None and free <= bound:
            return False
    lib.malloc_trim(0)
    return True


def _trim_between_batches(bound: Optional[int]) -> int:
    """After a batch of a long input: the first call notes the free heap the batch left (its working set) plus
    :data:`HEAP_FREE_BOUND_BYTES` as the bound (-1 where unknown) and trims nothing; later calls trim when the
    free heap passes that bound (always where it is unknown). Returns the bound."""
    if bound is None:
        free = _free_heap_bytes()
        return -1 if free is None else free + HEAP_FREE_BOUND_BYTES
    _release_free_heap(bound if bound >= 0 else None)
    return bound


def _progress(total: float, enabled: bool, desc: str, unit: str = "piece"):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover
        return None
    if unit == "piece":
        return tqdm(total=total, desc=desc, unit=unit)
    return tqdm(total=total, desc=desc, unit=unit,
                bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} " + unit + " [{elapsed}<{remaining}]")
