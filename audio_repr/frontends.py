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


# ----------------------------------------------------------------------------------------------
# Kaldi-compatible filterbank (AST)
# ----------------------------------------------------------------------------------------------
def _kaldi_mel(f):
    return 1127.0 * torch.log1p(f / 700.0) if torch.is_tensor(f) else 1127.0 * math.log1p(f / 700.0)


def kaldi_mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, low_freq: float = 20.0,
                         high_freq: float = 0.0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Kaldi's triangular mel filters (``MelBanks``), [n_fft // 2 + 1, n_mels].

    Triangles are linear in Kaldi's mel scale ``1127 ln(1 + f / 700)``, their corners equally spaced
    between ``low_freq`` and ``high_freq`` (``<= 0``: offset from Nyquist); the Nyquist bin gets no
    weight, as in Kaldi. Built in float64, returned in ``dtype``.
    """
    nyquist = 0.5 * sample_rate
    if high_freq <= 0.0:
        high_freq += nyquist
    if not (0.0 <= low_freq < high_freq <= nyquist):
        raise ValueError(f"bad mel range low_freq={low_freq}, high_freq={high_freq} (Nyquist {nyquist})")
    lo, hi = _kaldi_mel(float(low_freq)), _kaldi_mel(float(high_freq))
    delta = (hi - lo) / (n_mels + 1)
    m = torch.arange(n_mels, dtype=torch.float64)[None, :]
    left, centre, right = lo + m * delta, lo + (m + 1.0) * delta, lo + (m + 2.0) * delta
    mel = _kaldi_mel(torch.arange(n_fft // 2, dtype=torch.float64) * (sample_rate / n_fft))[:, None]
    fb = torch.clamp(torch.minimum((mel - left) / (centre - left), (right - mel) / (right - centre)), min=0.0)
    return F.pad(fb, (0, 0, 0, 1)).to(dtype)   # the Nyquist bin: zero weight


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


class KaldiFbank(nn.Module):
    """Kaldi ``compute-fbank-feats`` (as ``torchaudio.compliance.kaldi.fbank``) on batches, on any device.

    Per frame of ``frame_length_ms`` every ``frame_shift_ms`` (``snip_edges``: only frames that fit in
    the clip): remove the frame's DC offset, pre-emphasis ``x[i] - k x[i-1]`` (``x[-1] = x[0]``), window
    (Kaldi's symmetric ``'hanning'`` by default), zero-pad to the next power of two, power spectrum,
    Kaldi mel filters, ``log(max(e, float32 eps))``. No dither, no energy column. Output ``[B, n_mels, T]``.

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
        super().__init__()
        self.sample_rate = sample_rate
        self.win_length = int(sample_rate * frame_length_ms * 0.001)
        self.hop_length = int(sample_rate * frame_shift_ms * 0.001)
        self.n_fft = self.win_length             # samples one frame spans
        self.fft_size = 2 ** (self.win_length - 1).bit_length() if round_to_power_of_two else self.win_length
        self.n_mels, self.preemphasis, self.remove_dc_offset = n_mels, float(preemphasis), remove_dc_offset
        self.subtract_clip_mean = subtract_clip_mean
        self.compute_dtype = dtype
        self.frame_offset_ms = 1000.0 * (self.win_length / 2.0) / sample_rate   # centre of frame 0
        self.eps = float(torch.finfo(torch.float32).eps)
        self.register_buffer("window", _kaldi_window(window, self.win_length).to(dtype), persistent=False)
        fb = kaldi_mel_filterbank(sample_rate, self.fft_size, n_mels, low_freq, high_freq, dtype=dtype)
        self.register_buffer("fb", fb, persistent=False)

    def frames_for(self, n_samples: int) -> int:
        return 0 if n_samples < self.win_length else 1 + (n_samples - self.win_length) // self.hop_length

    def min_samples(self, n_frames: int) -> int:
        """Fewest samples that give at least ``n_frames`` frames (for messages about short clips)."""
        return 0 if n_frames <= 0 else (n_frames - 1) * self.hop_length + self.win_length

    def edge_pad(self, wav: torch.Tensor) -> torch.Tensor:
        """No edge padding (``snip_edges``); removes the clip's mean when ``subtract_clip_mean``."""
        return wav - wav.mean() if self.subtract_clip_mean and wav.numel() else wav

    def window_frames(self, padded: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Frames ``start..stop-1`` of prepared (``edge_pad``) waveforms ``padded`` [B, M] -> [B, n_mels, T]."""
        if stop <= start:
            return padded.new_zeros((*padded.shape[:-1], self.n_mels, 0), dtype=torch.float32)
        lo = start * self.hop_length
        need = (stop - 1) * self.hop_length + self.win_length - lo
        seg = padded[..., lo: lo + need]
        if seg.shape[-1] < need:
            seg = F.pad(seg, (0, need - seg.shape[-1]))
        dtype = self.compute_dtype if seg.device.type != "mps" else torch.float32
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

    def forward(self, wavs: torch.Tensor, lengths: Optional[Sequence[int]] = None) -> torch.Tensor:
        """[B, N] (zero-padded, true ``lengths``) -> [B, n_mels, frames_for(N)]."""
        if wavs.ndim == 1:
            wavs = wavs[None]
        lengths = list(lengths) if lengths is not None else [wavs.shape[-1]] * wavs.shape[0]
        prepared = torch.zeros_like(wavs)
        for i, L in enumerate(lengths):
            prepared[i, :L] = self.edge_pad(wavs[i, :L])
        return self.window_frames(prepared, 0, self.frames_for(wavs.shape[-1]))


__all__ += ["KaldiFbank", "kaldi_mel_filterbank"]


# ----------------------------------------------------------------------------------------------
# VGGish log-mel examples (tensorflow/models research/audioset/vggish: vggish_input, mel_features)
# ----------------------------------------------------------------------------------------------
def vggish_mel_matrix(sample_rate: int = 16000, fft_size: int = 512, n_mels: int = 64, f_min: float = 125.0,
                      f_max: float = 7500.0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """VGGish's mel weights, [fft_size // 2 + 1, n_mels] (to post-multiply magnitude spectra).

    HTK mel scale ``1127 ln(1 + f / 700)``; band corners equally spaced in mel between ``f_min`` and
    ``f_max``; FFT bin frequencies ``linspace(0, sr / 2, n_bins)``; triangles linear in mel (not in Hz,
    unlike torchaudio's); no area normalisation; the DC bin gets no weight. Built in float64.
    """
    nyquist = sample_rate / 2.0
    if not (0.0 <= f_min < f_max <= nyquist):
        raise ValueError(f"bad mel range f_min={f_min}, f_max={f_max} (Nyquist {nyquist})")

    def mel(f):
        return 1127.0 * torch.log1p(f / 700.0)

    bins = mel(torch.linspace(0.0, nyquist, fft_size // 2 + 1, dtype=torch.float64))[:, None]
    edges = torch.linspace(mel(torch.tensor(float(f_min), dtype=torch.float64)).item(),
                           mel(torch.tensor(float(f_max), dtype=torch.float64)).item(), n_mels + 2,
                           dtype=torch.float64)
    lo, mid, hi = edges[:-2][None], edges[1:-1][None], edges[2:][None]
    fb = torch.clamp(torch.minimum((bins - lo) / (mid - lo), (hi - bins) / (hi - mid)), min=0.0)
    fb[0] = 0.0
    return fb.to(dtype)


class VGGishLogMel(nn.Module):
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

    ``n_fft`` is the span of one frame in samples (``win_length``, what the encoder needs to cut
    pieces); the FFT length is ``fft_size``. ``dtype`` is the precision of framing, FFT and mel
    (float64 by default, as the numpy original; float32 where the device has none, e.g. MPS);
    features are returned in float32. Frame ``t`` covers samples ``[t * hop, t * hop + win)``: its
    centre, ``frame_offset_ms`` + ``t`` hops, is 12.5 ms after its start.
    """

    TAILS = ("drop", "pad")

    def __init__(self, sample_rate: int = 16000, win_length: int = 400, hop_length: int = 160,
                 fft_size: int = 512, n_mels: int = 64, f_min: float = 125.0, f_max: float = 7500.0,
                 log_offset: float = 0.01, example_frames: int = 96, tail: str = "drop",
                 dtype: torch.dtype = torch.float64):
        super().__init__()
        if fft_size < win_length:
            raise ValueError(f"fft_size ({fft_size}) must be at least win_length ({win_length})")
        self.sample_rate, self.win_length, self.hop_length = sample_rate, win_length, hop_length
        self.n_fft = win_length                   # samples one frame spans
        self.fft_size, self.n_mels, self.log_offset = fft_size, n_mels, float(log_offset)
        self.example_frames = example_frames
        self.tail = tail
        self.compute_dtype = dtype
        self.frame_offset_ms = 1000.0 * (win_length / 2.0) / sample_rate
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
            full = 0 if n_samples < self.win_length else 1 + (n_samples - self.win_length) // self.hop_length
            return (full // E) * E
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
        if self._tail == "pad":
            return 1
        E = self.example_frames
        frames = -(-n_frames // E) * E
        return (frames - 1) * self.hop_length + self.win_length

    def edge_pad(self, wav: torch.Tensor) -> torch.Tensor:
        """No edge padding (frames start at sample 0); ``window_frames`` zero-fills past the end."""
        return wav

    # --- computation ----------------------------------------------------------------------
    def window_frames(self, padded: torch.Tensor, start: int, stop: int, block: int = 4096) -> torch.Tensor:
        """Log-mel frames ``start..stop-1`` of waveforms ``padded`` [B, M] (zeros past their end) -> [B, n_mels, T]."""
        if stop <= start:
            return padded.new_zeros((*padded.shape[:-1], self.n_mels, 0), dtype=torch.float32)
        dtype = self.compute_dtype if padded.device.type != "mps" else torch.float32
        window, fb = self.window.to(dtype), self.fb.to(dtype)
        outs = []
        for a in range(start, stop, block):                      # bounded memory on long inputs
            b = min(stop, a + block)
            lo, need = a * self.hop_length, (b - 1 - a) * self.hop_length + self.win_length
            seg = padded[..., lo: lo + need]
            if seg.shape[-1] < need:
                seg = F.pad(seg, (0, need - seg.shape[-1]))
            frames = seg.to(dtype).unfold(-1, self.win_length, self.hop_length)      # [B, T, win]
            spec = torch.fft.rfft(frames * window, n=self.fft_size)
            mag = (spec.real.square() + spec.imag.square()).sqrt()               # |X| (several times faster than abs())
            outs.append(torch.log(torch.matmul(mag, fb) + self.log_offset).transpose(-1, -2).float())
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=-1)

    def forward(self, wavs: torch.Tensor, lengths: Optional[Sequence[int]] = None) -> torch.Tensor:
        """[B, N] (zero-padded) -> [B, n_mels, frames_for(N)]. Frames past a clip's own ``frames_for``
        are not meaningful; with ``tail="pad"`` a clip's padding frames are those of its zeros."""
        if wavs.ndim == 1:
            wavs = wavs[None]
        return self.window_frames(wavs, 0, self.frames_for(wavs.shape[-1]))

    def extra_repr(self) -> str:
        return (f"sample_rate={self.sample_rate}, win_length={self.win_length}, hop_length={self.hop_length}, "
                f"fft_size={self.fft_size}, n_mels={self.n_mels}, tail={self._tail!r}")


__all__ += ["VGGishLogMel", "vggish_mel_matrix"]
