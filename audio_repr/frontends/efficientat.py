"""``EfficientATMel``: the log-mel of EfficientAT (``AugmentMelSTFT`` in eval mode), batched, on any device."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .filterbanks import kaldi_mel_filterbank
from .logmel import LogMelSpectrogram

__all__ = ["EfficientATMel"]


class EfficientATMel(LogMelSpectrogram):
    """A centred STFT log-mel (a :class:`LogMelSpectrogram`) as EfficientAT's front end
    (``models/preprocess.py``, ``AugmentMelSTFT`` in eval mode), without its final ``(x + 4.5) / 5`` (the
    card's normalisation: mean -4.5, std 5):

    * pre-emphasis ``y[i] = x[i + 1] - 0.97 x[i]`` (a valid convolution with ``[-0.97, 1]``: one sample
      shorter than the clip);
    * ``torch.stft(n_fft, hop_length, win_length, center=True)``: reflect padding of ``n_fft // 2`` on both
      sides, a symmetric (``periodic=False``) Hann window of ``win_length`` centred in ``n_fft``;
    * power spectrum, Kaldi mel filters (``torchaudio.compliance.kaldi.get_mel_banks``, ``f_min`` to
      ``f_max``; the Nyquist bin gets no weight, as the original pads the filter matrix with a zero column);
    * ``log(mel + 1e-5)``.

    ``f_max`` is the original's eval-mode value for ``fmax=None``: ``sr // 2 - fmax_aug_range // 2``
    (15 kHz at 32 kHz). Frame ``t`` is centred on sample ``t * hop_length`` of the pre-emphasised clip;
    a clip of ``n >= 2`` samples gives ``(n - 1) // hop_length + 1`` frames. ``dtype``: the precision of
    the STFT and filters (float32 as the original; float64 is closer to exact).
    """

    def __init__(self, sample_rate: int = 32000, n_fft: int = 1024, win_length: int = 800, hop_length: int = 320,
                 n_mels: int = 128, f_min: float = 0.0, f_max: float = 15000.0, preemphasis: float = 0.97,
                 eps: float = 1e-5, dtype: torch.dtype = torch.float32):
        super().__init__(sample_rate=sample_rate, n_fft=n_fft, win_length=win_length, hop_length=hop_length,
                         n_mels=n_mels, f_min=f_min, f_max=f_max, power=2.0, eps=eps, center=True)
        self.compute_dtype, self.preemphasis = dtype, float(preemphasis)
        win = torch.hann_window(win_length, periodic=False, dtype=torch.float64)      # symmetric, as the original
        left = (n_fft - win_length) // 2
        self.register_buffer("window", F.pad(win, (left, n_fft - win_length - left)).to(dtype), persistent=False)
        self.register_buffer("fb", kaldi_mel_filterbank(sample_rate, n_fft, n_mels, f_min, f_max, dtype=dtype),
                             persistent=False)

    def frames_for(self, n_samples: int) -> int:
        return 0 if n_samples < 2 else (n_samples - 1) // self.hop_length + 1

    def min_samples(self, n_frames: int) -> int:
        if n_frames <= 0:
            return 0
        return 2 if n_frames == 1 else (n_frames - 1) * self.hop_length + 1

    def edge_pad(self, wav: torch.Tensor) -> torch.Tensor:
        """Pre-emphasis, then centre padding (reflect; zeros when the clip is too short to reflect)."""
        if wav.shape[-1] < 2:
            return wav.new_zeros(2 * self.pad)
        return super().edge_pad(wav[1:] - self.preemphasis * wav[:-1])

    def window_frames(self, padded: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Log-mel frames ``start..stop-1`` of prepared (``edge_pad``) waveforms ``padded`` [B, M]."""
        if stop <= start:
            return self._no_frames(padded)
        seg = self._span(padded, start, stop)
        dtype = self._dtype_on(seg.device)
        spec = torch.stft(seg.to(dtype), self.fft_size, hop_length=self.hop_length, win_length=self.fft_size,
                          window=self.window.to(dtype), center=False, return_complex=True)
        power = spec.real.square() + spec.imag.square()
        mel = torch.matmul(power.transpose(-1, -2), self.fb.to(dtype)).transpose(-1, -2)
        return torch.log(mel + self.eps).float()
