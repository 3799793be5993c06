"""Running first and second moments over blocks, in float64 around the first block's mean (numerically
stable for long signals; one pass, bounded memory). Used for dataset statistics (``calibrate``) and per-clip
normalisation alike."""

from __future__ import annotations

from typing import Optional, Tuple

import torch

__all__ = ["RunningMoments"]


class RunningMoments:
    def __init__(self):
        self.shift: Optional[float] = None
        self.s = 0.0     # sum of (x - shift)
        self.ss = 0.0    # sum of (x - shift)^2
        self.n = 0

    def add(self, block: torch.Tensor) -> None:
        x = block.double()
        if self.shift is None:
            self.shift = float(x.mean())
        d = x - self.shift
        self.s += float(d.sum())
        self.ss += float((d * d).sum())
        self.n += d.numel()

    def mean_std(self, ddof: int = 0) -> Tuple[float, float]:
        """``(mean, std)``; ``ddof=1`` is the Bessel-corrected std (as torch's ``x.std()``), 0 the population one."""
        if not self.n:
            raise ValueError("no values")
        var = max(self.ss - self.s * self.s / self.n, 0.0) / max(self.n - ddof, 1)
        return self.shift + self.s / self.n, var ** 0.5
