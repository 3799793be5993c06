"""Layer selection, temporal alignment and fusion of per-layer features.

The EUSIPCO 2022 recipe (Niizumi et al., "Composing general audio representation by fusing
multilayer features of a pre-trained model"): each chosen layer's per-time-step features
(channel x frequency flattened) are brought to the deepest chosen layer's time resolution by
max-pooling over time, then concatenated; the clip embedding is mean + max over time.
"""

from __future__ import annotations

from typing import List, Mapping, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["resolve_layers", "align_to_stride", "fuse", "mean_max_pool", "WeightedLayerSum"]

LayerSpec = Union[None, str, int, Sequence[Union[str, int]]]


def resolve_layers(spec: LayerSpec, layer_names: Sequence[str], default: str,
                   fusion: Sequence[str]) -> List[str]:
    """``None`` -> the standard output; ``"fusion"`` -> the family's recipe; ``"all"``; names or
    indices (negative allowed) -> those layers, in the given order."""
    names = list(layer_names)
    if spec is None:
        return [default]
    if isinstance(spec, str):
        if spec == "fusion":
            return list(fusion)
        if spec == "all":
            return names
        spec = [s.strip() for s in spec.split(",")] if "," in spec else [spec]
    elif isinstance(spec, int):
        spec = [spec]
    out: List[str] = []
    for s in spec:
        if isinstance(s, int) or (isinstance(s, str) and s.lstrip("-").isdigit()):
            i = int(s)
            if not -len(names) <= i < len(names):
                raise ValueError(f"layer index {i} out of range: this model has {len(names)} layers {names}")
            s = names[i]
        if s not in names:
            raise ValueError(f"unknown layer {s!r}; this model's layers are {names} (or 'fusion', 'all')")
        if s not in out:
            out.append(s)
    if not out:
        raise ValueError("layers= selects no layer")
    return out


def align_to_stride(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Max-pool ``[..., T, D]`` over time by ``factor`` (floor of the length, as the conv stack does)."""
    if factor == 1:
        return x
    T = x.shape[-2] // factor
    x = x[..., : T * factor, :]
    return x.reshape(*x.shape[:-2], T, factor, x.shape[-1]).amax(dim=-2)


def fuse(layers: Mapping[str, torch.Tensor], strides: Mapping[str, int]) -> torch.Tensor:
    """Concatenate layers ``[..., T_l, D_l]`` after max-pooling each to the coarsest stride among them."""
    target = max(strides[n] for n in layers)
    parts = []
    for n, x in layers.items():
        if target % strides[n]:
            raise ValueError(f"layer {n} (stride {strides[n]}) cannot be aligned to stride {target}")
        parts.append(align_to_stride(x, target // strides[n]))
    T = min(p.shape[-2] for p in parts)
    return torch.cat([p[..., :T, :] for p in parts], dim=-1)


def mean_max_pool(frames: torch.Tensor) -> torch.Tensor:
    """Clip embedding as BYOL-A/EVAR: mean over time + max over time (summed). ``[..., T, D] -> [..., D]``."""
    return frames.mean(dim=-2) + frames.amax(dim=-2)


class WeightedLayerSum(nn.Module):
    """Trainable softmax-weighted sum of same-sized layers (S3PRL/SUPERB featurizer).

    ``forward(layers)`` takes a list (or stacked tensor ``[L, ..., D]``) of layer features and
    returns ``sum_l softmax(w)_l * norm(x_l)``. Weights start equal; ``layer_norm=True`` applies a
    parameter-free layer norm to each layer first, as SUPERB does.
    """

    def __init__(self, n_layers: int, layer_norm: bool = False):
        super().__init__()
        if n_layers < 1:
            raise ValueError("n_layers must be >= 1")
        self.weights = nn.Parameter(torch.zeros(n_layers))
        self.layer_norm = layer_norm

    def forward(self, layers: Union[Sequence[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        x = torch.stack(list(layers)) if not torch.is_tensor(layers) else layers
        if x.shape[0] != self.weights.numel():
            raise ValueError(f"expected {self.weights.numel()} layers, got {x.shape[0]}")
        if self.layer_norm:
            x = F.layer_norm(x, x.shape[-1:])
        w = torch.softmax(self.weights, dim=0).to(x.dtype)
        return torch.einsum("l,l...->...", w, x)
