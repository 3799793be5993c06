"""Reading audio, downmixing and resampling, all in torch.

The default resampler reproduces torchaudio's ``functional.resample`` with its default
arguments (band-limited windowed-sinc interpolation, Hann window, ``lowpass_filter_width=6``,
``rolloff=0.99``), which is what the BYOL-A originals used. It is written here from the
method's definition so the library never needs torchaudio, and it runs batched on any device.
"""

from __future__ import annotations

import math
import numbers
import os
import struct
import threading
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

PathLike = Union[str, os.PathLike]

__all__ = ["load_audio", "to_mono_tensor", "resample", "resample_batch", "validate_waveform", "get_resampler",
           "resample_kaiser_best", "resample_kaiser_best_librosa", "check_sample_rate", "RESAMPLERS", "AudioError",
           "TruncatedAudioWarning"]


class AudioError(ValueError):
    """Raised for audio that cannot be used: unreadable, empty, not finite, badly shaped, or given with a
    sample rate that is not a positive whole number of Hz."""


class TruncatedAudioWarning(UserWarning):
    """Warned when a file's audio data ends before the frame count its header declares (a file cut
    short by an interrupted copy or recording): the frames present are used."""


#: What a sample rate may be, as said in the errors.
_RATES_ACCEPTED = "a positive whole number of Hz (an int, a numpy integer or an integral float such as 16000.0)"


def check_sample_rate(sr, what: str = "sample rate") -> int:
    """``sr`` as an ``int``, or :class:`AudioError` naming ``what`` (e.g. ``"input sample rate"``), the value
    given and what is accepted. Accepted: ints and numpy integers, and integral floats (``16000.0``), > 0.
    A 0-d numpy array or tensor counts as the number it holds.
    Rejected: bools, strings and other non-numbers, fractional, infinite or NaN values, zero and below."""
    if isinstance(sr, (np.ndarray, torch.Tensor)) and sr.ndim == 0:
        sr = sr.item()
    number = isinstance(sr, numbers.Real) and not isinstance(sr, (bool, np.bool_))
    shown = f"{sr} Hz" if number else repr(sr)
    if isinstance(sr, (bool, np.bool_)):
        why = "a bool is not a sample rate"
    elif not isinstance(sr, numbers.Real):
        why = f"not a number: a {type(sr).__name__}"
    elif not isinstance(sr, numbers.Integral) and not (math.isfinite(float(sr)) and float(sr).is_integer()):
        why = "not a whole number of Hz"
    elif sr <= 0:
        why = "not positive"
    else:
        return int(sr)
    raise AudioError(f"{what} {shown} is not accepted ({why}); accepted: {_RATES_ACCEPTED}")


#: How the contents of common audio files begin (WAV/RF64, FLAC, Ogg, MP3 with a tag, AIFF).
_AUDIO_MAGIC = (b"RIFF", b"RF64", b"fLaC", b"OggS", b"ID3", b"FORM")


def as_path(path, name: str = "path"):
    """``path`` as given, or a bytes path decoded as the file system does (``os.fsdecode``), like ``open``.
    Bytes that are an audio file's contents rather than its name are an :class:`AudioError` saying so."""
    if not isinstance(path, (bytes, bytearray)):
        return path
    data = bytes(path)
    if data.startswith(_AUDIO_MAGIC) or b"\0" in data:
        raise AudioError(f"{name}: got {len(data)} bytes that look like the contents of an audio file, not a path: "
                         "pass the file's path, or decode the bytes first (e.g. wav, sr = soundfile.read("
                         "io.BytesIO(data))) and pass the array with its sample rate")
    return os.fsdecode(data)


def load_audio(path: PathLike, sr: int | None = None, *, mono: bool = True) -> Tuple[torch.Tensor, int]:
    """Read an audio file (WAV, FLAC, OGG, MP3, ... through soundfile).

    ``path``: a ``str``, an ``os.PathLike`` or a bytes path (see :func:`as_path`).
    Integer PCM is scaled to [-1, 1]. With ``mono=True`` channels are averaged.
    With ``sr`` given (the target sample rate, a positive whole number of Hz), the audio is resampled
    to it with the default resampler.
    Returns ``(waveform, sample_rate)``; the waveform is float32, shape ``[N]`` (mono) or
    ``[C, N]``.

    A file whose data ends before the frame count its header declares (WAV, RF64, AIFF header fields;
    the decoder's count for other formats) is read as far as it goes, with a
    :class:`TruncatedAudioWarning` naming the file, the frames found and the frames declared.
    """
    import soundfile  # noqa: F401  (a missing dependency is not an unreadable file)

    if sr is not None:
        sr = check_sample_rate(sr, "target sample rate")
    path = Path(as_path(path))
    if not path.exists():
        raise FileNotFoundError(f"audio file not found: {path}")
    try:
        wav, file_sr, declared = _read_blocks(path, mono)
    except Exception as e:  # soundfile raises several types (LibsndfileError, RuntimeError, ...)
        raise AudioError(f"cannot read audio file {path}: {e}") from e
    if wav.shape[-1] == 0:
        raise AudioError(f"audio file {path} contains no samples")
    found = wav.shape[-1]
    if declared is not None and found < declared:
        warnings.warn(f"{path}: truncated audio: found {found} frames ({found / file_sr:.2f} s) but its header "
                      f"declares {declared} frames ({declared / file_sr:.2f} s); using the {found} frames present",
                      TruncatedAudioWarning, stacklevel=2)
    if sr is not None and sr != file_sr:
        wav = resample(wav, file_sr, sr)
        file_sr = sr
    return wav, int(file_sr)


READ_BLOCK = 1 << 20   # frames read at a time: a long multichannel file never exists whole as float32 [N, C]


def _read_blocks(path: Path, mono: bool) -> Tuple[torch.Tensor, int, Optional[int]]:
    """Read ``path`` block by block into one preallocated float32 tensor ([N] averaged over channels
    when ``mono``, else [C, N]). Peak memory is the result plus one block, not the file's interleaved
    copy and its transpose as with a whole-file read (for 1 h of 44.1 kHz stereo: 0.6 GB, not 3 GB).
    Returns ``(waveform, sample_rate, declared frames or None)``: the frame count the file's header
    declares (``_header_frames``), else the decoder's count (libsndfile clips that to the data present
    for WAV and AIFF, hence the header's own fields)."""
    import soundfile as sf

    with sf.SoundFile(str(path)) as f:
        channels, file_sr = f.channels, f.samplerate
        expected = f.frames if f.frames and f.frames > 0 else 0
        declared = _header_frames(path)
        if declared is None:
            declared = expected or None
        shape = (expected,) if mono else (channels, expected)
        out = torch.empty(shape, dtype=torch.float32)
        extra, n = [], 0
        while True:
            block = f.read(READ_BLOCK, dtype="float32", always_2d=True)   # [n, C], integer PCM scaled
            if len(block) == 0:
                break
            b = torch.from_numpy(np.ascontiguousarray(block.T))           # [C, n]
            if mono:
                b = b.mean(dim=0)
            take = max(0, min(len(block), expected - n))
            if take:
                out[..., n: n + take] = b[..., :take]
            if take < len(block):                                         # the header undercounted
                extra.append(b[..., take:].clone())
            n += len(block)
    if n < expected:                                                      # or overcounted
        out = out[..., :n].clone()
    if extra:
        out = torch.cat([out, *extra], dim=-1)
    return out, int(file_sr), declared


# WAVE format tags whose data chunk holds whole frames of ``block_align`` bytes each (PCM, IEEE float,
# A-law, mu-law); other codecs' frame counts come from their ``fact`` chunk
_WAV_FRAME_TAGS = {0x0001, 0x0003, 0x0006, 0x0007}
_AIFC_FRAME_CODECS = {b"NONE", b"none", b"sowt", b"twos", b"raw ", b"in24", b"in32", b"fl32", b"FL32", b"fl64",
                      b"FL64", b"alaw", b"ALAW", b"ulaw", b"ULAW"}
_MAX_CHUNKS = 4096


def _header_frames(path: Path) -> Optional[int]:
    """The frame count declared by a WAV (RIFF, RIFX, RF64/BW64) or AIFF/AIFC header, or ``None`` (another
    format, an unknown or streaming length, or a header that cannot be parsed). Only chunk headers are read."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(12)
            if len(head) < 12:
                return None
            if head[:4] in (b"RIFF", b"RIFX", b"RF64", b"BW64") and head[8:12] == b"WAVE":
                return _wav_frames(fh, ">" if head[:4] == b"RIFX" else "<", head[:4] in (b"RF64", b"BW64"))
            if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
                return _aiff_frames(fh, head[8:12] == b"AIFC")
    except (OSError, struct.error, ValueError):
        pass
    return None


def _wav_frames(fh, endian: str, rf64: bool) -> Optional[int]:
    tag = block_align = fact = ds64_data = None
    for _ in range(_MAX_CHUNKS):
        hdr = fh.read(8)
        if len(hdr) < 8:
            return None
        cid, size = hdr[:4], struct.unpack(endian + "I", hdr[4:])[0]
        if cid == b"data":
            if rf64 and size == 0xFFFFFFFF:
                size = ds64_data
            elif size in (0, 0xFFFFFFFF):              # a streaming writer's "unknown length"
                return None
            if size is None:
                return None
            if tag in _WAV_FRAME_TAGS and block_align:
                return size // block_align
            return fact or None
        body = fh.read(min(size, 64)) if cid in (b"fmt ", b"fact", b"ds64") else b""
        if cid == b"fmt " and len(body) >= 14:
            tag, block_align = struct.unpack(endian + "H", body[:2])[0], struct.unpack(endian + "H", body[12:14])[0]
            if tag == 0xFFFE and len(body) >= 26:        # WAVE_FORMAT_EXTENSIBLE: the sub-format's tag
                tag = struct.unpack(endian + "H", body[24:26])[0]
        elif cid == b"fact" and len(body) >= 4:
            fact = struct.unpack(endian + "I", body[:4])[0]
        elif cid == b"ds64" and len(body) >= 16:
            ds64_data = struct.unpack(endian + "Q", body[8:16])[0]
        fh.seek(size + (size & 1) - len(body), 1)     # chunks are padded to an even size
    return None


def _aiff_frames(fh, aifc: bool) -> Optional[int]:
    for _ in range(_MAX_CHUNKS):
        hdr = fh.read(8)
        if len(hdr) < 8:
            return None
        cid, size = hdr[:4], struct.unpack(">I", hdr[4:])[0]
        if cid == b"COMM":
            body = fh.read(min(size, 64))
            if len(body) < 6:
                return None
            if aifc and (len(body) < 22 or body[18:22] not in _AIFC_FRAME_CODECS):
                return None                              # a codec counting packets, not frames
            return struct.unpack(">I", body[2:6])[0] or None
        fh.seek(size + (size & 1), 1)
    return None


def validate_waveform(wav: torch.Tensor, name: str = "audio") -> None:
    """Check a mono waveform [N]: non-empty, finite."""
    if wav.ndim != 1:
        raise AudioError(f"{name}: expected a 1-D mono waveform after downmix, got shape {tuple(wav.shape)}")
    if wav.numel() == 0:
        raise AudioError(f"{name}: audio is empty (0 samples)")
    # a NaN or inf makes the sum non-finite; only then (or on overflow of huge finite values) look
    # sample by sample, in blocks: torch.isfinite on the whole signal would allocate several copies
    if not bool(torch.isfinite(wav.sum())):
        bad = sum(int((~torch.isfinite(wav[i: i + (1 << 22)])).sum()) for i in range(0, wav.numel(), 1 << 22))
        if bad:
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


def _rates(orig_sr, new_sr) -> Tuple[int, int]:
    """Both rates checked (:func:`check_sample_rate`) as the input and the output sample rate."""
    return check_sample_rate(orig_sr, "input sample rate"), check_sample_rate(new_sr, "output sample rate")


def _reduced(orig_sr: int, new_sr: int) -> Tuple[int, int]:
    orig_sr, new_sr = _rates(orig_sr, new_sr)
    g = math.gcd(orig_sr, new_sr)
    return orig_sr // g, new_sr // g


def resampled_length(n: int, orig_sr: int, new_sr: int) -> int:
    orig, new = _reduced(orig_sr, new_sr)
    return math.ceil(new * n / orig)


def _zero_padded_slice(x: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """Samples ``lo..hi-1`` of rows ``x [B, N]`` with zeros outside ``0..N-1`` (``lo`` may be negative):
    a block of the zero-padded signal without the padded copy of the whole signal."""
    n = x.shape[-1]
    seg = x[:, max(lo, 0): min(hi, n)]
    if lo < 0 or hi > n:
        seg = F.pad(seg, (max(0, -lo), max(0, hi - max(n, lo))))
    return seg


def resample_batch(wavs: torch.Tensor, orig_sr: int, new_sr: int, *, lowpass_filter_width: int = 6,
                   rolloff: float = 0.99, block: int = 8192) -> torch.Tensor:
    """Resample ``[..., N]`` from ``orig_sr`` to ``new_sr``; returns ``[..., ceil(N * new / orig)]``.

    Zero-padded rows of a batch give, within each row's own output length, exactly the result
    of resampling that row alone. Long inputs are processed in blocks of ``block`` output
    positions so that memory stays bounded.
    """
    orig, new = _reduced(orig_sr, new_sr)
    if orig == new:
        return wavs
    kernel, width = _sinc_kernel_cpu(orig, new, lowpass_filter_width, float(rolloff))
    kernel = kernel.to(device=wavs.device, dtype=wavs.dtype)
    shape = wavs.shape
    x = wavs.reshape(-1, shape[-1])
    n = shape[-1]
    # the signal counts as zero-padded by ``width`` before and ``width + orig`` after; each block
    # takes its slice of that padded signal without the whole padded copy being made
    ksize = kernel.shape[-1]
    n_pos = (n + 2 * width + orig - ksize) // orig + 1  # conv positions
    n_out = math.ceil(new * n / orig)
    y = x.new_empty((x.shape[0], n_out))
    for p0 in range(0, n_pos, block):
        p1 = min(n_pos, p0 + block)
        lo, hi = p0 * orig - width, (p1 - 1) * orig + ksize - width      # in unpadded samples
        seg = _zero_padded_slice(x, lo, hi)
        out = F.conv1d(seg[:, None], kernel, stride=orig)        # [B, new, p1 - p0]
        out = out.transpose(1, 2).reshape(x.shape[0], -1)
        o0 = p0 * new
        take = min(out.shape[-1], n_out - o0)
        if take <= 0:
            break
        y[:, o0: o0 + take] = out[:, :take]
    return y.reshape(*shape[:-1], n_out)


def resample(wav: torch.Tensor, orig_sr: int, new_sr: int, **kwargs) -> torch.Tensor:
    """Resample one waveform (any leading shape) with the torchaudio-default windowed sinc."""
    return resample_batch(wav, orig_sr, new_sr, **kwargs)


#: Resamplers by the name a model card uses. Each maps (waveform [..., N], orig_sr, new_sr) -> [..., M].
RESAMPLERS = {"sinc_hann": resample_batch}


# ----------------------------------------------------------------------------------------------
# resampy's "kaiser_best" (the VGGish pipeline's resampler), re-derived in torch
# ----------------------------------------------------------------------------------------------
# resampy interpolates with a tabulated Kaiser-windowed sinc: the right half of the filter sampled
# 2**13 times per zero crossing over 50 zero crossings, read with linear interpolation between
# table entries. Its pre-computed "kaiser_best" table is reproduced (to 2e-15) by roll-off
# 0.9173473712608761 and Kaiser beta 12.984585247037439 (the published parameters, rounded, are
# 0.917347 and 12.9846). For output sample t, with ratio = new / orig and scale = min(1, ratio):
# the time register is r = t * (1 / ratio) in input samples (float64, as resampy computes it),
# n = int(r), and the input samples n - i (left wing) and n + 1 + i (right wing) are weighted by
# table reads at frac * 2**13 + i * step, with frac = scale * (r - n) (left) or scale - that (right)
# and step = int(scale * 2**13); when downsampling the table is scaled by the ratio. Samples
# outside the signal count as zeros. Output length: int(N * new / orig).
#
# Here the weights of each of the q output phases (q = new / gcd) are tabulated once and applied
# as one strided convolution. Outputs whose float64 time register lands on another tap set than
# its phase (a rounding artefact at exact integer positions, which resampy inherits) are
# recomputed with their own weights, so the result matches resampy to float32 rounding.

_KAISER_BEST = (50, 13, 0.9173473712608761, 12.984585247037439)   # zero crossings, log2 table density, rolloff, beta


@lru_cache(maxsize=2)
def _kaiser_half_window(num_zeros: int, precision: int, rolloff: float, beta: float) -> np.ndarray:
    """The interpolation filter's right half, ``2**precision`` entries per zero crossing (float64)."""
    n = (2 ** precision) * num_zeros
    u = np.arange(n + 1, dtype=np.float64) / n
    taper = np.i0(beta * np.sqrt(1.0 - u * u)) / np.i0(beta)
    return taper * (rolloff * np.sinc(rolloff * np.linspace(0.0, num_zeros, n + 1)))


class _KaiserPlan:
    """Weights of ``kaiser_best`` resampling from ``orig_sr`` to ``new_sr`` (built once per rate pair)."""

    MAX_KERNEL = 1 << 22       # polyphase kernels larger than this (entries) use per-output gathering

    def __init__(self, orig_sr: int, new_sr: int):
        self.p, self.q = _reduced(orig_sr, new_sr)
        self.ratio = float(new_sr) / orig_sr
        self.inc = 1.0 / self.ratio
        num_zeros, precision, rolloff, beta = _KAISER_BEST
        self.per = 2 ** precision
        win = _kaiser_half_window(num_zeros, precision, rolloff, beta)
        self.win = self.ratio * win if self.ratio < 1 else win
        self.delta = np.diff(self.win, append=self.win[-1])
        self.scale = min(1.0, self.ratio)
        self.step = int(self.scale * self.per)
        self.taps_per_wing = -(-len(self.win) // self.step)
        L = self.taps_per_wing
        self.kernel = None
        if self.q * (self.p + 2 * L) <= self.MAX_KERNEL:
            n, wl, wr = self.taps(np.arange(self.q) * self.inc)
            self.phase_key = self._key(np.arange(self.q) * self.inc) + (n,)
            d_min, d_max = int(n.min()) - (L - 1), int(n.max()) + L
            K = np.zeros((self.q, d_max - d_min + 1))
            rows = np.arange(self.q)[:, None]
            K[rows, (n - d_min)[:, None] - np.arange(L)[None]] += wl
            K[rows, (n - d_min + 1)[:, None] + np.arange(L)[None]] += wr
            self.kernel = torch.from_numpy(K)           # [q, W] float64: output phase j, input offset d_min + w
            self.d_min = d_min
        self._odd = np.zeros(0, dtype=np.int64)           # outputs [0, _checked) that need their own taps
        self._checked = 0
        self._lock = threading.Lock()

    def odd_outputs(self, n_out: int, block: int = 1 << 20) -> np.ndarray:
        """Outputs below ``n_out`` whose float64 time register selects other taps than their phase's
        (they depend only on the rates, so they are found once and cached)."""
        with self._lock:
            found = [self._odd]
            while self._checked < n_out:        # in blocks: never whole-signal index arrays
                t = np.arange(self._checked, self._checked + block, dtype=np.int64)
                tr = t * self.inc
                j = t % self.q
                key_l, key_r, key_n = self.phase_key
                off_l, off_r = self._key(tr)
                bad = (tr.astype(np.int64) != (t // self.q) * self.p + key_n[j]) | (off_l != key_l[j]) | (off_r != key_r[j])
                found.append(t[bad])
                self._checked = int(t[-1]) + 1
            if len(found) > 1:
                self._odd = np.concatenate(found)
            return self._odd[: np.searchsorted(self._odd, n_out)]

    def _key(self, tr: np.ndarray):
        """Table offsets of both wings for time registers ``tr`` (what selects the tap set besides n)."""
        fl = self.scale * (tr - tr.astype(np.int64))
        return (fl * self.per).astype(np.int64), ((self.scale - fl) * self.per).astype(np.int64)

    def taps(self, tr: np.ndarray):
        """Weights for time registers ``tr``: ``n [M]``, left ``[M, L]`` on ``x[n - i]``, right ``[M, L]`` on ``x[n + 1 + i]``."""
        tr = np.asarray(tr, dtype=np.float64)
        n = tr.astype(np.int64)
        frac = self.scale * (tr - n)
        i = np.arange(self.taps_per_wing)[None, :]
        wings = []
        for f in (frac, self.scale - frac):
            pos_f = f * self.per
            off = pos_f.astype(np.int64)
            eta = (pos_f - off)[:, None]
            used = i < ((len(self.win) - off) // self.step)[:, None]
            pos = np.where(used, off[:, None] + i * self.step, 0)
            wings.append(np.where(used, self.win[pos] + eta * self.delta[pos], 0.0))
        return n, wings[0], wings[1]


@lru_cache(maxsize=16)
def _kaiser_plan(orig_sr: int, new_sr: int) -> _KaiserPlan:
    return _KaiserPlan(orig_sr, new_sr)


def _gather_outputs(x: torch.Tensor, plan: _KaiserPlan, t: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """Output samples ``t`` of rows ``x [B, N]``, each with its own weights: ``[B, len(t)]`` in ``dtype``
    (samples outside the signal count as zeros; only the samples needed are read)."""
    L = plan.taps_per_wing
    n, wl, wr = plan.taps(t * plan.inc)
    i = np.arange(L)[None, :]
    idx = torch.from_numpy(np.concatenate([n[:, None] - i, n[:, None] + 1 + i], axis=1)).to(x.device)
    inside = (idx >= 0) & (idx < x.shape[-1])
    vals = x[:, idx.clamp(0, x.shape[-1] - 1)].to(dtype) * inside.to(dtype)
    w = torch.from_numpy(np.concatenate([wl, wr], axis=1)).to(device=x.device, dtype=dtype)
    return (vals * w).sum(-1)


def resample_kaiser_best(wavs: torch.Tensor, orig_sr: int, new_sr: int, *, block: int = 1 << 16,
                         dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Resample ``[..., N]`` as ``resampy.resample(x, orig_sr, new_sr, filter="kaiser_best")`` does;
    returns ``[..., int(N * new_sr / orig_sr)]`` in the input's dtype.

    Zero-padded rows of a batch give, within each row's own output length, exactly the result of
    resampling that row alone. Long inputs are processed in blocks (bounded memory). ``dtype``: the
    arithmetic (float64 by default, as resampy on the original's float64 audio; float32 where the
    device has no float64). Float32 arithmetic leaves rounding noise around -130 dB that VGGish's
    ``log(mel + 0.01)`` magnifies in empty bands (up to 4e-4 on 8 kHz speech, 2e-5 with float64).
    """
    orig_sr, new_sr = _rates(orig_sr, new_sr)
    if orig_sr == new_sr:
        return wavs
    plan = _kaiser_plan(orig_sr, new_sr)
    shape = wavs.shape
    N = shape[-1]
    n_out = int(N * float(new_sr) / float(orig_sr))
    if n_out < 1:
        raise AudioError(f"{N} sample(s) at the input sample rate {orig_sr} Hz are too few to resample to the "
                         f"output sample rate {new_sr} Hz (not one output sample)")
    out_dtype = wavs.dtype
    dtype = dtype if wavs.device.type != "mps" else torch.float32
    x = wavs.reshape(-1, N)                                   # converted to ``dtype`` block by block
    y = torch.empty((x.shape[0], n_out), dtype=out_dtype, device=x.device)
    if plan.kernel is None:                                   # huge reduced ratio: per-output weights
        for t0 in range(0, n_out, block):
            t1 = min(n_out, t0 + block)
            y[:, t0:t1] = _gather_outputs(x, plan, np.arange(t0, t1), dtype).to(out_dtype)
        return y.reshape(*shape[:-1], n_out)
    p, q = plan.p, plan.q
    kernel = plan.kernel.to(device=x.device, dtype=dtype)[:, None, :]      # [q, 1, W]
    W = kernel.shape[-1]
    n_pos = -(-n_out // q)
    left = -plan.d_min                                        # zeros before the signal (and after it)
    step = max(1, min(n_pos, (block * 64) // W))              # positions per convolution call
    for k0 in range(0, n_pos, step):
        k1 = min(n_pos, k0 + step)
        lo, hi = k0 * p - left, (k1 - 1) * p + W - left       # in signal samples
        seg = _zero_padded_slice(x, lo, hi).to(dtype)
        out = F.conv1d(seg[:, None], kernel, stride=p).transpose(1, 2).reshape(x.shape[0], -1)  # [B, q*(k1-k0)]
        take = min(out.shape[-1], n_out - k0 * q)
        y[:, k0 * q: k0 * q + take] = out[:, :take].to(out_dtype)
    # outputs whose float64 time register selects other taps than their phase's (rare; none for many rates)
    odd = plan.odd_outputs(n_out)
    for i0 in range(0, len(odd), block):
        t = odd[i0: i0 + block]
        y[:, torch.from_numpy(t).to(x.device)] = _gather_outputs(x, plan, t, dtype).to(out_dtype)
    return y.reshape(*shape[:-1], n_out)


RESAMPLERS["kaiser_best"] = resample_kaiser_best


def resample_kaiser_best_librosa(wavs: torch.Tensor, orig_sr: int, new_sr: int) -> torch.Tensor:
    """``librosa.resample(res_type="kaiser_best")`` (librosa 0.9, the original's ``librosa.load``): resampy's
    ``kaiser_best`` (:func:`~audio_repr.audio.resample_kaiser_best`, ``int(N * new_sr / orig_sr)`` samples),
    then cut or zero-padded to ``ceil(N * new_sr / orig_sr)`` samples (``librosa.util.fix_length``): at
    44.1 -> 32 kHz usually one zero sample more, which the pre-emphasis and the edge padding see."""
    orig_sr, new_sr = _rates(orig_sr, new_sr)
    if orig_sr == new_sr:
        return wavs
    y = resample_kaiser_best(wavs, orig_sr, new_sr)
    n = int(math.ceil(wavs.shape[-1] * (float(new_sr) / float(orig_sr))))
    return y[..., :n] if y.shape[-1] >= n else F.pad(y, (0, n - y.shape[-1]))


RESAMPLERS["kaiser_best_librosa"] = resample_kaiser_best_librosa


def get_resampler(name: str):
    try:
        return RESAMPLERS[name]
    except KeyError:
        raise ValueError(f"unknown resampler {name!r}; known: {sorted(RESAMPLERS)}") from None
