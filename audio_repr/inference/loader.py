"""Building an encoder: :func:`load` (a card's front end and network, its weights resolved and checked) and
:func:`check_device`. Re-exported as ``audio_repr.load`` and ``audio_repr.check_device``."""

from __future__ import annotations

from typing import List, Optional, Union

import torch

from ..registry import get_card
from ..weights import WeightsError
from .encoder import Encoder

__all__ = ["load", "check_device"]


#: dtype names ``load`` accepts (each also with a ``torch.`` prefix), and the dtype each names.
_DTYPE_NAMES = {"float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
               "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
               "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
               "float64": torch.float64, "fp64": torch.float64, "double": torch.float64}


def _resolve_dtype(dtype) -> Optional[torch.dtype]:
    """``None``, ``torch.float32/float16/bfloat16/float64`` or one of their ``_DTYPE_NAMES`` -> the dtype (or None)."""
    if dtype is None:
        return None
    if isinstance(dtype, torch.dtype) and dtype in _DTYPE_NAMES.values():
        return dtype
    if isinstance(dtype, str):
        key = dtype.strip().lower()
        key = key[len("torch."):] if key.startswith("torch.") else key
        if key in _DTYPE_NAMES:
            return _DTYPE_NAMES[key]
    names = ", ".join(repr(n) for n in _DTYPE_NAMES)
    raise ValueError(f"dtype {dtype!r} is not accepted; accepted: a torch.dtype (torch.float32, "
                     f"torch.float16, torch.bfloat16, torch.float64) or one of the names {names} "
                     f"(also written 'torch.bfloat16' etc.)")


def _available_devices() -> List[str]:
    out = ["cpu"]
    if torch.cuda.is_available():
        out += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if torch.backends.mps.is_available():
        out.append("mps")
    return out


def check_device(device: Union[str, int, torch.device]) -> torch.device:
    """The ``torch.device`` for ``device`` if this torch can run a model on it here, else a one-line
    ``ValueError`` naming the device, why it is not usable and the devices that are (e.g. ``device 'cuda' is
    not available: this torch (2.3.0+cpu) has no CUDA support; available: cpu``).

    Checked: the device string itself, CUDA (this torch's CUDA support, a visible device, the index below
    ``torch.cuda.device_count()``), MPS, and other backends torch has a module for (``torch.xpu``, ...).
    Nothing is allocated. :func:`load` calls it before doing any other work; a command line can call it
    first too.
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"invalid device {device!r}: not a device torch understands (e.g. 'cpu', 'cuda', "
                         f"'cuda:1', 'mps'); available: {', '.join(_available_devices())}") from None
    shown = str(dev)
    why = None
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
                why = f"this torch ({torch.__version__}) has no CUDA support"
            else:
                why = (f"this torch ({torch.__version__}) finds no CUDA device (no GPU or driver, or "
                       f"CUDA_VISIBLE_DEVICES hides them)")
        elif dev.index is not None and dev.index >= torch.cuda.device_count():
            why = f"torch sees {torch.cuda.device_count()} CUDA device(s)"
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            why = (f"this torch ({torch.__version__}) is not built with MPS" if not torch.backends.mps.is_built()
                   else "MPS is not usable on this machine (it needs macOS 12.3+ and an Apple-silicon GPU)")
    else:
        backend = getattr(torch, dev.type, None)
        is_available = getattr(backend, "is_available", None)
        if not callable(is_available) or not is_available():
            why = f"torch cannot run a model on '{dev.type}' here"
        else:
            count = getattr(backend, "device_count", None)
            if dev.index is not None and callable(count) and dev.index >= count():
                why = f"torch sees {count()} {dev.type} device(s)"
    if why is None:
        return dev
    raise ValueError(f"device {shown!r} is not available: {why}; available: {', '.join(_available_devices())}")


def load(name: str, *, weights=None, device: Optional[Union[str, torch.device]] = None,
         dtype: Optional[Union[str, torch.dtype]] = None, pretrained: bool = True) -> Encoder:
    """Build the encoder ``name`` (see :func:`list_models`).

    ``weights``: a local file (or folder) in the original format; otherwise the cache, the mirror
    (``AUDIO_REPR_MIRROR``) and finally the official source are tried (see ``audio_repr.weights``).
    ``pretrained=False`` gives random initialisation. ``device`` and ``dtype`` apply to the network;
    the front end always computes in float32 on the same device. ``device``: anything ``torch.device``
    takes, checked first by :func:`check_device` (``ValueError`` for a device not usable here, before any
    network is built or weights are looked for). ``dtype``: ``torch.float32``, ``float16``, ``bfloat16``
    or ``float64``, or its name (``"float32"``/``"fp32"``, ``"float16"``/``"fp16"``,
    ``"bfloat16"``/``"bf16"``, ``"float64"``/``"fp64"``, also ``"torch.bfloat16"`` etc.); anything else is a
    ``ValueError`` listing these.
    """
    from .. import weights as W
    from ..models import family

    dev = check_device(device) if device is not None else None
    dtype = _resolve_dtype(dtype)
    card = get_card(name)
    fam = family(card.family)
    frontend = fam.build_frontend(**card.frontend)
    network = fam.build_network(**card.arch)
    stats = None
    if pretrained:
        path = W.resolve(card.name, weights)
        _apply_state(network, fam.load_state(path), path, card.name)
        stats = network.weights_norm_stats()          # statistics stored with the weights (M2D), before any cast
    elif weights is not None:
        raise ValueError("weights= was given together with pretrained=False; drop one of them")
    enc = Encoder(card, frontend, network)
    if stats is not None:
        enc.set_norm_stats(*stats)
    enc.eval()
    if dev is not None:
        enc.to(dev)
    if dtype is not None:
        enc.network.to(dtype)
    return enc


def _apply_state(network: torch.nn.Module, state, path, model: str) -> None:
    """Put the state dict a family's ``load_state`` read from ``path`` into ``network``, which it must fit exactly
    (else a :class:`WeightsError` saying how it does not)."""
    own = network.state_dict()
    if not state:
        raise WeightsError(f"{path}: no parameters of a {model} network were found in this checkpoint")
    parts = _misfits(own, state, model)
    if parts:
        raise WeightsError(f"{path} does not fit model {model!r} (is it the checkpoint of another model?): "
                           + "; ".join(parts))
    network.load_state_dict({k: state[k] for k in own if k in state}, strict=False)


def _misfits(own, state, model: str) -> list:
    """How ``state`` does not fit the network's ``own`` state dict: shapes that differ, tensors missing, extra."""
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    wrong = [(k, tuple(state[k].shape), tuple(own[k].shape)) for k in own
             if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    parts = []
    if wrong:
        parts.append("shape mismatch: " + "; ".join(f"{k} is {a} in the file, {b} in {model}" for k, a, b in wrong[:4]))
    if missing:
        parts.append(f"missing {len(missing)} tensor(s), e.g. {missing[:4]}")
    if unexpected:
        parts.append(f"unexpected {len(unexpected)} tensor(s), e.g. {unexpected[:4]}")
    return parts
