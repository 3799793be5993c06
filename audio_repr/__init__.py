"""audio-repr: pretrained general-purpose audio encoders behind one faithful, batched API.

>>> import audio_repr
>>> "byola-v1-512" in audio_repr.list_models()
True
"""

from __future__ import annotations

from typing import Optional, Union

import torch

from .audio import AudioError, load_audio
from .encoder import Embedding, Encoder
from .registry import ModelCard, UnknownModelError, get_card, list_models
from .weights import HashMismatchError, WeightsError, WeightsNotFoundError

__version__ = "0.1.0"

__all__ = ["load", "list_models", "Encoder", "Embedding", "load_audio", "get_card", "ModelCard",
           "AudioError", "UnknownModelError", "WeightsError", "WeightsNotFoundError", "HashMismatchError"]


def load(name: str, *, weights=None, device: Optional[Union[str, torch.device]] = None,
         dtype: Optional[torch.dtype] = None, pretrained: bool = True) -> Encoder:
    """Build the encoder ``name`` (see :func:`list_models`).

    ``weights``: a local file (or folder) in the original format; otherwise the cache, the mirror
    (``AUDIO_REPR_MIRROR``) and finally the official source are tried (see ``audio_repr.weights``).
    ``pretrained=False`` gives random initialisation. ``device`` and ``dtype`` apply to the network;
    the front end always computes in float32 on the same device.
    """
    from . import weights as W
    from .models import family

    card = get_card(name)
    fam = family(card.family)
    frontend = fam.build_frontend(card)
    network = fam.build_network(card.arch)
    if pretrained:
        path = W.resolve(card.name, weights)
        loader = getattr(fam, "load_weights", None)
        if loader is not None:
            state = loader(path)
        else:
            state = fam.convert_state_dict(W.load_checkpoint(path))
        _load_state(network, state, path, card.name)
    elif weights is not None:
        raise ValueError("weights= was given together with pretrained=False; drop one of them")
    enc = Encoder(card, frontend, network)
    enc.eval()
    if device is not None:
        enc.to(torch.device(device))
    if dtype is not None:
        enc.network.to(dtype)
    return enc


def _load_state(network: torch.nn.Module, state, path, model: str) -> None:
    own = network.state_dict()
    if not state:
        raise WeightsError(f"{path}: no parameters of a {model} network were found in this checkpoint")
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    wrong = [(k, tuple(state[k].shape), tuple(own[k].shape)) for k in own
             if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            parts.append("shape mismatch: " + "; ".join(f"{k} is {a} in the file, {b} in {model}" for k, a, b in wrong[:4]))
        if missing:
            parts.append(f"missing {len(missing)} tensor(s), e.g. {missing[:4]}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} tensor(s), e.g. {unexpected[:4]}")
        raise WeightsError(f"{path} does not fit model {model!r} (is it the checkpoint of another model?): "
                           + "; ".join(parts))
    network.load_state_dict({k: state[k] for k in own if k in state}, strict=False)
