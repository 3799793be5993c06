"""``LogMelSpectrogram``: centred STFT log-mel as torchaudio (HTK mel: BYOL-A) or nnAudio (Slaney mel: MSM-MAE)."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from . import FrontEnd
from .filterbanks import mel_filterbank

__all__ = ["LogMelSpectrogram"]


class LogMelSpectrogram(FrontEnd):
    """``log(mel(|STFT|^power) + eps)`` on batches, centre-padded per clip.

    Args mirror torchaudio/nnAudio: ``n_fft`` is the FFT length (``fft_size``), periodic Hann window of
    ``win_length`` (zero-padded to ``n_fft`` in the middle when shorter), ``center=True`` with reflect
    padding of ``n_fft // 2``. A frame spans ``frame_length = n_fft`` samples of the padded waveform.
    ``mel_scale`` is ``"htk"`` (no filter normalisation: torchaudio's default) or ``"slaney"``
    (area-normalised: nnAudio's default and librosa's).
    """

    def __init__(self, sample_rate: int = 16000, n_fft: int = 1024, win_length: Optional[int] = None,
                 hop_length: int = 160, n_mels: int = 64, f_min: float = 60.0, f_max: float = 7800.0,
                 mel_scale: str = "htk", power: float = 2.0, eps: float = float(torch.finfo(torch.float32).eps),
                 center: bool = True):
        if mel_scale not in ("htk", "slaney"):
            raise ValueError(f"mel_scale must be 'htk' or 'slaney', got {mel_scale!r}")
        super().__init__(sample_rate=sample_rate, hop_length=hop_length, frame_length=n_fft, fft_size=n_fft,
                         n_mels=n_mels, centred=center)
        self.win_length = win_length or n_fft
        self.power, self.eps, self.center = power, eps, center
        self.mel_scale = mel_scale
        self.register_buffer("fb", mel_filterbank(sample_rate, n_fft, n_mels, f_min, f_max, mel_scale),
                             persistent=False)
        win = torch.hann_window(self.win_length, periodic=True)
        if self.win_length < n_fft:
            left = (n_fft - self.win_length) // 2
            win = F.pad(win, (left, n_fft - self.win_length - left))
        self.register_buffer("window", win, persistent=False)

    @property
    def n_fft(self) -> int:
        """The FFT length (torchaudio's name for ``fft_size``)."""
        return self.fft_size

    # --- geometry -------------------------------------------------------------------------
    @property
    def pad(self) -> int:
        return self.n_fft // 2 if self.center else 0

    def frames_for(self, n_samples: int) -> int:
        if self.center:
            return n_samples // self.hop_length + 1
        return self._whole_frames(n_samples)

    def min_samples(self, n_frames: int) -> int:
        if not self.center:
            return self._samples_for_whole_frames(n_frames)
        return 0 if n_frames <= 0 else (n_frames - 1) * self.hop_length

    def edge_pad(self, wav: torch.Tensor) -> torch.Tensor:
        """Centre padding of one clip [N] at its own length (reflect, falling back to zeros when too short)."""
        p = self.pad
        if p == 0:
            return wav
        if wav.shape[-1] > p:
            return F.pad(wav[None, None], (p, p), mode="reflect")[0, 0]
        return F.pad(wav, (p, p))

    # --- computation ----------------------------------------------------------------------
    def window_frames(self, padded: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Log-mel frames ``start..stop-1`` of edge-padded waveforms ``padded`` [B, M]."""
        if stop <= start:
            return self._no_frames(padded)
        return torch.log(self.mel_frames(padded, start, stop) + self.eps)

    def mel_frames(self, padded: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """The mel spectrogram (``|STFT|^power`` through the filterbank, before any log) of frames
        ``start..stop-1`` (``stop > start``) of edge-padded waveforms ``padded`` [B, M]: [B, n_mels, frames]. The
        one STFT-and-filterbank step of this front end and the ones built on it (dB mel, ATST's)."""
        seg = self._span(padded, start, stop)
        spec = torch.stft(seg.float(), self.n_fft, hop_length=self.hop_length, win_length=self.n_fft,
                          window=self.window, center=False, return_complex=True)
        if self.power == 2.0:
            mag = spec.real.square() + spec.imag.square()
        elif self.power == 1.0:
            mag = spec.abs()
        else:
            mag = spec.abs().pow(self.power)
        return torch.matmul(mag.transpose(-1, -2), self.fb).transpose(-1, -2)

