"""HEAR 2021 API (https://hearbenchmark.com/hear-api.html) for every model.

Each model has a module named after it, ``audio_repr.hear.<name with - replaced by _>`` (for
example ``audio_repr.hear.byola_v1_512``), offering ``load_model(model_file_path="")``,
``get_scene_embeddings(audio, model)``, ``get_timestamp_embeddings(audio, model)`` and the
attributes ``sample_rate``, ``scene_embedding_size``, ``timestamp_embedding_size``. They run in
hear-eval-kit and pass ``hearvalidator``.

``model_file_path`` is a weights file in the model's original format; empty means the usual
resolution (cache, ``AUDIO_REPR_MIRROR``, download).

Sample rate. The HEAR 2021 API accepts 16000, 22050, 44100 or 48000 Hz (hearvalidator's
``ACCEPTABLE_SAMPLE_RATE``). A module declares its model's own rate when the API accepts it;
otherwise (:func:`hear_sample_rate`) the accepted rate, at least as high as the model's (so nothing
the model uses is lost: the 32 kHz EfficientAT and PANNs front ends reach 14-15 kHz), that the
resampler converts from most simply (the largest common divisor with the model's rate): 48000 Hz for
the 32 kHz models (a 3:2 ratio; 44100 Hz would be 441:320). The audio is resampled to the model's rate
with the card's resampler, exactly as :meth:`~audio_repr.Encoder.embed` does for any input rate.

Timestamps are the model's own frame centres in milliseconds, computed from frame indices (no
drift); scene embeddings are the clip embeddings (time-mean + time-max for most families).
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import nn

__all__ = ["HearModel", "load_model", "get_scene_embeddings", "get_timestamp_embeddings", "module_name",
           "hear_sample_rate", "HEAR_SAMPLE_RATES"]

#: the input rates the HEAR 2021 API accepts (hearvalidator's ``ValidateModel.ACCEPTABLE_SAMPLE_RATE``)
HEAR_SAMPLE_RATES = (16000, 22050, 44100, 48000)


def module_name(model: str) -> str:
    return "audio_repr.hear." + model.replace("-", "_")


def hear_sample_rate(model_rate: int) -> int:
    """The rate a HEAR module of a model running at ``model_rate`` Hz declares: ``model_rate`` itself when the
    API accepts it; else, of the accepted rates at least ``model_rate`` (nothing the model uses is lost), the
    one with the largest common divisor with ``model_rate`` (the simplest resampling ratio; ties: the lower).
    32000 -> 48000 (3:2), 8000 -> 16000, 24000 -> 48000. A model above 48 kHz has no lossless rate: an error."""
    import math

    model_rate = int(model_rate)
    if model_rate in HEAR_SAMPLE_RATES:
        return model_rate
    above = [r for r in HEAR_SAMPLE_RATES if r >= model_rate]
    if not above:
        raise ValueError(f"a model at {model_rate} Hz has no HEAR 2021 rate that keeps its band "
                         f"(accepted: {', '.join(map(str, HEAR_SAMPLE_RATES))} Hz)")
    return max(above, key=lambda r: (math.gcd(r, model_rate), -r))


class HearModel(nn.Module):
    """An :class:`~audio_repr.Encoder` with the attributes the HEAR API asks for. ``sample_rate`` is the rate the
    HEAR API is given audio at (:func:`hear_sample_rate`); ``embed`` resamples it to the model's own."""

    def __init__(self, encoder, layers=None, batch_size: int = 16):
        super().__init__()
        self.encoder = encoder
        self.layers = layers
        self.batch_size = batch_size
        self.sample_rate = hear_sample_rate(encoder.sample_rate)
        self.timestamp_embedding_size = int(encoder.output_size(layers))
        self.scene_embedding_size = self.timestamp_embedding_size


def load_model(name: str, model_file_path: str = "", *, layers=None, device=None) -> HearModel:
    import audio_repr

    enc = audio_repr.load(name, weights=model_file_path or None, device=device)
    return HearModel(enc, layers=layers)


def _rows(audio: torch.Tensor, model: HearModel):
    if not torch.is_tensor(audio) or audio.ndim != 2:
        raise ValueError(f"HEAR audio must be a tensor [n_sounds, n_samples], got "
                         f"{tuple(audio.shape) if torch.is_tensor(audio) else type(audio).__name__}")
    return model.encoder.embed(list(audio), sr=model.sample_rate, layers=model.layers,
                               batch_size=model.batch_size)


def get_timestamp_embeddings(audio: torch.Tensor, model: HearModel) -> Tuple[torch.Tensor, torch.Tensor]:
    """``[n_sounds, n_samples]`` -> (embeddings ``[n_sounds, T, D]``, timestamps ms ``[n_sounds, T]``)."""
    embs = _rows(audio, model)
    frames = torch.stack([e.frames for e in embs]).to(audio.device)
    stamps = torch.stack([e.timestamps_ms for e in embs]).to(device=audio.device, dtype=torch.float32)
    return frames, stamps


def get_scene_embeddings(audio: torch.Tensor, model: HearModel) -> torch.Tensor:
    """``[n_sounds, n_samples]`` -> ``[n_sounds, D]``."""
    embs = _rows(audio, model)
    return torch.stack([e.clip for e in embs]).to(audio.device)


def bind(module: str) -> None:
    """Make the module named ``module`` (``audio_repr.hear.<model with - as _>``) the HEAR module of its
    model: ``load_model``, ``get_timestamp_embeddings``, ``get_scene_embeddings``, ``sample_rate``,
    ``scene_embedding_size`` and ``timestamp_embedding_size`` (sizes from the layer table: no network is built;
    ``sample_rate`` is :func:`hear_sample_rate` of the card's)."""
    import sys

    from ..models import layer_table
    from ..registry import get_card

    card = get_card(module.rsplit(".", 1)[-1])
    if module_name(card.name) != module:
        raise ImportError(f"{module} is not the HEAR module of a model (expected {module_name(card.name)})")
    name = card.name

    def _load_model(model_file_path: str = "", device=None) -> HearModel:
        return load_model(name, model_file_path, device=device)

    _load_model.__doc__ = f"Load {name} for the HEAR API (``model_file_path``: weights in the original format)."
    size = int(layer_table(name)[card.default_layer])
    sys.modules[module].__dict__.update(
        load_model=_load_model, get_timestamp_embeddings=get_timestamp_embeddings,
        get_scene_embeddings=get_scene_embeddings, sample_rate=hear_sample_rate(card.sample_rate),
        scene_embedding_size=size, timestamp_embedding_size=size)
