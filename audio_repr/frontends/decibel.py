"""``DecibelMelSpectrogram``: torchaudio's ``MelSpectrogram`` followed by ``AmplitudeToDB(top_db=...)``, the front end
of Dasheng and CED, batched, with the decibel floor relative to each clip's whole length.

Values: ``10 log10(max(mel, amin))`` of the power mel spectrogram (centred STFT with reflect padding, periodic Hann
window, HTK mel filters without normalisation: :class:`~audio_repr.frontends.logmel.LogMelSpectrogram`'s
arithmetic), then ``max(dB, M - top_db)`` where ``M`` is the largest dB value of the clip.

The floor. torchaudio computes ``M`` over the tensor it is given: for one clip, over the clip; for a padded batch
``[B, N]`` over the whole batch (``amplitude_to_DB`` packs the batch as channels of one item), so a quiet clip
batched with a loud one gets a floor set by the loud one. Here ``M`` is always the clip's own maximum over all
its frames (:meth:`clip_reference`, computed in blocks of frames: bounded memory for long audio), applied to
every piece of the clip (:meth:`apply_reference`): a clip gives the numbers of the original run on the clip
alone, whatever it is batched with and however long audio is cut into pieces.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from .logmel import LogMelSpectrogram

__all__ = ["DecibelMelSpectrogram"]


class DecibelMelSpectrogram(LogMelSpectrogram):
    """Power mel spectrogram in dB (``amin`` 1e-10, reference 1), floored ``top_db`` below the clip's maximum.

    Args as :class:`~audio_repr.frontends.logmel.LogMelSpectrogram` (Dasheng / CED: ``n_fft=512``,
    ``win_length=512``, ``hop_length=160``, 64 HTK mels 0-8000 Hz, centred), plus ``top_db`` (``None``: no floor)
    and ``amin``. ``window_frames`` gives the dB values without the floor; :meth:`apply_reference` applies it."""

    #: frames per block when a clip's maximum is computed (bounded memory for long clips)
    block_frames = 4096

    def __init__(self, sample_rate: int = 16000, n_fft: int = 512, win_length: Optional[int] = None,
                 hop_length: int = 160, n_mels: int = 64, f_min: float = 0.0, f_max: float = 8000.0,
                 mel_scale: str = "htk", power: float = 2.0, center: bool = True, top_db: Optional[float] = 120.0,
                 amin: float = 1e-10):
        super().__init__(sample_rate=sample_rate, n_fft=n_fft, win_length=win_length, hop_length=hop_length,
                         n_mels=n_mels, f_min=f_min, f_max=f_max, mel_scale=mel_scale, power=power, center=center)
        if top_db is not None and not top_db >= 0:
            raise ValueError(f"top_db must be >= 0 or None, got {top_db!r}")
        if not amin > 0:
            raise ValueError(f"amin must be > 0, got {amin!r}")
        self.top_db = None if top_db is None else float(top_db)
        self.amin = float(amin)

    def window_frames(self, padded: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """dB frames ``start..stop-1`` of edge-padded waveforms ``padded`` [B, M], without the floor."""
        if stop <= start:
            return self._no_frames(padded)
        mel = self.mel_frames(padded, start, stop)
        # AmplitudeToDB's multiplier: 10 for power, 20 for magnitude; reference 1 (no offset)
        return (10.0 if self.power == 2.0 else 20.0) * torch.log10(torch.clamp(mel, min=self.amin))

    def clip_reference(self, padded: torch.Tensor) -> Optional[torch.Tensor]:
        """The largest dB value of one clip prepared by ``edge_pad`` ([M]), over all its frames (0-d tensor);
        ``None`` without a floor."""
        if self.top_db is None:
            return None
        n = self.frames_for(padded.shape[-1] - 2 * self.pad)
        best = None
        for a in range(0, n, self.block_frames):
            m = self.window_frames(padded[None], a, min(n, a + self.block_frames)).amax()
            best = m if best is None else torch.maximum(best, m)
        return best if best is not None else padded.new_tensor(10.0 * torch.log10(torch.tensor(self.amin)).item())

    def apply_reference(self, frames: torch.Tensor, refs: Sequence[Optional[torch.Tensor]]) -> torch.Tensor:
        """``max(dB, M - top_db)`` per row, ``M`` the row's clip maximum (``refs``)."""
        if self.top_db is None:
            return frames
        if len(refs) != frames.shape[0] or any(r is None for r in refs):
            raise ValueError(f"one clip maximum per row expected ({frames.shape[0]} rows, got {len(refs)})")
        floor = torch.stack([r.to(frames.device, frames.dtype).reshape(()) for r in refs]) - self.top_db
        return torch.maximum(frames, floor[:, None, None])
