"""``PANNsLogMel``: the log-mel of PANNs (torchlibrosa's ``Spectrogram`` + ``LogmelFilterBank``), batched."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .logmel import LogMelSpectrogram

__all__ = ["PANNsLogMel"]


class PANNsLogMel(LogMelSpectrogram):
    """A centred STFT log-mel (a :class:`LogMelSpectrogram`) as the front end of PANNs' ``Cnn14``
    (``qiuqiangkong/audioset_tagging_cnn``, ``pytorch/models.py``, built from torchlibrosa):

    * ``Spectrogram(n_fft, hop_length, win_length=n_fft, window="hann", center=True, pad_mode="reflect",
      power=2.0)``: reflect padding of ``n_fft // 2`` on both sides, a periodic Hann window, power spectrum;
    * ``LogmelFilterBank(sr, n_fft, n_mels, fmin, fmax, ref=1.0, amin=1e-10, top_db=None)``: librosa's
      Slaney mel filters (area-normalised), then ``10 log10(max(x, amin)) - 10 log10(max(amin, ref))``
      (the second term is 0 for ``ref = 1``), no clipping to a dynamic range.

    The STFT is computed as torchlibrosa computes it — a float32 convolution of the waveform with the
    windowed DFT matrix (``omega ** (j k)``, built in float64 as its ``DFTBase``), not an FFT: bins near the
    ``amin`` floor (the stop band of resampled or band-limited audio, pure tones) hold float32 rounding noise,
    whose level differs between an FFT and a direct DFT by whole dB after the log, which ``bn0`` then passes
    on; with the original's arithmetic they agree to float32 rounding.

    The network's ``bn0`` (a BatchNorm over the mel axis) belongs to the network, not to this front end: the
    cards' normalisation is the identity. A clip of ``n`` samples gives ``n // hop_length + 1`` frames.
    """

    def __init__(self, sample_rate: int = 32000, n_fft: int = 1024, hop_length: int = 320, n_mels: int = 64,
                 f_min: float = 50.0, f_max: float = 14000.0, amin: float = 1e-10, ref: float = 1.0):
        super().__init__(sample_rate=sample_rate, n_fft=n_fft, win_length=n_fft, hop_length=hop_length,
                         n_mels=n_mels, f_min=f_min, f_max=f_max, mel_scale="slaney", power=2.0, eps=amin,
                         center=True)
        self.amin, self.ref = float(amin), float(ref)
        self.db_offset = 10.0 * math.log10(max(self.amin, self.ref))
        n_freq = n_fft // 2 + 1
        x, y = np.meshgrid(np.arange(n_fft), np.arange(n_fft))
        dft = np.power(np.exp(-2 * np.pi * 1j / n_fft), x * y)[:, :n_freq]                 # [n_fft, n_freq]
        win = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)                    # periodic Hann
        kernel = dft * win[:, None]
        self.register_buffer("dft_real", torch.tensor(np.real(kernel).T, dtype=torch.float32)[:, None, :],
                             persistent=False)
        self.register_buffer("dft_imag", torch.tensor(np.imag(kernel).T, dtype=torch.float32)[:, None, :],
                             persistent=False)

    def window_frames(self, padded: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Log-mel frames (dB) ``start..stop-1`` of edge-padded waveforms ``padded`` [B, M]."""
        if stop <= start:
            return self._no_frames(padded)
        seg = self._span(padded, start, stop).float()
        lead = seg.shape[:-1]
        seg = seg.reshape(-1, 1, seg.shape[-1])
        real = F.conv1d(seg, self.dft_real, stride=self.hop_length)                       # [B, n_freq, T]
        imag = F.conv1d(seg, self.dft_imag, stride=self.hop_length)
        power = (real ** 2 + imag ** 2).transpose(-1, -2)                                 # [B, T, n_freq]
        mel = torch.matmul(power, self.fb).transpose(-1, -2).reshape(*lead, self.n_mels, -1)
        out = 10.0 * torch.log10(torch.clamp(mel, min=self.amin))
        return out - self.db_offset if self.db_offset else out
