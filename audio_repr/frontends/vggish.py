"""``VGGishLogMel``: VGGish's log-mel examples (tensorflow/models research/audioset/vggish: vggish_input,
mel_features)."""

from __future__ import annotations

import math

import torch

from . import FrontEnd
from .filterbanks import vggish_mel_matrix

__all__ = ["VGGishLogMel"]


class VGGishLogMel(FrontEnd):
    """VGGish's input pipeline on batches, on any device: frames of ``win_length`` (25 ms) every
    ``hop_length`` (10 ms) with no centring, periodic Hann window, ``|rfft|`` zero-padded to
    ``fft_size`` (512), VGGish's HTK mel weights (64 bands, 125-7500 Hz), ``log(mel + 0.01)``.
    Output ``[B, n_mels, T]``; the network cuts it into examples of ``example_frames`` (96 = 0.96 s).

    ``tail`` decides the last partial example:

    * ``"drop"`` (default, the original): only whole examples, as ``vggish_input.waveform_to_examples``;
      ``frames_for(n)`` is a multiple of 96 and a clip shorter than 0.975 s has no example at all.
    * ``"pad"``: the clip is zero-padded (digital silence) to complete its last example, so no audio is
      lost: every sample lies in some frame and the frames are rounded up to a multiple of 96. Padded
      frames are ``log(0.01)``, what the original gives for silence.

    ``frame_length`` (= ``win_length``) is the span of one frame in samples; the FFT length is
    ``fft_size``. ``dtype`` is the precision of framing, FFT and mel (float64 by default, as the numpy
    original; float32 where the device has none, e.g. MPS); features are returned in float32. Frame
    ``t`` covers samples ``[t * hop, t * hop + win)``: its centre, ``frame_offset_ms`` + ``t`` hops, is
    12.5 ms after its start.
    """

    TAILS = ("drop", "pad")

    def __init__(self, sample_rate: int = 16000, win_length: int = 400, hop_length: int = 160,
                 fft_size: int = 512, n_mels: int = 64, f_min: float = 125.0, f_max: float = 7500.0,
                 log_offset: float = 0.01, example_frames: int = 96, tail: str = "drop",
                 dtype: torch.dtype = torch.float64):
        if fft_size < win_length:
            raise ValueError(f"fft_size ({fft_size}) must be at least win_length ({win_length})")
        super().__init__(sample_rate=sample_rate, hop_length=hop_length, frame_length=win_length,
                         fft_size=fft_size, n_mels=n_mels, centred=False, compute_dtype=dtype)
        self.win_length, self.log_offset = win_length, float(log_offset)
        self.example_frames = example_frames
        self.tail = tail
        k = torch.arange(win_length, dtype=torch.float64)
        self.register_buffer("window", 0.5 - 0.5 * torch.cos(2.0 * math.pi * k / win_length), persistent=False)
        self.register_buffer("fb", vggish_mel_matrix(sample_rate, fft_size, n_mels, f_min, f_max), persistent=False)

    @property
    def tail(self) -> str:
        return self._tail

    @tail.setter
    def tail(self, value: str) -> None:
        if value not in self.TAILS:
            raise ValueError(f"tail must be 'drop' (the original: the last partial 0.96 s is dropped) or "
                             f"'pad' (zero-pad it to a whole example), got {value!r}")
        self._tail = value

    # --- geometry -------------------------------------------------------------------------
    def frames_for(self, n_samples: int) -> int:
        """Feature frames the network gets for a clip of ``n_samples``: always whole examples."""
        E = self.example_frames
        if self._tail == "drop":
            return (self._whole_frames(n_samples) // E) * E
        if n_samples <= 0:
            return 0
        covering = 1 + max(0, -(-(n_samples - self.win_length) // self.hop_length))
        return -(-covering // E) * E

    def examples_for(self, n_samples: int) -> int:
        return self.frames_for(n_samples) // self.example_frames

    def min_samples(self, n_frames: int) -> int:
        """Fewest samples that give at least ``n_frames`` frames (for messages about short clips)."""
        if n_frames <= 0:
            return 0
        E = self.example_frames
        frames = -(-n_frames // E) * E                      # whole examples
        if self._tail == "drop":
            return self._samples_for_whole_frames(frames)
        covering = frames - E + 1                           # "pad": frames that must cover the clip
        return 1 if covering == 1 else (covering - 2) * self.hop_length + self.win_length + 1

    def edge_pad(self, wav: torch.Tensor) -> torch.Tensor:
        """No edge padding (frames start at sample 0); ``window_frames`` zero-fills past the end."""
        return wav

    # --- computation ----------------------------------------------------------------------
    def window_frames(self, padded: torch.Tensor, start: int, stop: int, block: int = 4096) -> torch.Tensor:
        """Log-mel frames ``start..stop-1`` of waveforms ``padded`` [B, M] (zeros past their end) -> [B, n_mels, T]."""
        if stop <= start:
            return self._no_frames(padded)
        dtype = self._dtype_on(padded.device)
        window, fb = self.window.to(dtype), self.fb.to(dtype)
        outs = []
        for a in range(start, stop, block):                      # bounded memory on long inputs
            seg = self._span(padded, a, min(stop, a + block))
            frames = seg.to(dtype).unfold(-1, self.win_length, self.hop_length)      # [B, T, win]
            spec = torch.fft.rfft(frames * window, n=self.fft_size)
            mag = (spec.real.square() + spec.imag.square()).sqrt()               # |X| (several times faster than abs())
            outs.append(torch.log(torch.matmul(mag, fb) + self.log_offset).transpose(-1, -2).float())
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)

    def extra_repr(self) -> str:
        return (f"sample_rate={self.sample_rate}, win_length={self.win_length}, hop_length={self.hop_length}, "
                f"fft_size={self.fft_size}, n_mels={self.n_mels}, tail={self._tail!r}")
