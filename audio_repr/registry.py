"""Model cards and the registry: name -> card. Each family file in ``audio_repr/models/`` declares its cards
next to its network and registers them; importing ``audio_repr`` imports ``audio_repr.models``, which fills the
registry (this module imports nothing of the package: the registry is below the families)."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field, replace
from typing import Dict, List, Mapping, Optional, Tuple

__all__ = ["ModelCard", "Normalisation", "register", "get_card", "list_models", "UnknownModelError"]


class UnknownModelError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


@dataclass(frozen=True)
class Normalisation:
    """How features are normalised before the network: ``(x - mean) / (scale * std)``.

    ``mean`` and ``std`` are statistics of the features (``calibrate()`` replaces them with a dataset's);
    ``scale`` is part of the recipe, not a statistic (AST divides by two standard deviations). With
    ``per_clip`` each clip uses its own mean and (Bessel-corrected) std, as the originals that normalise a
    batch of one; ``mean``/``std`` are then used only once fixed statistics are set."""

    mean: float
    std: float
    scale: float = 1.0
    per_clip: bool = False

    def __post_init__(self):
        import math

        if not (math.isfinite(self.mean) and math.isfinite(self.std) and self.std > 0
                and math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"invalid normalisation statistics mean={self.mean}, std={self.std}, scale={self.scale}")

    @property
    def divisor(self) -> float:
        return self.scale * self.std

    def fixed(self, mean: float, std: float) -> "Normalisation":
        """The same recipe (scale) with fixed statistics ``mean``, ``std``."""
        return replace(self, mean=float(mean), std=float(std), per_clip=False)


@dataclass(frozen=True)
class ModelCard:
    """What a model is: its family, front end and network arguments, normalisation, layers, weights file,
    licence and citation. What the network itself knows (layer sizes, strides, how it tiles long input,
    how it pools a clip) is not restated here: the network states it (``audio_repr.models.base.Backbone``)."""

    name: str
    family: str                      # a registered family (audio_repr.models.base.Family)
    description: str
    sample_rate: int
    frontend: Mapping                # keyword arguments of the family's front end
    arch: Mapping                    # keyword arguments of the family's network
    normalisation: Normalisation
    default_layer: str
    fusion_layers: Tuple[str, ...]
    weights: Optional[str]           # the weights file (a key of weights_manifest.json's "files")
    licence: str                     # the weights' licence (the one place it is stated)
    citation: str
    paper: str
    resampler: str = "sinc_hann"     # torchaudio's default windowed sinc (see audio.py)
    cpu_batch_size: int = 16         # embed()'s default batch on a CPU (pieces per batch; measured per family:
                                     # CNNs whose activations outgrow the caches prefer small batches)
    cpu_batch_frames: Optional[int] = None   # instead, on a CPU: as many pieces as fit in this many front-end
                                     # frames (padded batch), at least one: short clips batch widely, long ones
                                     # alone (the activations of a batch stay in the caches; measured per family)
    published: Mapping = field(default_factory=dict)
    labels: Optional[str] = None     # the class names of the "logits" layer, a label set of
                                     # audio_repr.inference.tagging ("audioset"); None: the model cannot tag
    companions: Tuple[str, ...] = ()   # files of the manifest the model needs besides its weights (a text
                                     # tower's tokenizer, encoder): fetched with it by `audio-repr download`

    @property
    def norm_stats(self) -> Tuple[float, float]:
        return (self.normalisation.mean, self.normalisation.std)

    def to_dict(self) -> Dict:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["frontend"], d["arch"], d["published"] = dict(self.frontend), dict(self.arch), dict(self.published)
        n = self.normalisation
        d["normalisation"] = {"mean": n.mean, "std": n.std, "scale": n.scale, "per_clip": n.per_clip}
        return d


class Registry(dict):
    """``name -> item``, where registering a name twice is an error (two files claiming one name)."""

    def __init__(self, what: str):
        super().__init__()
        self.what = what

    def add(self, name: str, item):
        if name in self:
            raise ValueError(f"{self.what} {name!r} registered twice")
        self[name] = item
        return item


_REGISTRY: "Registry" = Registry("model")


def register(card: ModelCard) -> ModelCard:
    return _REGISTRY.add(card.name, card)


def _filled() -> Dict[str, ModelCard]:
    return _REGISTRY


def _natural(name: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def list_models(family: Optional[str] = None) -> List[str]:
    """Registered model names (natural order), optionally of one family."""
    return sorted((n for n, c in _filled().items() if family is None or c.family == family), key=_natural)


def get_card(name: str) -> ModelCard:
    reg = _filled()
    if name in reg:
        return reg[name]
    key = name.lower().replace("_", "-")
    for k in (key, key.replace(".", "")):      # dasheng-0.6b: the paper's spelling of dasheng-06b
        if k in reg:
            return reg[k]
    close = difflib.get_close_matches(key, list(reg), n=4, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise UnknownModelError(f"unknown model {name!r}.{hint} Available: {', '.join(list_models())}")
