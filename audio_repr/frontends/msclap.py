"""``MsClapLogMel``: Microsoft CLAP 2023's input pipeline — a clip shorter than 7 s repeated to fill 7 s (then
cut), and its HTS-AT log-mel: torchlibrosa's (as LAION-CLAP's: :class:`ClapLogMel`, without its 16-bit
quantisation and with its own fill) on 44.1 kHz audio with a mel filterbank drawn for 32 kHz."""

from __future__ import annotations

import torch

from .clap import ClapLogMel
from .filterbanks import mel_filterbank

__all__ = ["MsClapLogMel"]


class MsClapLogMel(ClapLogMel):
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
                         f_min=f_min, f_max=f_max, clip_samples=clip_samples, quantise=False)
        self.fb = mel_filterbank(mel_sample_rate, n_fft, n_mels, f_min, f_max, "slaney")
        self.mel_sample_rate = int(mel_sample_rate)

    def fill(self, wav: torch.Tensor) -> torch.Tensor:
        """A clip shorter than ``clip_samples`` filled to it as ``load_audio_into_tensor`` does: repeated
        ``ceil(clip_samples / n)`` times, then cut (no zero padding)."""
        return wav.repeat(-(-self.clip_samples // wav.shape[-1]))[: self.clip_samples]
