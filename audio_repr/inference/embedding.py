"""The result of embedding one clip."""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np
import torch

from .._io import atomic_write

__all__ = ["Embedding", "NotAnEmbedding"]


class NotAnEmbedding(ValueError):
    """An ``.npz`` that :meth:`Embedding.load` does not read (not written by :meth:`Embedding.save`)."""


@dataclass
class Embedding:
    """Embeddings of one clip.

    ``frames [T, D]`` (float32), ``timestamps_ms [T]`` (float64, centre of each frame's window),
    ``clip [D]``, the ``layers`` used (in order; ``layer_slices`` gives each one's columns of
    ``frames``), the ``model`` name and the clip's ``duration_s``.
    """

    frames: torch.Tensor
    timestamps_ms: torch.Tensor
    clip: torch.Tensor
    layers: List[str]
    model: str
    layer_slices: Dict[str, Tuple[int, int]] = field(default_factory=dict)
    duration_s: float = 0.0
    source: Optional[str] = None

    def layer(self, name: str) -> torch.Tensor:
        """The columns of ``frames`` that hold layer ``name``: ``[T, D_name]``."""
        a, b = self.layer_slices[name]
        return self.frames[:, a:b]

    def to_numpy(self) -> Dict[str, np.ndarray]:
        slices = np.array([self.layer_slices.get(n, (0, 0)) for n in self.layers], dtype=np.int64).reshape(-1, 2)
        return {"frames": self.frames.numpy(), "timestamps_ms": self.timestamps_ms.numpy(),
                "clip": self.clip.numpy(), "layers": np.array(self.layers), "layer_slices": slices,
                "model": np.array(self.model), "duration_s": np.array(self.duration_s),
                **({"source": np.array(self.source)} if self.source is not None else {})}

    def save(self, path: Union[str, os.PathLike]) -> Path:
        """Write an ``.npz`` atomically (``layer_slices`` as ``[L, 2]`` rows in the order of ``layers``)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()               # the zip's many small writes and seeks in memory, one write to the file
        np.savez(buf, **self.to_numpy())
        with atomic_write(path) as f:
            f.write(buf.getbuffer())
        return path

    @classmethod
    def load(cls, path: Union[str, os.PathLike]) -> "Embedding":
        """Read a file written by :meth:`save` (the one reader of that schema). Raises :class:`NotAnEmbedding`
        for an ``.npz`` that is not one (no ``clip``, or a ``--consolidate`` file's ``files``)."""
        with np.load(path) as d:
            if "files" in d or "clip" not in d:
                raise NotAnEmbedding(f"{path} is not an embedding file written by Embedding.save")
            layers = [str(x) for x in d["layers"]]
            slices = ({n: (int(a), int(b)) for n, (a, b) in zip(layers, d["layer_slices"])}
                      if "layer_slices" in d else {})
            return cls(frames=torch.from_numpy(d["frames"]), timestamps_ms=torch.from_numpy(d["timestamps_ms"]),
                       clip=torch.from_numpy(d["clip"]), layers=layers, model=str(d["model"]), layer_slices=slices,
                       duration_s=float(d["duration_s"]), source=str(d["source"]) if "source" in d else str(path))
