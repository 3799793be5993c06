"""Any model here as an X-ARES encoder (jimbozhang/xares, the eXtensive Audio Representation and Evaluation Suite).

X-ARES's contract: a ``torch.nn.Module`` whose class name ends with ``Encoder``, with ``sampling_rate`` (Hz),
``output_dim`` and ``hop_size_in_ms``, whose ``forward(audio [B, N] at sampling_rate)`` returns frames
``[B, T, D]`` (``D == output_dim``, one frame per ``hop_size_in_ms``); its runner instantiates the class without
arguments (``python -m xares.run my_encoder.py tasks/*.py``) and feeds clips of up to 10 minutes, so a file for
X-ARES is a two-line subclass::

    from audio_repr.xares import XaresEncoder

    class BYOLAEncoder(XaresEncoder):
        def __init__(self):
            super().__init__("byola-v1-512")          # weights=..., layers="fusion", device=... as for load

``forward`` embeds each row with :meth:`Encoder.embed` (the model's own front end and normalisation, long audio
in bounded memory by the encoder's pieces, clips shorter than the model's minimum zero-padded, centred, as
``short="pad"``) and stacks the frames; the adapter is a module holding the encoder, so X-ARES's ``.to(device)``
moves it.
"""

from __future__ import annotations

from typing import Optional, Union

import torch
from torch import nn

from .inference.encoder import Encoder
from .inference.loader import load

__all__ = ["XaresEncoder"]


class XaresEncoder(nn.Module):
    """An :class:`~audio_repr.Encoder` behind X-ARES's encoder contract (see the module docstring).

    ``model``: a model name (loaded with ``weights``, ``device``; ``pretrained=False`` for a random network) or an
    Encoder already loaded. ``layers``: as for :meth:`Encoder.embed` (several are pooled to the coarsest one's
    hop, which ``hop_size_in_ms`` reports)."""

    def __init__(self, model: Union[str, Encoder], *, layers=None, weights=None, device=None,
                 pretrained: bool = True, batch_size: Optional[int] = None):
        super().__init__()
        if isinstance(model, Encoder):
            if weights is not None or device is not None or not pretrained:
                raise ValueError("model is an Encoder: weights, device and pretrained are its own")
            enc = model
        else:
            enc = load(model, weights=weights, device=device, pretrained=pretrained)
        self.encoder = enc.eval()
        self.layers = enc._layers(layers)
        self.batch_size = batch_size
        self.sampling_rate = int(enc.sample_rate)
        self.output_dim = int(enc.output_size(self.layers))
        self.hop_size_in_ms = float(max(enc.frame_hop_ms(n) for n in self.layers))

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """``audio [B, N]`` (or ``[N]``) at :attr:`sampling_rate` -> frames ``[B, T, output_dim]`` (float32, on the
        encoder's device)."""
        if not isinstance(audio, torch.Tensor):
            audio = torch.as_tensor(audio)
        if audio.ndim == 1:
            audio = audio[None]
        if audio.ndim != 2:
            raise ValueError(f"expected audio [B, N] at {self.sampling_rate} Hz, got shape {tuple(audio.shape)}")
        rows = [a.float() for a in audio]
        embs = self.encoder.embed(rows, sr=self.sampling_rate, layers=self.layers, batch_size=self.batch_size,
                                  short="pad")
        return torch.stack([e.frames for e in embs]).to(self.encoder.device)
