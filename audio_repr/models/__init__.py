"""The families: one module each, declaring its network (a :class:`~audio_repr.models.base.Backbone`), its
cards and its checkpoint reader, and registering them. Importing this package imports every family module
in it, which fills the registries; adding a family is adding a module here."""

from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache
from typing import Dict, List

from ..registry import Registry
from .base import Backbone, Family, LayerOutputs, Tiling

__all__ = ["Backbone", "Family", "LayerOutputs", "Tiling", "register_family", "family", "families", "layer_table"]

_FAMILIES = Registry("family")


def register_family(fam: Family) -> Family:
    return _FAMILIES.add(fam.name, fam)


def family(name: str) -> Family:
    try:
        return _FAMILIES[name]
    except KeyError:
        raise KeyError(f"unknown model family {name!r} (registered: {', '.join(sorted(_FAMILIES))})") from None


def families() -> Dict[str, Family]:
    return dict(_FAMILIES)


@lru_cache(maxsize=None)
def _meta_network(name: str) -> Backbone:
    import torch

    from ..registry import get_card

    card = get_card(name)
    with torch.device("meta"):          # shapes only: no memory, no weights
        return family(card.family).build_network(**card.arch)


def layer_table(name: str) -> Dict[str, int]:
    """``layer -> dimension`` of model ``name``'s network, read from the network built on the meta device
    (nothing allocated, no weights): what a command line or the HEAR modules need before loading a model."""
    return dict(_meta_network(name).layer_dims)


def resolve_model_layers(name: str, layers) -> List[str]:
    """The layer names ``layers`` (``None``, ``"fusion"``, ``"all"``, names or indices) selects of model ``name``,
    checked against its :func:`layer_table` without loading the model."""
    from ..fusion import resolve_layers
    from ..registry import get_card

    card = get_card(name)
    return resolve_layers(layers, list(layer_table(card.name)), card.default_layer, card.fusion_layers)


for _m in pkgutil.iter_modules(__path__):
    if _m.name != "base":
        importlib.import_module(f"{__name__}.{_m.name}")
