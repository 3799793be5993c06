"""``ClapLogMel``: LAION-CLAP's input pipeline — the waveform quantised to 16 bits, a clip shorter than 10 s
repeated to fill 10 s (then zero-padded), and the HTS-AT log-mel (torchlibrosa's, as PANNs': :class:`PANNsLogMel`)."""

from __future__ import annotations

import torch

from .panns import PANNsLogMel

__all__ = ["ClapLogMel"]


class ClapLogMel(PANNsLogMel):
    """The log-mel of ``laion_clap`` (``CLAP_Module.get_audio_embedding_from_data/_filelist``), one clip at a time:

    * the waveform (at 48 kHz) quantised as the original's ``int16_to_float32(float32_to_int16(x))``: clipped to
      [-1, 1], times 32767, truncated to an integer, divided by 32767;
    * a clip of at most ``clip_samples`` (10 s) is filled as the original's ``repeatpad``: repeated
      ``clip_samples // n`` whole times, then zero-padded to ``clip_samples``; so every clip up to 10 s reads as a
      10 s clip (``frames_for``: 1001 frames); a longer clip keeps its length (the network reads it in windows);
    * torchlibrosa's STFT log-mel (periodic Hann, reflect centre padding, Slaney mel, ``10 log10(max(x, 1e-10))``).
    """

    def __init__(self, sample_rate: int = 48000, n_fft: int = 1024, hop_length: int = 480, n_mels: int = 64,
                 f_min: float = 50.0, f_max: float = 14000.0, clip_samples: int = 480000, quantise: bool = True):
        super().__init__(sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels,
                         f_min=f_min, f_max=f_max)
        self.clip_samples = int(clip_samples)
        self.quantise = bool(quantise)

    def frames_for(self, n_samples: int) -> int:
        return 0 if n_samples <= 0 else max(n_samples, self.clip_samples) // self.hop_length + 1

    def min_samples(self, n_frames: int) -> int:
        if n_frames <= 0:
            return 0
        return 1 if n_frames <= self.frames_for(self.clip_samples) else (n_frames - 1) * self.hop_length

    def edge_pad(self, wav: torch.Tensor) -> torch.Tensor:
        if self.quantise:
            wav = torch.trunc(wav.clamp(-1.0, 1.0) * 32767.0) / 32767.0
        n = wav.shape[-1]
        if 0 < n < self.clip_samples:
            wav = self.fill(wav)
        return super().edge_pad(wav)

    def fill(self, wav: torch.Tensor) -> torch.Tensor:
        """A clip shorter than ``clip_samples`` filled to it: ``repeatpad`` (whole repeats, then zeros)."""
        wav = wav.repeat(self.clip_samples // wav.shape[-1])
        return torch.nn.functional.pad(wav, (0, self.clip_samples - wav.shape[-1]))
