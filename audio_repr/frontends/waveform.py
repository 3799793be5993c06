"""``Waveform``: the raw samples as features, for the models that read the waveform themselves (the wav2vec 2.0
family's convolutional feature encoder, Whisper's encoder with its own log-mel of each 30-s window).

Features are ``[B, 1, N]``: one "frame" per sample (``hop_length = frame_length = 1``), so the encoder's
pieces, lengths and padding are counted in samples and each backbone states its own stride (320 samples,
20 ms at 16 kHz) and window. With ``normalize=True`` each clip is brought to zero mean and unit variance over
its own samples (``(x - mean) / sqrt(var + 1e-7)``, the population variance) once, before any piece is cut, as
transformers' ``Wav2Vec2FeatureExtractor(do_normalize=True)`` does for one clip: the result does not depend on
the batch or on how long audio is cut.
"""

from __future__ import annotations

import torch

from . import FrontEnd

__all__ = ["Waveform"]


class Waveform(FrontEnd):
    """Samples as ``[B, 1, N]`` features; ``normalize``: per-clip zero mean, unit variance (``eps`` 1e-7).

    Time of frame (sample) ``t``: ``(t + 1/2) / sample_rate`` (the middle of the sample's span, as for any
    uncentred front end: a backbone's window of ``w`` samples then has its centre at ``start + w / 2``), or with
    ``center=True`` ``t / sample_rate`` (for a backbone whose frames are centred on a sample: Whisper's)."""

    def __init__(self, sample_rate: int = 16000, normalize: bool = False, eps: float = 1e-7, center: bool = False):
        super().__init__(sample_rate=sample_rate, hop_length=1, frame_length=1, fft_size=1, n_mels=1,
                         centred=bool(center))
        self.normalize, self.eps, self.center = bool(normalize), float(eps), bool(center)
        # the "filterbank" of a front end that passes the samples through: one input bin, one output band
        self.register_buffer("fb", torch.ones(1, 1), persistent=False)

    def frames_for(self, n_samples: int) -> int:
        return max(int(n_samples), 0)

    def min_samples(self, n_frames: int) -> int:
        return max(int(n_frames), 0)

    def edge_pad(self, wav: torch.Tensor) -> torch.Tensor:
        """One clip [N], normalised over its own samples when ``normalize``: mean and variance accumulated in
        float64 a million samples at a time (an hour of audio needs no float64 copy of itself), applied in the
        waveform's dtype as the original's float32 arrays are."""
        if not self.normalize or wav.shape[-1] == 0:
            return wav
        acc = torch.float64 if wav.device.type != "mps" else torch.float32
        step = 1 << 20
        n = wav.shape[-1]
        total = sum(wav[i: i + step].to(acc).sum() for i in range(0, n, step))
        mean = total / n
        var = sum((wav[i: i + step].to(acc) - mean).square().sum() for i in range(0, n, step)) / n
        scale = torch.rsqrt(var + self.eps)
        return (wav - mean.to(wav.dtype)) * scale.to(wav.dtype)

    def window_frames(self, padded: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        if stop <= start:
            return self._no_frames(padded)
        return self._span(padded, start, stop).float()[..., None, :]
