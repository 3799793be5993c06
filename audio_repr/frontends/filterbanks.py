"""One builder for the triangular mel filterbanks of every front end: :func:`mel_filterbank`.

The implementations our front ends reproduce draw the same thing, triangles whose corners are
equally spaced on a mel scale, but each in its own arithmetic. A :class:`MelStyle` names those
choices, and :data:`STYLES` holds the four in use, so that each reproduces its original to the bit:

========  ================================================  =====================================
style     as                                                used by
========  ================================================  =====================================
htk       torchaudio ``melscale_fbanks(norm=None,           BYOL-A (``LogMelSpectrogram``)
          mel_scale="htk")``
slaney    librosa 0.7 / nnAudio ``get_mel(htk=False,        MSM-MAE (``LogMelSpectrogram``)
          norm=1)``: Slaney area normalisation
kaldi     Kaldi ``MelBanks`` (``compute-fbank-feats``)      AST (``KaldiFbank``)
vggish    VGGish ``mel_features.spectrogram_to_mel_matrix`` VGGish (``VGGishLogMel``)
========  ================================================  =====================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, Optional

import torch
import torch.nn.functional as F

__all__ = ["MelStyle", "STYLES", "mel_filterbank", "htk_mel_filterbank", "slaney_mel_filterbank",
           "kaldi_mel_filterbank", "vggish_mel_matrix"]

Tensor = torch.Tensor

# ---- mel scales (elementwise on tensors) ---------------------------------------------------------
_SLANEY_HZ_PER_MEL = 200.0 / 3                       # linear below 1 kHz
_SLANEY_LOG_MEL = (1000.0 - 0.0) / _SLANEY_HZ_PER_MEL  # mel of 1 kHz, where the log part starts
_SLANEY_LOG_STEP = math.log(6.4) / 27.0


def _htk10_mel(f: Tensor) -> Tensor:
    return 2595.0 * torch.log10(1.0 + f / 700.0)


def _htk10_hz(m: Tensor) -> Tensor:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def _htk_ln_mel(f: Tensor) -> Tensor:               # Kaldi's and VGGish's form of the HTK scale
    return 1127.0 * torch.log1p(f / 700.0)


def _htk_ln_hz(m: Tensor) -> Tensor:
    return 700.0 * torch.expm1(m / 1127.0)


def _slaney_mel(f: Tensor) -> Tensor:
    log_part = _SLANEY_LOG_MEL + torch.log(f / 1000.0) / _SLANEY_LOG_STEP
    return torch.where(f >= 1000.0, log_part, f / _SLANEY_HZ_PER_MEL)


def _slaney_hz(m: Tensor) -> Tensor:
    log_part = 1000.0 * torch.exp(_SLANEY_LOG_STEP * (m - _SLANEY_LOG_MEL))
    return torch.where(m >= _SLANEY_LOG_MEL, log_part, _SLANEY_HZ_PER_MEL * m)


# ---- equally spaced points --------------------------------------------------------------------
def _spaced(lo: float, hi: float, count: int, rule: str, dtype: torch.dtype) -> Tensor:
    """``count`` points from ``lo`` to ``hi``, rounded as one implementation rounds them:
    ``"linspace"``: ``torch.linspace``; ``"steps"``: ``lo + k * step`` (Kaldi); ``"steps_to_end"``:
    the same with the last point set to ``hi`` (``numpy.linspace``)."""
    if rule == "linspace":
        return torch.linspace(lo, hi, count, dtype=dtype)
    pts = torch.arange(count, dtype=dtype) * ((hi - lo) / (count - 1)) + lo
    if rule == "steps_to_end":
        pts[-1] = hi
    return pts


# ---- the styles ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class MelStyle:
    """How one implementation draws triangular mel filters.

    ``mel``/``hz``: the mel scale and its inverse; ``bins(sample_rate, fft_size, dtype)``: frequencies
    (Hz) of the FFT bins that get weights (bins past them get none); ``corners``: how the
    ``n_mels + 2`` corners are spaced on the mel axis (see :func:`_spaced`); ``on_mel_axis``:
    triangles linear in mel (Kaldi, VGGish) rather than in Hz (torchaudio, librosa); ``area_norm``:
    each filter scaled by ``2 / (its width in Hz)`` after rounding to float32, as librosa does
    (Slaney's constant energy per band); ``zero_dc``: the DC bin gets no weight; ``strict_range``:
    ``0 <= f_min < f_max <= Nyquist`` is required; ``dtype``: the precision of the construction;
    ``result_dtype``: of the filters returned when no other is asked for.
    """

    mel: Callable[[Tensor], Tensor]
    hz: Callable[[Tensor], Tensor]
    bins: Callable[[int, int, torch.dtype], Tensor]
    corners: str
    on_mel_axis: bool = False
    area_norm: bool = False
    zero_dc: bool = False
    strict_range: bool = False
    dtype: torch.dtype = torch.float64
    result_dtype: torch.dtype = torch.float64


STYLES: Dict[str, MelStyle] = {
    "htk": MelStyle(_htk10_mel, _htk10_hz, corners="linspace", dtype=torch.float32,
                    result_dtype=torch.float32,
                    bins=lambda sr, n, dt: torch.linspace(0, sr // 2, n // 2 + 1, dtype=dt)),
    "slaney": MelStyle(_slaney_mel, _slaney_hz, corners="steps_to_end", area_norm=True,
                       result_dtype=torch.float32,
                       bins=lambda sr, n, dt: _spaced(0.0, float(sr) / 2, n // 2 + 1, "steps_to_end", dt)),
    "kaldi": MelStyle(_htk_ln_mel, _htk_ln_hz, corners="steps", on_mel_axis=True, strict_range=True,
                      bins=lambda sr, n, dt: torch.arange(n // 2, dtype=dt) * (sr / n)),   # no Nyquist bin
    "vggish": MelStyle(_htk_ln_mel, _htk_ln_hz, corners="linspace", on_mel_axis=True, zero_dc=True,
                       strict_range=True, bins=lambda sr, n, dt: torch.linspace(0.0, sr / 2.0, n // 2 + 1, dtype=dt)),
}


def _triangles(x: Tensor, corners: Tensor) -> Tensor:
    """Filters rising linearly in ``x`` from ``corners[m]`` to 1 at ``corners[m + 1]`` and falling to 0
    at ``corners[m + 2]``, sampled at ``x`` [n_bins]: [n_bins, len(corners) - 2]."""
    width = corners[1:] - corners[:-1]
    slopes = corners[None, :] - x[:, None]
    down = -slopes[:, :-2] / width[:-1]
    up = slopes[:, 2:] / width[1:]
    return torch.clamp(torch.minimum(down, up), min=0.0)


def mel_filterbank(sample_rate: int, fft_size: int, n_mels: int, f_min: float, f_max: float,
                   style: str = "htk", dtype: Optional[torch.dtype] = None) -> Tensor:
    """Triangular mel filters for a ``fft_size``-point FFT, ``[fft_size // 2 + 1, n_mels]`` (to
    post-multiply spectra), drawn as ``style`` draws them (see :data:`STYLES`).

    ``dtype``: of the result (default: the style's ``result_dtype``, float32 for ``htk`` and ``slaney``
    as their originals, float64 for ``kaldi`` and ``vggish``).
    """
    try:
        s = STYLES[style]
    except KeyError:
        raise ValueError(f"mel style must be one of {sorted(STYLES)}, got {style!r}") from None
    nyquist = 0.5 * sample_rate
    if s.strict_range and not (0.0 <= f_min < f_max <= nyquist):
        raise ValueError(f"bad mel range f_min={f_min}, f_max={f_max} (Nyquist {nyquist})")
    edges = [float(s.mel(torch.tensor(float(f), dtype=torch.float64))) for f in (f_min, f_max)]
    corners = _spaced(*edges, n_mels + 2, s.corners, s.dtype)
    bins = s.bins(sample_rate, fft_size, s.dtype)
    if s.on_mel_axis:
        fb = _triangles(s.mel(bins), corners)
    else:
        corners = s.hz(corners)
        fb = _triangles(bins, corners)
    if s.area_norm:
        fb = fb.float().to(s.dtype) * (2.0 / (corners[2:] - corners[:-2]))
    fb = F.pad(fb, (0, 0, 0, fft_size // 2 + 1 - fb.shape[0]))
    if s.zero_dc:
        fb[0] = 0.0
    return fb.to(dtype or s.result_dtype)


# ---- the filters of each original, by its own parameter names --------------------------------------
def htk_mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float) -> Tensor:
    """torchaudio's ``melscale_fbanks(..., norm=None, mel_scale="htk")``, float32."""
    return mel_filterbank(sample_rate, n_fft, n_mels, f_min, f_max, "htk")


def slaney_mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float) -> Tensor:
    """librosa's / nnAudio's Slaney mel filters with area normalisation (``get_mel(htk=False, norm=1)``), float32."""
    return mel_filterbank(sample_rate, n_fft, n_mels, f_min, f_max, "slaney")


def kaldi_mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, low_freq: float = 20.0,
                         high_freq: float = 0.0, dtype: torch.dtype = torch.float32) -> Tensor:
    """Kaldi's ``MelBanks`` (``high_freq <= 0``: offset from Nyquist; the Nyquist bin gets no weight)."""
    if high_freq <= 0.0:
        high_freq += 0.5 * sample_rate
    return mel_filterbank(sample_rate, n_fft, n_mels, low_freq, high_freq, "kaldi", dtype)


def vggish_mel_matrix(sample_rate: int = 16000, fft_size: int = 512, n_mels: int = 64, f_min: float = 125.0,
                      f_max: float = 7500.0, dtype: torch.dtype = torch.float64) -> Tensor:
    """VGGish's ``spectrogram_to_mel_matrix`` (the DC bin gets no weight)."""
    return mel_filterbank(sample_rate, fft_size, n_mels, f_min, f_max, "vggish", dtype)
