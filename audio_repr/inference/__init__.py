"""Running a model: the :class:`Encoder` (plan -> run -> assemble) and its result, the :class:`Embedding`."""

from .embedding import Embedding
from .encoder import Encoder

__all__ = ["Encoder", "Embedding"]
