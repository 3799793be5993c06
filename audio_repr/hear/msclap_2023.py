"""HEAR 2021 API of the model this module is named after (see :mod:`audio_repr.hear`)."""
from audio_repr.hear import bind; bind(__name__)  # noqa: E702
