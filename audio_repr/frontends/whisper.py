"""``WhisperLogMel``: Whisper's log-mel spectrogram of 30-s windows, batched on the device.

Whisper's feature extractor (OpenAI's ``log_mel_spectrogram``, transformers' ``WhisperFeatureExtractor``): a
clip is zero-padded (or cut) to 30 s = 480000 samples at 16 kHz; STFT with n_fft 400, hop 160, a periodic Hann
window, centred with reflect padding of 200 samples at both ends of the padded window; the last of the 3001
frames dropped (3000 frames, 10 ms apart); power spectrum; 80 or 128 Slaney mel bands (librosa's
``filters.mel(sr=16000, n_fft=400)``, area-normalised, 0..8000 Hz); ``log10(max(mel, 1e-10))``; clamped below
at the window's maximum - 8; ``(x + 4) / 4``.

This module takes windows already padded with zeros to 480000 samples (``[B, 480000]``) and returns
``[B, n_mels, 3000]``. The maximum is each window's own (over its mel bands and its 3000 frames, the
padding's included, as the originals compute it), so a window's features depend on nothing else in the batch.
It is not a :class:`~audio_repr.frontends.FrontEnd`: the window-wide clamp needs the whole window, so
Whisper's network (:mod:`audio_repr.models.whisper`) runs it on each window it reads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .filterbanks import slaney_mel_filterbank

__all__ = ["WhisperLogMel", "WINDOW_SAMPLES", "WINDOW_FRAMES"]

WINDOW_SAMPLES = 480000      # 30 s at 16 kHz
WINDOW_FRAMES = 3000         # mel frames of one window (10 ms apart)


class WhisperLogMel(nn.Module):
    """``[B, 480000]`` zero-padded 30-s windows -> Whisper's normalised log-mel ``[B, n_mels, 3000]``."""

    def __init__(self, n_mels: int = 80, sample_rate: int = 16000, n_fft: int = 400, hop_length: int = 160):
        super().__init__()
        self.n_mels, self.n_fft, self.hop_length = n_mels, n_fft, hop_length
        with torch.device("cpu"):      # fixed tables, computed on the CPU also when the network is built on "meta"
            window = torch.hann_window(n_fft, periodic=True)
            fb = slaney_mel_filterbank(sample_rate, n_fft, n_mels, 0.0, sample_rate / 2.0)
        self.register_buffer("window", window, persistent=False)
        self.register_buffer("fb", fb, persistent=False)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        if wav.ndim != 2 or wav.shape[-1] != WINDOW_SAMPLES:
            raise ValueError(f"expected zero-padded 30-s windows [B, {WINDOW_SAMPLES}], got {tuple(wav.shape)}")
        x = F.pad(wav.float()[:, None], (self.n_fft // 2, self.n_fft // 2), mode="reflect")[:, 0]
        spec = torch.stft(x, self.n_fft, hop_length=self.hop_length, window=self.window, center=False,
                          return_complex=True)[..., :-1]
        power = spec.real.square() + spec.imag.square()                          # [B, 201, 3000]
        mel = torch.matmul(power.transpose(-1, -2), self.fb).transpose(-1, -2)    # [B, n_mels, 3000]
        log = torch.clamp(mel, min=1e-10).log10()
        top = log.amax(dim=(-2, -1), keepdim=True)
        return (torch.maximum(log, top - 8.0) + 4.0) / 4.0
