"""``KaldiFbank``: Kaldi ``compute-fbank-feats`` (as ``torchaudio.compliance.kaldi.fbank``), AST's front end."""

from __future__ import annotations

import torch

from . import FrontEnd
from .filterbanks import kaldi_mel_filterbank

__all__ = ["KaldiFbank"]


def _kaldi_window(kind: str, n: int) -> torch.Tensor:
    if kind == "hanning":        # symmetric: 0.5 - 0.5 cos(2 pi i / (n - 1))
        return torch.hann_window(n, periodic=False, dtype=torch.float64)
    if kind == "hamming":
        return torch.hamming_window(n, periodic=False, alpha=0.54, beta=0.46, dtype=torch.float64)
    if kind == "povey":
        return torch.hann_window(n, periodic=False, dtype=torch.float64).pow(0.85)
    if kind == "rectangular":
        return torch.ones(n, dtype=torch.float64)
    raise ValueError(f"window must be 'hanning', 'hamming', 'povey' or 'rectangular', got {kind!r}")


class KaldiFbank(FrontEnd):
    """Kaldi ``compute-fbank-feats`` (as ``torchaudio.compliance.kaldi.fbank``) on batches, on any device.

    Per frame of ``frame_length_ms`` every ``frame_shift_ms`` (``snip_edges``: only frames that fit in
    the clip): remove the frame's DC offset, pre-emphasis ``x[i] - k x[i-1]`` (``x[-1] = x[0]``), window
    (Kaldi's symmetric ``'hanning'`` by default), zero-pad to the next power of two, power spectrum,
    Kaldi mel filters, ``log(max(e, float32 eps))``. No dither, no energy column. Output ``[B, n_mels, T]``.

    A frame spans ``frame_length`` (= ``win_length``) samples; the FFT length is ``fft_size``.
    ``subtract_clip_mean``: ``edge_pad`` removes each clip's mean first, as AST's data loader does
    (``wav - wav.mean()``) before calling torchaudio. ``dtype`` is the precision of the framing, FFT
    and filters (float64 by default, float32 where the device has no float64, e.g. MPS); features are
    returned in float32. float32 throughout (torchaudio's own precision) is off by up to ~1e-3 in the
    log of weak mel bands next to loud ones (cancellation in the FFT), float64 by ~1e-6.
    """

    def __init__(self, sample_rate: int = 16000, frame_length_ms: float = 25.0, frame_shift_ms: float = 10.0,
                 n_mels: int = 128, low_freq: float = 20.0, high_freq: float = 0.0, preemphasis: float = 0.97,
                 remove_dc_offset: bool = True, window: str = "hanning", round_to_power_of_two: bool = True,
                 subtract_clip_mean: bool = True, dtype: torch.dtype = torch.float64):
        win_length = int(sample_rate * frame_length_ms * 0.001)
        super().__init__(sample_rate=sample_rate, hop_length=int(sample_rate * frame_shift_ms * 0.001),
                         frame_length=win_length, n_mels=n_mels, centred=False, compute_dtype=dtype,
                         fft_size=2 ** (win_length - 1).bit_length() if round_to_power_of_two else win_length)
        self.win_length = win_length
        self.preemphasis, self.remove_dc_offset = float(preemphasis), remove_dc_offset
        self.subtract_clip_mean = subtract_clip_mean
        self.eps = float(torch.finfo(torch.float32).eps)
        self.register_buffer("window", _kaldi_window(window, win_length).to(dtype), persistent=False)
        fb = kaldi_mel_filterbank(sample_rate, self.fft_size, n_mels, low_freq, high_freq, dtype=dtype)
        self.register_buffer("fb", fb, persistent=False)

    def frames_for(self, n_samples: int) -> int:
        return self._whole_frames(n_samples)

    def min_samples(self, n_frames: int) -> int:
        return self._samples_for_whole_frames(n_frames)

    def edge_pad(self, wav: torch.Tensor) -> torch.Tensor:
        """No edge padding (``snip_edges``); removes the clip's mean when ``subtract_clip_mean``."""
        return wav - wav.mean() if self.subtract_clip_mean and wav.numel() else wav

    def window_frames(self, padded: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Frames ``start..stop-1`` of prepared (``edge_pad``) waveforms ``padded`` [B, M] -> [B, n_mels, T]."""
        if stop <= start:
            return self._no_frames(padded)
        seg = self._span(padded, start, stop)
        dtype = self._dtype_on(seg.device)
        window, fb = self.window.to(dtype), self.fb.to(dtype)
        x = seg.to(dtype).unfold(-1, self.win_length, self.hop_length)   # [B, T, win]
        if self.remove_dc_offset:
            x = x - x.mean(dim=-1, keepdim=True)
        if self.preemphasis != 0.0:
            x = torch.cat([x[..., :1] * (1.0 - self.preemphasis),
                           x[..., 1:] - self.preemphasis * x[..., :-1]], dim=-1)
        spec = torch.fft.rfft(x * window, n=self.fft_size)
        power = spec.real.square() + spec.imag.square()
        mel = torch.matmul(power, fb)
        return torch.log(torch.clamp(mel, min=self.eps)).transpose(-1, -2).float()
