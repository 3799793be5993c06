"""The original LAION-CLAP (``laion_clap`` on PyPI, ``LAION-AI/CLAP``, CC0-1.0), run as it is for the tests.

``laion_clap``'s package ``__init__`` imports its whole training stack (webdataset, wandb, torchvision, ...), and its
pip requirements pin an older numpy; the tests need only its model code. :func:`original_module` therefore loads
``laion_clap/clap_module/model.py`` (the original ``CLAP`` class, with ``htsat.py``, ``pann_model.py``,
``feature_fusion.py``, ``utils.py`` beside it) from the installed package's files without running the package's
``__init__``; ``pip install --no-deps laion_clap`` is enough. Where torchvision is absent, ``utils.py``'s one
import from it (``FrozenBatchNorm2d``, used only to freeze batch norms for fine-tuning) is given a placeholder.

:func:`original_clap` builds ``CLAP(...)`` as ``laion_clap.CLAP_Module(enable_fusion=False, amodel=...,
tmodel='roberta')`` does, except that ``RobertaModel.from_pretrained('roberta-base')`` (a download) builds
``transformers.RobertaModel`` from the given config with random weights. :func:`audio_input` is the original's
input path (``hook.py``'s ``get_audio_embedding_from_data`` with ``training/data.py``'s ``get_audio_features`` for
a non-fusion model and a clip of at most 10 s: ``int16_to_float32(float32_to_int16(x))``, then ``repeatpad``),
re-stated here because ``training/data.py`` imports the training stack.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import torch


def _package_dir() -> Path | None:
    spec = importlib.util.find_spec("laion_clap")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def available() -> bool:
    d = _package_dir()
    return d is not None and (d / "clap_module" / "model.py").is_file()


_CACHE = {}


def original_module():
    """``laion_clap.clap_module.model`` loaded from the installed files (under a private package name)."""
    if "model" in _CACHE:
        return _CACHE["model"]
    root = _package_dir() / "clap_module"
    pkg = "_laion_clap_ref"
    if pkg not in sys.modules:
        m = types.ModuleType(pkg)
        m.__path__ = [str(root)]
        sys.modules[pkg] = m
    placed = []
    try:
        import torchvision.ops.misc  # noqa: F401
    except ImportError:
        tv = types.ModuleType("torchvision")
        ops = types.ModuleType("torchvision.ops")
        misc = types.ModuleType("torchvision.ops.misc")
        misc.FrozenBatchNorm2d = type("FrozenBatchNorm2d", (torch.nn.Module,), {})
        tv.ops, ops.misc = ops, misc
        for name, m in (("torchvision", tv), ("torchvision.ops", ops), ("torchvision.ops.misc", misc)):
            if name not in sys.modules:
                sys.modules[name] = m
                placed.append(name)
    try:
        mod = importlib.import_module(f"{pkg}.model")
    finally:   # the placeholder only while the model code imports: other packages probe for torchvision later
        for name in placed:
            sys.modules.pop(name, None)
    _CACHE["model"] = mod
    return mod


HTSAT_TINY = dict(model_type="HTSAT", model_name="tiny", audio_length=1024, clip_samples=480000, mel_bins=64,
                  sample_rate=48000, window_size=1024, hop_size=480, fmin=50, fmax=14000, class_num=527)


def original_clap(roberta_config, model_name: str = "tiny", seed: int = 0, meta_text: bool = False):
    """The original ``CLAP`` (HTS-AT ``model_name`` + RoBERTa of ``roberta_config``), eval mode, seeded weights.
    ``meta_text``: the RoBERTa on the meta device (shapes only; HTS-AT's constructor cannot run there)."""
    import transformers

    mod = original_module()
    audio_cfg = dict(HTSAT_TINY, model_name=model_name)
    embed_dim = {"tiny": 768, "base": 1024}[model_name]
    text_cfg = dict(context_length=77, vocab_size=49408, width=512, heads=8, layers=12, model_type="roberta")
    saved = transformers.RobertaModel.from_pretrained
    def build(cls, name, **kw):
        if meta_text:
            with torch.device("meta"):
                return cls(roberta_config, add_pooling_layer=True)
        return cls(roberta_config, add_pooling_layer=True)

    transformers.RobertaModel.from_pretrained = classmethod(build)
    try:
        torch.manual_seed(seed)
        model = mod.CLAP(embed_dim=embed_dim, audio_cfg=audio_cfg, text_cfg=text_cfg, enable_fusion=False)
    finally:
        transformers.RobertaModel.from_pretrained = saved
    if meta_text:
        return model.eval()
    with torch.no_grad():           # trained-looking batch norm statistics, scales and biases (the init is identity)
        g = torch.Generator().manual_seed(seed + 1)
        bn = model.audio_branch.bn0
        bn.running_mean.copy_(torch.randn(bn.num_features, generator=g) * 10 - 40)
        bn.running_var.copy_(torch.rand(bn.num_features, generator=g) * 200 + 50)
        bn.weight.copy_(1 + 0.2 * torch.randn(bn.num_features, generator=g))
        bn.bias.copy_(0.2 * torch.randn(bn.num_features, generator=g))
        for name, p in model.named_parameters():
            if name.endswith("bias") and p.ndim == 1 and not name.startswith("audio_branch.bn0"):
                p.add_(0.02 * torch.randn(p.shape, generator=g))
            if "relative_position_bias_table" in name:
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
        model.logit_scale_a.fill_(3.1)
    return model.eval()


def audio_input(wav: np.ndarray, clip_samples: int = 480000) -> dict:
    """The original's input dict for one clip of at most 10 s at 48 kHz (quantised, ``repeatpad``)."""
    x = (np.clip(wav.astype(np.float32), -1.0, 1.0) * 32767.0).astype(np.int16)
    x = torch.from_numpy((x / 32767.0).astype(np.float32)).float()
    assert len(x) <= clip_samples
    if len(x) < clip_samples:
        x = x.repeat(int(clip_samples / len(x)))
        x = torch.nn.functional.pad(x, (0, clip_samples - len(x)), mode="constant", value=0)
    return {"waveform": x}


def checkpoint(model) -> dict:
    """What LAION-CLAP's trainer saves (``training/main.py``): epoch, run name, the DDP-wrapped state dict, the
    optimiser's state; here with a stand-in optimiser state of the right structure."""
    sd = {f"module.{k}": v.clone() for k, v in model.state_dict().items()}
    return {"epoch": 45, "name": "2022_10_19-22_42_11-model_HTSAT-tiny-lr_0.0001-b_96-j_6-p_fp32",
            "state_dict": sd, "optimizer": {"state": {}, "param_groups": [{"lr": 0.0001, "params": [0, 1]}]}}
