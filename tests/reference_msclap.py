"""The original Microsoft CLAP (``msclap`` 1.3.4 on PyPI, ``microsoft/CLAP``, MIT), run as it is for the tests.

``msclap``'s package ``__init__`` imports ``CLAPWrapper``, which imports torchaudio (only for ``torchaudio.load``
and ``transforms.Resample`` in ``read_audio``, which the tests do not call: they hand the wrapper waveforms at
44.1 kHz); ``pip install --no-deps msclap`` and torchlibrosa are enough. :func:`wrapper` therefore loads the
package's files under a private name with a placeholder ``torchaudio`` while they import (removed from
``sys.modules`` afterwards; the warning filters that ``CLAPWrapper`` resets at import are restored), and runs
the original ``CLAPWrapper.load_clap`` on a checkpoint the tests saved: the original ``CLAP`` built from
``config_2023.yml``, its weights loaded with ``strict=False``, the tokenizer with ``'!'`` added as padding. Two
downloads are replaced: ``AutoModel.from_pretrained('gpt2')`` builds ``transformers.GPT2Model`` from the given
(small) config, ``AutoTokenizer.from_pretrained('gpt2')`` reads the given ``vocab.json``/``merges.txt`` (and
``encode_plus``, which transformers 5 removed, is its single-text ``__call__``). The wrapper's own
``preprocess_text``, ``load_audio_into_tensor``, ``_get_audio_embeddings``, ``_get_text_embeddings`` and
``compute_similarity`` then run unchanged.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import torch


def _package_dir() -> Path | None:
    spec = importlib.util.find_spec("msclap")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def available() -> bool:
    d = _package_dir()
    return (d is not None and (d / "CLAPWrapper.py").is_file() and importlib.util.find_spec("torchlibrosa") is not None
            and importlib.util.find_spec("transformers") is not None)


_CACHE = {}
PKG = "_msclap_ref"


def original_module():
    """``msclap.CLAPWrapper`` loaded from the installed files (under a private package name)."""
    if "wrapper" in _CACHE:
        return _CACHE["wrapper"]
    if PKG not in sys.modules:
        m = types.ModuleType(PKG)
        m.__path__ = [str(_package_dir())]
        sys.modules[PKG] = m
    placed = []
    if importlib.util.find_spec("torchaudio") is None:
        ta, tr = types.ModuleType("torchaudio"), types.ModuleType("torchaudio.transforms")
        ta.transforms = tr
        for name, m in (("torchaudio", ta), ("torchaudio.transforms", tr)):
            sys.modules[name] = m
            placed.append(name)
    filters = warnings.filters[:]
    try:
        mod = importlib.import_module(f"{PKG}.CLAPWrapper")
    finally:    # the placeholder only while the code imports: other packages probe for torchaudio later
        for name in placed:
            sys.modules.pop(name, None)
        warnings.filters[:] = filters            # CLAPWrapper.py sets warnings.filterwarnings("ignore")
    _CACHE["wrapper"] = mod
    return mod


def _stub_downloads(gpt2_config, tok_folder=None, meta: bool = False):
    """Replace the two ``from_pretrained('gpt2')`` calls (see the module's docstring); returns an undo function."""
    import transformers

    mod = original_module()
    clap_mod = sys.modules[f"{PKG}.models.clap"]
    saved = (clap_mod.AutoModel, mod.AutoTokenizer)

    def model(name, **kw):
        if meta:
            with torch.device("meta"):
                return transformers.GPT2Model(gpt2_config)
        return transformers.GPT2Model(gpt2_config)

    def tokenizer(name, **kw):
        tok = transformers.GPT2TokenizerFast.from_pretrained(str(tok_folder))
        tok.encode_plus = lambda text, **kw: tok(text, **kw)
        return tok

    clap_mod.AutoModel = types.SimpleNamespace(from_pretrained=model)
    mod.AutoTokenizer = types.SimpleNamespace(from_pretrained=tokenizer)

    def undo():
        clap_mod.AutoModel, mod.AutoTokenizer = saved
    return undo


def _args():
    mod = original_module()
    text = (_package_dir() / "configs" / "config_2023.yml").read_text()
    return mod.CLAPWrapper.read_config_as_args(None, text, is_config_str=True)


def original_clap(gpt2_config, seed: int = 0, meta_text: bool = False):
    """The original ``CLAP`` built as ``load_clap`` builds it from ``config_2023.yml``, eval mode, seeded weights
    with trained-looking batch-norm statistics, biases and temperature. ``meta_text``: the GPT-2 on the meta device
    (shapes only)."""
    original_module()
    clap_mod = sys.modules[f"{PKG}.models.clap"]
    a = _args()
    undo = _stub_downloads(gpt2_config, meta=meta_text)
    try:
        torch.manual_seed(seed)
        model = clap_mod.CLAP(audioenc_name=a.audioenc_name, sample_rate=a.sampling_rate, window_size=a.window_size,
                              hop_size=a.hop_size, mel_bins=a.mel_bins, fmin=a.fmin, fmax=a.fmax,
                              classes_num=a.num_classes, out_emb=a.out_emb, text_model=a.text_model,
                              transformer_embed_dim=a.transformer_embed_dim, d_proj=a.d_proj)
    finally:
        undo()
    if meta_text:
        return model.eval()
    with torch.no_grad():
        g = torch.Generator().manual_seed(seed + 1)
        bn = model.audio_encoder.base.htsat.bn0
        bn.running_mean.copy_(torch.randn(bn.num_features, generator=g) * 10 - 40)
        bn.running_var.copy_(torch.rand(bn.num_features, generator=g) * 200 + 50)
        bn.weight.copy_(1 + 0.2 * torch.randn(bn.num_features, generator=g))
        bn.bias.copy_(0.2 * torch.randn(bn.num_features, generator=g))
        for name, p in model.named_parameters():
            if name.endswith("bias") and p.ndim == 1 and not name.endswith("bn0.bias"):
                p.add_(0.02 * torch.randn(p.shape, generator=g))
            if "relative_position_bias_table" in name:
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            if "layer_norm.weight" in name:
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
        model.logit_scale.fill_(3.9)
    return model.eval()


def checkpoint(model) -> dict:
    """What was released (``CLAP_weights_2023.pth``): ``{'model': state_dict}``, the state dict as the transformers
    of 2023 saved GPT-2, with its causal-mask buffers ``h.N.attn.bias`` ([1, 1, P, P]) and ``h.N.attn.masked_bias``
    (-1e4), which the original's ``strict=False`` load skips."""
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    gpt2 = model.caption_encoder.base
    P = gpt2.config.n_positions
    for i in range(gpt2.config.n_layer):
        causal = torch.tril(torch.ones(P, P, dtype=torch.bool))[None, None]
        sd.setdefault(f"caption_encoder.base.h.{i}.attn.bias", causal)
        sd.setdefault(f"caption_encoder.base.h.{i}.attn.masked_bias", torch.tensor(-1e4))
    return {"model": sd}


def wrapper(ckpt_path, gpt2_config, tok_folder):
    """The original ``CLAPWrapper`` (version 2023) on ``ckpt_path``, its ``load_clap`` run as written."""
    mod = original_module()
    w = mod.CLAPWrapper.__new__(mod.CLAPWrapper)
    w.np_str_obj_array_pattern = __import__("re").compile(r"[SaUO]")
    w.default_collate_err_msg_format = "default_collate: batch must contain tensors, ...; found {}"
    w.config_as_str = (_package_dir() / "configs" / "config_2023.yml").read_text()
    w.model_fp, w.use_cuda = str(ckpt_path), False
    undo = _stub_downloads(gpt2_config, tok_folder)
    try:
        w.clap, w.tokenizer, w.args = w.load_clap()
    finally:
        undo()
    # the waveforms are handed over at the model's rate: read_audio's torchaudio.load and Resample are not run
    w.read_audio = lambda audio, resample=True: (torch.from_numpy(np.asarray(audio, dtype=np.float32))[None],
                                                 w.args.sampling_rate)
    return w
