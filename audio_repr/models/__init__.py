"""One module per family. Each knows its network and checkpoint format, nothing of files or batching.

A family provides ``build_frontend(card)``, ``build_network(arch)`` (an ``nn.Module`` whose
``forward(x, lengths)`` returns an ordered dict of every layer ``[B, T_layer, D_layer]`` and which
carries ``layer_dims``, ``layer_strides`` and ``min_frames``) and ``convert_state_dict(obj)``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

_FAMILY_MODULES = {
    "byola": "audio_repr.models.byola",
    "vggish": "audio_repr.models.vggish",
    "msm_mae": "audio_repr.models.msm_mae",
    "ast": "audio_repr.models.ast",
}


def family(name: str) -> ModuleType:
    try:
        return importlib.import_module(_FAMILY_MODULES[name])
    except KeyError:
        raise KeyError(f"unknown model family {name!r}") from None
