"""Reading audio, downmixing and resampling, all in torch.

The default resampler reproduces torchaudio's ``functional.resample`` with its default
arguments (band-limited windowed-sinc interpolation, Hann window, ``lowpass_filter_width=6``,
``rolloff=0.99``), which is what the BYOL-A originals used. It is written here from the
method's definition so the library never needs torchaudio, and it runs batched on any device.
"""

from __future__ import annotations

import math
import os
from functools import lru_cache
from pathlib import Path
from typing import List, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

PathLike = Union[str, os.PathLike]

__all__ = ["load_audio", "to_mono_tensor", "resample", "resample_batch", "validate_waveform", "get_resampler",
           "RESAMPLERS", "AudioError"]


class AudioError(ValueError):
    """Raised for audio that cannot be used: unreadable, empty, not finite, badly shaped."""


def load_audio(path: PathLike, sr: int | None = None, *, mono: bool = True) -> Tuple[torch.Tensor, int]:
    """Read an audio file (WAV, FLAC, OGG, MP3, ... through soundfile).

    Integer PCM is scaled to [-1, 1]. With ``mono=True`` channels are averaged.
    With ``sr`` given, the audio is resampled to it with the default resampler.
    Returns ``(waveform, sample_rate)``; the waveform is float32, shape ``[N]`` (mono) or
    ``[C, N]``.
    """
    import soundfile as sf

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"audio file not found: {path}")
    try:
        data, file_sr = sf.read(str(path), dtype="float32", always_2d=True)  # [N, C], scaled
    except Exception as e:  # soundfile raises several types (LibsndfileError, RuntimeError, ...)
        raise AudioError(f"cannot read audio file {path}: {e}") from e
    wav = torch.from_numpy(np.ascontiguousarray(data.T))  # [C, N]
    if wav.shape[-1] == 0:
        raise AudioError(f"audio file {path} contains no samples")
    if mono:
        wav = wav.mean(dim=0)
    if sr is not None and sr != file_sr:
        wav = resample(wav, file_sr, sr)
        file_sr = sr
    return wav, int(file_sr)


def validate_waveform(wav: torch.Tensor, name: str = "audio") -> None:
    """Check a mono waveform [N]: non-empty, finite."""
    if wav.ndim != 1:
        raise AudioError(f"{name}: expected a 1-D mono waveform after downmix, got shape {tuple(wav.shape)}")
    if wav.numel() == 0:
        raise AudioError(f"{name}: audio is empty (0 samples)")
    if not torch.isfinite(wav).all():
        bad = (~torch.isfinite(wav)).sum().item()
        raise AudioError(f"{name}: audio contains {bad} NaN or infinite sample(s)")


def to_mono_tensor(audio, name: str = "audio") -> torch.Tensor:
    """Turn a 1-D or 2-D array/tensor into a float32 mono tensor [N].

    2-D input is read as [channels, samples] when the first dimension is the smaller one
    (at most 8 channels), else as [samples, channels] (soundfile's layout). Channels are averaged.
    """
    if isinstance(audio, np.ndarray):
        if audio.dtype.kind in "iu":
            info = np.iinfo(audio.dtype)
            scale = float(-info.min) if info.min < 0 else float(info.max + 1) / 2.0
            offset = 0.0 if info.min < 0 else scale
            audio = (audio.astype(np.float64) - offset) / scale
        elif audio.dtype.kind not in "f":
            raise AudioError(f"{name}: unsupported array dtype {audio.dtype}")
        wav = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
    elif isinstance(audio, torch.Tensor):
        if not (audio.is_floating_point()):
            raise AudioError(f"{name}: expected a floating-point tensor, got {audio.dtype}")
        wav = audio.detach().to(torch.float32)
    else:
        raise AudioError(f"{name}: expected a path, numpy array or torch tensor, got {type(audio).__name__}")
    if wav.ndim == 2:
        if wav.shape[0] <= wav.shape[1] and wav.shape[0] <= 8:
            wav = wav.mean(dim=0)
        elif wav.shape[1] <= 8:
            wav = wav.mean(dim=1)
        else:
            raise AudioError(
                f"{name}: cannot tell channels from samples in shape {tuple(wav.shape)}; "
                "pass [channels, samples] with at most 8 channels, or a 1-D waveform")
    elif wav.ndim != 1:
        raise AudioError(f"{name}: expected a 1-D waveform or 2-D [channels, samples], got shape {tuple(wav.shape)}")
    validate_waveform(wav, name)
    return wav


# ----------------------------------------------------------------------------------------------
# Windowed-sinc resampling (the torchaudio default, re-derived)
# ----------------------------------------------------------------------------------------------

@lru_cache(maxsize=32)
def _sinc_kernel_cpu(orig: int, new: int, lowpass_filter_width: int, rolloff: float) -> Tuple[torch.Tensor, int]:
    """Polyphase kernels for reduced rates ``orig -> new``: [new, 1, 2*width + orig] and the width.

    Output phase j (0..new-1) at input position k*orig needs the band-limited interpolation of
    the input at time k*orig + j*orig/new (in input samples). Cut-off = rolloff * min(orig, new)/2
    (in the reduced rate units), truncated at ``lowpass_filter_width`` zero crossings and tapered
    with a Hann window (cos^2). Computed in float32 as torchaudio does for float32 audio.
    """
    cutoff = min(orig, new) * rolloff
    width = math.ceil(lowpass_filter_width * orig / cutoff)
    dtype = torch.float32
    taps = torch.arange(-width, width + orig, dtype=dtype)[None, None] / orig          # input offsets
    phases = -torch.arange(0, new, dtype=dtype)[:, None, None] / new                    # output phases
    x = (taps + phases) * cutoff
    x = x.clamp(-lowpass_filter_width, lowpass_filter_width)
    window = torch.cos(x * (math.pi / (2 * lowpass_filter_width))) ** 2
    x = x * math.pi
    sinc = torch.where(x == 0, torch.ones_like(x), torch.sin(x) / x)
    kernel = sinc * window * (cutoff / orig)
    return kernel.contiguous(), width


def _reduced(orig_sr: int, new_sr: int) -> Tuple[int, int]:
    if int(orig_sr) != orig_sr or int(new_sr) != new_sr or orig_sr <= 0 or new_sr <= 0:
        raise ValueError(f"sample rates must be positive integers, got {orig_sr} and {new_sr}")
    g = math.gcd(int(orig_sr), int(new_sr))
    return int(orig_sr) // g, int(new_sr) // g


def resampled_length(n: int, orig_sr: int, new_sr: int) -> int:
    orig, new = _reduced(orig_sr, new_sr)
    return math.ceil(new * n / orig)


def resample_batch(wavs: torch.Tensor, orig_sr: int, new_sr: int, *, lowpass_filter_width: int = 6,
                   rolloff: float = 0.99, block: int = 8192) -> torch.Tensor:
    """Resample ``[..., N]`` from ``orig_sr`` to ``new_sr``; returns ``[..., ceil(N * new / orig)]``.

    Zero-padded rows of a batch give, within each row's own output length, exactly the result
    of resampling that row alone. Long inputs are processed in blocks of ``block`` output
    positions so that memory stays bounded.
    """
    if orig_sr == new_sr:
        return wavs
    orig, new = _reduced(orig_sr, new_sr)
    kernel, width = _sinc_kernel_cpu(orig, new, lowpass_filter_width, float(rolloff))
    kernel = kernel.to(device=wavs.device, dtype=wavs.dtype)
    shape = wavs.shape
    x = wavs.reshape(-1, shape[-1])
    n = shape[-1]
    x = F.pad(x, (width, width + orig))
    ksize = kernel.shape[-1]
    n_pos = (x.shape[-1] - ksize) // orig + 1  # conv positions
    outs = []
    for p0 in range(0, n_pos, block):
        p1 = min(n_pos, p0 + block)
        seg = x[:, p0 * orig: (p1 - 1) * orig + ksize]
        y = F.conv1d(seg[:, None], kernel, stride=orig)          # [B, new, p1 - p0]
        outs.append(y.transpose(1, 2).reshape(x.shape[0], -1))
    y = torch.cat(outs, dim=-1) if len(outs) > 1 else outs[0]
    y = y[:, : math.ceil(new * n / orig)]
    return y.reshape(*shape[:-1], y.shape[-1])


def resample(wav: torch.Tensor, orig_sr: int, new_sr: int, **kwargs) -> torch.Tensor:
    """Resample one waveform (any leading shape) with the torchaudio-default windowed sinc."""
    return resample_batch(wav, orig_sr, new_sr, **kwargs)


#: Resamplers by the name a model card uses. Each maps (waveform [..., N], orig_sr, new_sr) -> [..., M].
RESAMPLERS = {"sinc_hann": resample_batch}


def get_resampler(name: str):
    try:
        return RESAMPLERS[name]
    except KeyError:
        raise ValueError(f"unknown resampler {name!r}; known: {sorted(RESAMPLERS)}") from None


def pad_stack(wavs: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, List[int]]:
    """Right-pad 1-D tensors with zeros into [B, max_len]; returns the batch and true lengths."""
    lengths = [int(w.shape[-1]) for w in wavs]
    out = wavs[0].new_zeros((len(wavs), max(lengths)))
    for i, w in enumerate(wavs):
        out[i, : lengths[i]] = w
    return out, lengths
