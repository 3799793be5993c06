"""HEAR 2021 API for ``vggish`` (see :mod:`audio_repr.hear`)."""

from . import _module_api, _module_attr

load_model, get_timestamp_embeddings, get_scene_embeddings = _module_api("vggish")


def __getattr__(attr):  # sample_rate, scene_embedding_size, timestamp_embedding_size
    return _module_attr("vggish", attr)
