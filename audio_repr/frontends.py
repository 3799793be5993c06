"""Batched spectrogram front ends that run on the model's device.

Every front end here is an ``nn.Module`` with:

* ``frames_for(n_samples) -> int``: how many feature frames a clip of ``n_samples`` gives;
* ``forward(wavs [B, N]) -> features [B, F, T]`` on zero-padded batches. Frames beyond a clip's
  own ``frames_for(length)`` are not meaningful and are masked by the caller;
* ``window_frames(padded, start, stop) -> [B, F, stop - start]``: frames ``start..stop-1`` of
  a clip from its *already edge-padded* waveform, which lets the encoder work on long audio
  piece by piece with results identical to the whole-file computation.

and the attributes ``hop_length`` (samples between frames), ``n_fft`` (samples one frame spans)
and optionally ``frame_offset_ms`` (time of frame 0's centre; 0 for centred STFTs).

Centre padding (reflect) is applied to each clip at its own true length before batching
(``edge_pad``), so a clip gives the same frames alone or inside a padded batch.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LogMelSpectrogram", "htk_mel_filterbank", "slaney_mel_filterbank"]


def _hz_to_mel_htk(f):
    return 2595.0 * math.log10(1.0 + f / 700.0)


def _triangles(all_freqs: torch.Tensor, f_pts: torch.Tensor) -> torch.Tensor:
    """Triangular filters with corners ``f_pts`` [n_mels + 2], sampled at ``all_freqs``: [n_freqs, n_mels]."""
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts[None, :] - all_freqs[:, None]
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    return torch.clamp(torch.minimum(down, up), min=0.0)


def htk_mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float) -> torch.Tensor:
    """HTK-scale triangular mel filters without area normalisation, [n_freqs, n_mels] (float32).

    Same construction as torchaudio's ``melscale_fbanks(..., norm=None, mel_scale="htk")``:
    corners equally spaced on the HTK mel scale, FFT bin frequencies ``linspace(0, sr // 2, n_freqs)``.
    """
    n_freqs = n_fft // 2 + 1
    all_freqs = torch.linspace(0, sample_rate // 2, n_freqs)
    m_pts = torch.linspace(_hz_to_mel_htk(f_min), _hz_to_mel_htk(f_max), n_mels + 2)
    f_pts = 700.0 * (10.0 ** (m_pts / 2595.0) - 1.0)
    return _triangles(all_freqs, f_pts)


def slaney_mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float) -> torch.Tensor:
    """Slaney-scale, area-normalised mel filters as nnAudio builds them, [n_freqs, n_mels] (float32).

    Taken from nnAudio itself (a runtime dependency) so the filters are bit-identical to the
    originals that used ``nnAudio.features.MelSpectrogram``.
    """
    from nnAudio.librosa_functions import get_mel  # type: ignore

    fb = get_mel(sample_rate, n_fft, n_mels, f_min, f_max, htk=False, norm=1)
    return torch.as_tensor(fb, dtype=torch.float32).T.contiguous()


class LogMelSpectrogram(nn.Module):
    """``log(mel(|STFT|^power) + eps)`` on batches, centre-padded per clip.

    Args mirror torchaudio/nnAudio: periodic Hann window of ``win_length`` (zero-padded to
    ``n_fft`` in the middle when shorter), ``center=True`` with reflect padding of ``n_fft // 2``.
    ``mel_scale`` is ``"htk"`` (no filter normalisation: torchaudio's default) or ``"slaney"``
    (area-normalised: nnAudio's default and librosa's).
    """

    def __init__(self, sample_rate: int = 16000, n_fft: int = 1024, win_length: Optional[int] = None,
                 hop_length: int = 160, n_mels: int = 64, f_min: float = 60.0, f_max: float = 7800.0,
                 mel_scale: str = "htk", power: float = 2.0, eps: float = float(torch.finfo(torch.float32).eps),
                 center: bool = True):
        super().__init__()
        self.sample_rate, self.n_fft, self.hop_length = sample_rate, n_fft, hop_length
        self.win_length = win_length or n_fft
        self.n_mels, self.power, self.eps, self.center = n_mels, power, eps, center
        self.mel_scale = mel_scale
        if mel_scale == "htk":
            fb = htk_mel_filterbank(sample_rate, n_fft, n_mels, f_min, f_max)
        elif mel_scale == "slaney":
            fb = slaney_mel_filterbank(sample_rate, n_fft, n_mels, f_min, f_max)
        else:
            raise ValueError(f"mel_scale must be 'htk' or 'slaney', got {mel_scale!r}")
        self.register_buffer("fb", fb, persistent=False)
        win = torch.hann_window(self.win_length, periodic=True)
        if self.win_length < n_fft:
            left = (n_fft - self.win_length) // 2
            win = F.pad(win, (left, n_fft - self.win_length - left))
        self.register_buffer("window", win, persistent=False)

    # --- geometry -------------------------------------------------------------------------
    @property
    def pad(self) -> int:
        return self.n_fft // 2 if self.center else 0

    def frames_for(self, n_samples: int) -> int:
        if self.center:
            return n_samples // self.hop_length + 1
        return max(0, (n_samples - self.n_fft) // self.hop_length + 1)

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
        need = (stop - 1) * self.hop_length + self.n_fft
        seg = padded[..., start * self.hop_length: need]
        if seg.shape[-1] < need - start * self.hop_length:
            seg = F.pad(seg, (0, need - start * self.hop_length - seg.shape[-1]))
        return self._logmel_nocenter(seg)

    def _logmel_nocenter(self, seg: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(seg.float(), self.n_fft, hop_length=self.hop_length, win_length=self.n_fft,
                          window=self.window, center=False, return_complex=True)
        if self.power == 2.0:
            mag = spec.real.square() + spec.imag.square()
        elif self.power == 1.0:
            mag = spec.abs()
        else:
            mag = spec.abs().pow(self.power)
        mel = torch.matmul(mag.transpose(-1, -2), self.fb).transpose(-1, -2)
        return torch.log(mel + self.eps)

    def forward(self, wavs: torch.Tensor, lengths: Optional[Sequence[int]] = None) -> torch.Tensor:
        """[B, N] (zero-padded, true ``lengths``) -> [B, n_mels, frames_for(N)]."""
        if wavs.ndim == 1:
            wavs = wavs[None]
        lengths = list(lengths) if lengths is not None else [wavs.shape[-1]] * wavs.shape[0]
        n = wavs.shape[-1]
        padded = wavs.new_zeros((wavs.shape[0], n + 2 * self.pad))
        for i, L in enumerate(lengths):
            padded[i, : L + 2 * self.pad] = self.edge_pad(wavs[i, :L])
        return self.window_frames(padded, 0, self.frames_for(n))
