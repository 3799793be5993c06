"""The two contracts between a family and the encoder: the :class:`Backbone` a family's network implements,
and the :class:`Family` record a family file registers (how to build its front end and network from a card
and how to read its checkpoints).

A backbone states everything the encoder needs to know about it — its layers (dimension, time stride,
window), its time geometry (:class:`Tiling`: how long input is cut into pieces, the shortest input, the
padding rule) and how a clip vector is made — and ``forward`` returns every layer. The encoder reads these
attributes; it never probes for optional ones.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Literal, Mapping, Optional, Tuple

import torch
from torch import nn

__all__ = ["Tiling", "Backbone", "LayerOutputs", "Family", "TextTower", "ClipPooling", "length_mask"]

ClipPooling = Literal["mean_max", "mean", "token"]


def length_mask(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    """The padding mask of a batch: ``[B, steps]``, True at each row's own time steps (``t < lengths[row]``) and
    False past its end. ``lengths`` [B] (on the device the mask is made on). The one way every backbone and the
    encoder tell real steps from padding: reshape it to the tensor's time axis, then multiply, fill or select."""
    return torch.arange(steps, device=lengths.device)[None, :] < lengths[:, None]


@dataclass(frozen=True)
class Tiling:
    """How a backbone reads long input, in front-end frames.

    * ``context_frames > 0`` — **context pieces**: pieces of ``chunk_frames`` (a multiple of the largest
      layer stride) each read with ``context_frames`` real neighbouring frames on both sides; the outputs
      for the context are dropped, so the stitched result equals the whole-clip computation (the context
      exceeds the receptive field).
    * ``context_frames == 0`` — **independent windows**, the model's own units: windows of ``chunk_frames``
      starting every ``chunk_frames`` frames; with ``overlap_frames`` each window also reads that many real
      frames after its own, and the last one takes the rest when it fits.

    ``min_piece_frames`` pads every piece's features to at least that many frames; ``pad_value`` is what
    frames past a clip's end hold: ``None`` zero after normalisation, a number that raw feature value
    before normalisation.
    """

    chunk_frames: int
    context_frames: int = 0
    overlap_frames: int = 0
    min_piece_frames: int = 0
    pad_value: Optional[float] = None

    @property
    def independent_windows(self) -> bool:
        """Whether pieces are the model's own independent windows (``context_frames == 0``), not context pieces."""
        return self.context_frames == 0


class LayerOutputs(OrderedDict):
    """``{layer: [B, T_layer, D_layer]}``, plus ``clip`` (``{layer: [B, D]}``) for backbones whose clip
    vector is their own (``clip_pooling = "token"``); ``None`` otherwise."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.clip: Optional[Dict[str, torch.Tensor]] = None


class Backbone(nn.Module, ABC):
    """A family's network on normalised features ``[B, F, T]`` and each row's true frame count.

    Subclasses set ``layer_dims`` and ``layer_strides`` (ordered ``name -> int``), ``min_frames`` and
    ``tiling``, and may override ``clip_pooling``, ``layer_windows``, :meth:`out_frames` and :meth:`in_frames`.
    Frames past a row's length must not change the row's outputs (the batch-equals-alone rule).
    """

    layer_dims: Dict[str, int]
    layer_strides: Dict[str, int]
    min_frames: int = 1
    tiling: Tiling
    #: how the clip embedding is made from the frames: "mean_max" (time mean + time max), "mean", or
    #: "token" (the backbone's own per-piece clip vectors, ``LayerOutputs.clip``)
    clip_pooling: ClipPooling = "mean_max"

    @property
    def layer_windows(self) -> Dict[str, int]:
        """Front-end frames one output step of each layer reads (its timestamps are the windows' centres)."""
        return dict(self.layer_strides)

    @property
    def max_stride(self) -> int:
        return max(self.layer_strides.values())

    def out_frames(self, n: int, layer: str) -> int:
        """Output steps of ``layer`` for a piece of ``n`` real front-end frames."""
        return n // self.layer_strides[layer]

    def in_frames(self, n: int) -> int:
        """Front-end frames the backbone reads for a row of ``n`` real frames (the rest is padding)."""
        return n

    #: layers whose ``forward`` output is the input of a clip-level head (M2D-CLAP's ``joint``: a non-linear
    #: projection of the clip's mean): the encoder pools them as the others, then :meth:`apply_head` maps both the
    #: pooled clip vector and each frame (and ``Encoder.forward`` each frame of its batch)
    headed_layers: Tuple[str, ...] = ()

    def apply_head(self, layer: str, x: torch.Tensor) -> torch.Tensor:
        """A headed layer's vectors ``[..., D]`` (frames or a pooled clip vector, on any device) -> its final ones,
        on the network's device (the same sizes)."""
        return x

    def weights_norm_stats(self) -> Optional[Tuple[float, float]]:
        """The fixed normalisation ``(mean, std)`` the loaded weights carry (M2D checkpoints store theirs), which
        :func:`audio_repr.load` then uses instead of the card's; ``None`` (the default): the card's."""
        return None

    @abstractmethod
    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> Mapping[str, torch.Tensor]:
        """Every layer: ``{name: [B, T_layer, D_layer]}`` (a :class:`LayerOutputs` when there are clip vectors)."""


class TextTower(ABC):
    """What an audio-text backbone (CLAP) adds: a text encoder into the joint space of its ``joint`` layer.

    ``text_dim`` (the joint space's size), ``default_template`` (the zero-shot prompt, ``{}`` for the label),
    :meth:`embed_text` (texts -> ``[N, text_dim]``, L2-normalised, on the network's device) and
    :meth:`logit_scale` (the trained temperature's inverse: zero-shot logits are ``scale * audio @ text.T``)."""

    text_dim: int
    default_template: str = "{}"

    @abstractmethod
    def embed_text(self, texts: List[str]) -> torch.Tensor:
        """``[N, text_dim]`` unit vectors in the joint space."""

    @abstractmethod
    def logit_scale(self) -> float:
        """The factor of the cosine similarities in the original's zero-shot logits."""


@dataclass(frozen=True)
class Family:
    """What a family file registers: builders from a card's ``frontend``/``arch`` keyword arguments, and the
    reader of its checkpoints (``path -> state dict`` of the backbone, from any of the original layouts)."""

    name: str
    build_frontend: Callable[..., nn.Module]
    build_network: Callable[..., Backbone]
    load_state: Callable[[Any], Dict[str, torch.Tensor]]
