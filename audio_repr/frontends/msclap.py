"""``MsClapLogMel``: Microsoft CLAP 2023's input pipeline — a clip shorter than 7 s repeated to fill 7 s (then
cut), and its HTS-AT log-mel: torchlibrosa's (as PANNs': :class:`PANNsLogMel`) on 44.1 kHz audio with a mel
filterbank drawn for 32 kHz."""

from __future__ import annotations

import torch

from .filterbanks import mel_filterbank
from .panns import PANNsLogMel

__all__ = ["MsClapLogMel"]


class MsClapLogMel(PANNsLogMel):
    """The log-mel ``msclap`` (``CLAPWrapper.get_audio_embeddings``) computes, one clip at a time:

    * a clip of at most ``clip_samples`` (7 s at 44.1 kHz) is filled as ``load_audio_into_tensor`` fills it:
      repeated ``ceil(clip_samples / n)`` times, then cut to ``clip_samples`` (no zero padding); so every clip up
      to 7 s reads as a 7 s clip (``frames_for``: 965 frames); a longer clip keeps its length (the network reads
      it in windows);
    * torchlibrosa's STFT log-mel (periodic Hann, reflect centre padding, Slaney mel, ``10 log10(max(x, 1e-10))``)
      with ``n_fft`` 1024 and hop 320 of the 44.1 kHz waveform — but with the mel filters of ``mel_sample_rate``
      (32 kHz), 50 Hz to 14 kHz: the original's HTS-AT builds its ``LogmelFilterBank`` from the HTS-AT config
      (``models/config.py``: ``sample_rate = 32000``), not from CLAP's ``config_2023.yml`` (44.1 kHz, fmax 8000,
      which it ignores); the filters therefore sit at 44100/32000 times the frequencies their mel scale names.
    """

    def __init__(self, sample_rate: int = 44100, n_fft: int = 1024, hop_length: int = 320, n_mels: int = 64,
                 f_min: float = 50.0, f_max: float = 14000.0, clip_samples: int = 308700,
                 mel_sample_rate: int = 32000):
        super().__init__(sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels,
                         f_min=f_min, f_max=f_max)
        self.fb = mel_filterbank(mel_sample_rate, n_fft, n_mels, f_min, f_max, "slaney")
        self.mel_sample_rate = int(mel_sample_rate)
        self.clip_samples = int(clip_samples)

    def frames_for(self, n_samples: int) -> int:
        return 0 if n_samples <= 0 else max(n_samples, self.clip_samples) // self.hop_length + 1

    def min_samples(self, n_frames: int) -> int:
        if n_frames <= 0:
            return 0
        return 1 if n_frames <= self.frames_for(self.clip_samples) else (n_frames - 1) * self.hop_length

    def edge_pad(self, wav: torch.Tensor) -> torch.Tensor:
        n = wav.shape[-1]
        if 0 < n < self.clip_samples:
            wav = wav.repeat(-(-self.clip_samples // n))[: self.clip_samples]
        return super().edge_pad(wav)
