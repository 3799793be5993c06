"""Batched spectrogram front ends that run on the model's device, behind one interface: :class:`FrontEnd`.

* :class:`~audio_repr.frontends.logmel.LogMelSpectrogram`: centred STFT log-mel (BYOL-A: HTK mel as
  torchaudio; MSM-MAE: Slaney mel as nnAudio);
* :class:`~audio_repr.frontends.kaldi.KaldiFbank`: Kaldi ``compute-fbank-feats`` (AST);
* :class:`~audio_repr.frontends.vggish.VGGishLogMel`: VGGish's log-mel examples;
* :class:`~audio_repr.frontends.decibel.DecibelMelSpectrogram`: torchaudio's mel spectrogram in dB with a floor
  ``top_db`` below the clip's loudest value (Dasheng, CED);
* :class:`~audio_repr.frontends.waveform.Waveform`: the samples themselves (wav2vec 2.0 family, Whisper), and
  :class:`~audio_repr.frontends.whisper.WhisperLogMel`, Whisper's log-mel of a 30-s window (run by its network);
* :func:`~audio_repr.frontends.filterbanks.mel_filterbank`: the one mel filterbank builder they share.
"""

from __future__ import annotations

import abc
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["FrontEnd", "LogMelSpectrogram", "DecibelMelSpectrogram", "KaldiFbank", "VGGishLogMel", "MelStyle", "STYLES",
           "mel_filterbank", "htk_mel_filterbank", "slaney_mel_filterbank", "kaldi_mel_filterbank", "vggish_mel_matrix",
           "Waveform", "WhisperLogMel"]


class FrontEnd(nn.Module, abc.ABC):
    """What the encoder needs of a front end: waveforms at ``sample_rate`` in, features ``[B, n_mels, T]`` out.

    Geometry (plain attributes, in samples unless named otherwise):

    * ``sample_rate``: the rate the front end expects;
    * ``hop_length``: samples between the starts of consecutive frames;
    * ``frame_length``: samples one frame spans in the prepared (``edge_pad``) waveform: frame ``t``
      is computed from samples ``[t * hop_length, t * hop_length + frame_length)`` of it and from
      nothing else;
    * ``fft_size``: the FFT length (a frame is zero-padded to it when longer than ``frame_length``);
    * ``frame_offset_ms``: time of frame 0's centre in the clip: 0 for centred front ends, half a frame
      for front ends whose frames start at the clip's first sample;
    * ``n_mels``: feature bands; ``fb`` the ``[fft_size // 2 + 1, n_mels]`` mel filters.

    Methods: ``frames_for(n)`` (frames a clip of ``n`` samples gives), ``min_samples(k)`` (fewest samples
    that give at least ``k`` frames: ``frames_for(min_samples(k)) >= k > frames_for(min_samples(k) - 1)``),
    ``edge_pad(wav)`` (prepares one clip at its own length: centre padding, mean removal...),
    ``window_frames(padded, start, stop)`` (frames ``start..stop-1`` of prepared waveforms; computing
    a long clip piece by piece gives the whole-clip frames), ``clip_reference(padded)`` / ``apply_reference(frames,
    refs)`` (what frames depend on beyond their own samples, from the whole clip: nothing by default) and
    ``forward(wavs, lengths)`` (a
    zero-padded batch, each clip prepared at its true length; frames past a clip's own
    ``frames_for(length)`` are not meaningful).
    """

    sample_rate: int
    hop_length: int
    frame_length: int
    fft_size: int
    n_mels: int
    frame_offset_ms: float
    compute_dtype: torch.dtype
    fb: torch.Tensor

    def __init__(self, *, sample_rate: int, hop_length: int, frame_length: int, fft_size: int, n_mels: int,
                 centred: bool, compute_dtype: torch.dtype = torch.float32):
        super().__init__()
        self.sample_rate, self.hop_length, self.frame_length = sample_rate, hop_length, frame_length
        self.fft_size, self.n_mels, self.compute_dtype = fft_size, n_mels, compute_dtype
        self.frame_offset_ms = 0.0 if centred else 1000.0 * (frame_length / 2.0) / sample_rate

    def __getattr__(self, name: str):
        if name == "n_fft":   # the name once meant the frame span here, the FFT length elsewhere
            raise AttributeError(f"{type(self).__name__} has no n_fft: frame_length is the samples one frame spans, "
                                 f"fft_size the FFT length")
        return super().__getattr__(name)

    # --- the interface -----------------------------------------------------------------------
    @abc.abstractmethod
    def frames_for(self, n_samples: int) -> int:
        """Feature frames a clip of ``n_samples`` gives."""

    @abc.abstractmethod
    def min_samples(self, n_frames: int) -> int:
        """Fewest samples that give at least ``n_frames`` frames (0 for ``n_frames <= 0``)."""

    @abc.abstractmethod
    def edge_pad(self, wav: torch.Tensor) -> torch.Tensor:
        """One clip [N] prepared at its own length for ``window_frames``."""

    @abc.abstractmethod
    def window_frames(self, padded: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Frames ``start..stop-1`` of prepared waveforms ``padded`` [B, M] (zeros past their end) -> [B, n_mels, T]."""

    def clip_reference(self, padded: torch.Tensor) -> Optional[torch.Tensor]:
        """What every frame of one clip depends on beyond its own samples, from the whole clip prepared by
        ``edge_pad`` (``[M]``), e.g. the loudest frame a decibel floor is relative to
        (:class:`~audio_repr.frontends.decibel.DecibelMelSpectrogram`); ``None`` (the default): nothing, a frame
        depends on its own samples only."""
        return None

    def apply_reference(self, frames: torch.Tensor, refs: Sequence[Optional[torch.Tensor]]) -> torch.Tensor:
        """``window_frames`` output ``[B, n_mels, T]`` of rows taken from clips whose ``clip_reference`` are
        ``refs`` (one per row) -> the features (the default: unchanged)."""
        return frames

    def forward(self, wavs: torch.Tensor, lengths: Optional[Sequence[int]] = None) -> torch.Tensor:
        """[B, N] (zero-padded, true ``lengths``) -> [B, n_mels, frames_for(N)]."""
        if wavs.ndim == 1:
            wavs = wavs[None]
        n = wavs.shape[-1]
        lengths = list(lengths) if lengths is not None else [n] * wavs.shape[0]
        clips: List[torch.Tensor] = [self.edge_pad(wavs[i, :L]) for i, L in enumerate(lengths)]
        prepared = wavs.new_zeros((wavs.shape[0], max([n] + [c.shape[-1] for c in clips])))
        for i, c in enumerate(clips):
            prepared[i, : c.shape[-1]] = c
        return self.apply_reference(self.window_frames(prepared, 0, self.frames_for(n)),
                                    [self.clip_reference(c) for c in clips])

    # --- shared geometry for subclasses --------------------------------------------------------
    def _whole_frames(self, n_samples: int) -> int:
        """Frames lying wholly inside ``n_samples`` samples (no padding)."""
        return 0 if n_samples < self.frame_length else 1 + (n_samples - self.frame_length) // self.hop_length

    def _samples_for_whole_frames(self, n_frames: int) -> int:
        """Fewest samples holding ``n_frames`` whole frames: the inverse of :meth:`_whole_frames`."""
        return 0 if n_frames <= 0 else (n_frames - 1) * self.hop_length + self.frame_length

    def _span(self, padded: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """The samples frames ``start..stop-1`` span in ``padded`` [..., M], zero-filled past its end."""
        lo = start * self.hop_length
        need = (stop - 1 - start) * self.hop_length + self.frame_length
        seg = padded[..., lo: lo + need]
        return F.pad(seg, (0, need - seg.shape[-1])) if seg.shape[-1] < need else seg

    def _no_frames(self, padded: torch.Tensor) -> torch.Tensor:
        return padded.new_zeros((*padded.shape[:-1], self.n_mels, 0), dtype=torch.float32)

    def _dtype_on(self, device: torch.device) -> torch.dtype:
        """``compute_dtype``, or float32 on a device without float64 (MPS)."""
        return self.compute_dtype if device.type != "mps" else torch.float32


# The front ends import FrontEnd from this module: they come after it.
from .filterbanks import (STYLES, MelStyle, htk_mel_filterbank, kaldi_mel_filterbank,  # noqa: E402
                          mel_filterbank, slaney_mel_filterbank, vggish_mel_matrix)
from .kaldi import KaldiFbank  # noqa: E402
from .logmel import LogMelSpectrogram  # noqa: E402
from .vggish import VGGishLogMel  # noqa: E402
from .efficientat import EfficientATMel  # noqa: E402
from .panns import PANNsLogMel  # noqa: E402
from .decibel import DecibelMelSpectrogram  # noqa: E402
from .waveform import Waveform  # noqa: E402
from .whisper import WhisperLogMel  # noqa: E402
