"""HEAR 2021 API for ``msm-mae-80x512-paper`` (see :mod:`audio_repr.hear`)."""

from . import _module_api, _module_attr

load_model, get_timestamp_embeddings, get_scene_embeddings = _module_api("msm-mae-80x512-paper")


def __getattr__(attr):  # sample_rate, scene_embedding_size, timestamp_embedding_size
    return _module_attr("msm-mae-80x512-paper", attr)
