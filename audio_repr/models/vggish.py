"""VGGish (Hershey et al., ICASSP 2017; tensorflow/models ``research/audioset/vggish``) with every
layer exposed, the AudioSet postprocessor as a switch, and the EUSIPCO 2022 fusion layers.

Input: VGGish log-mel frames ``[B, 64, T]`` (see :class:`audio_repr.frontends.VGGishLogMel`), ``T``
a multiple of 96. The frames are cut into examples of 96 frames (0.96 s, no overlap) and every
example of every row goes through the network as one batch of ``[1, 96, 64]`` images (time x
mel), exactly the original's input. Examples are independent, so a clip gives the same outputs
alone or in a padded batch; frames of an incomplete last example are ignored.

Layers, in the order of the conv stack numbered as one ``nn.Sequential`` (the numbering the
EUSIPCO 2022 code uses, so ``layers=[9, 14]`` means what it means there):

==  ==============  ==========================  =====================================
 #  name            per 0.96 s example          per time step (dims, stride in frames)
==  ==============  ==========================  =====================================
 0  conv1           64 ch x 96 t x 64 f         4096, 1   (pre-activation)
 1  conv1_relu      64 x 96 x 64                4096, 1
 2  pool1           64 x 48 x 32                2048, 2
 3  conv2           128 x 48 x 32               4096, 2
 4  conv2_relu
 5  pool2           128 x 24 x 16               2048, 4
 6  conv3_1         256 x 24 x 16               4096, 4
 7  conv3_1_relu
 8  conv3_2
 9  conv3_2_relu
10  pool3           256 x 12 x 8                2048, 8
11  conv4_1         512 x 12 x 8                4096, 8
12  conv4_1_relu
13  conv4_2
14  conv4_2_relu
15  pool4           512 x 6 x 4                 2048, 16
16  fc1_1           4096                        4096, 96  (TF ``fc1/fc1_1`` pre-activation)
17  fc1_1_relu                                  4096, 96  (``vggish-4k``)
18  fc1_2                                       4096, 96
19  fc1_2_relu                                  4096, 96
20  embedding       128                         128, 96   (TF ``vggish/embedding``: pre-activation)
21  embedding_relu                              128, 96   (torchvggish's output: a ReLU TF lacks)
==  ==============  ==========================  =====================================

Conv and pool layers are flattened per time step channel-major (index ``c * F + f``). The fc
stack reads ``pool4`` flattened as TF does (time, frequency, channel: channels last).

Extra layers: ``conv3_2_relu_pooled`` and ``conv4_2_relu_pooled`` are layers 9 and 14 max-pooled
over time to ``pool4``'s grid (6 steps per example, 160 ms), 4096-d each: the EUSIPCO 2022 fusion
("VGGish-Fusion#10#15" = layers 9 and 14, 1-based 10 and 15) is their concatenation, 8192-d,
``layers="fusion"``. ``postprocessed`` exists once :func:`enable_postprocessor` has loaded the
PCA parameters: the AudioSet release's PCA (whitening) of ``embedding``, clipped to [-2, 2] and
quantised to 8 bits as TF's ``vggish_postprocess`` does (values 0..255, as float; truncation
like TF's ``astype(uint8)``; torchvggish rounds instead and applies it after its extra ReLU).

The last partial 0.96 s of a clip: dropped by default, as the original (a clip shorter than
0.975 s has no example and is refused); ``enc.frontend.tail = "pad"`` zero-pads it to a whole
example instead (see :class:`audio_repr.frontends.VGGishLogMel`). Each output step is stamped at
the centre of the audio it covers: example ``k`` at ``487.5 + 960 k`` ms (its 975 ms of samples).

On NVIDIA GPUs, PyTorch runs convolutions in TF32 unless ``torch.backends.cudnn.allow_tf32 =
False``: outputs then differ from float32 by ~1e-4 (relative; ~1e-3 for the fusion layers).

Weights: the torchvggish checkpoint (``vggish-10086976.pth``: ``features.{0,3,6,8,11,13}.*``,
``embeddings.{0,2,4}.*``), the same network saved by tcvrick's port (``fc.*`` instead of
``embeddings.*``, used by EVAR), either behind a prefix, or TF variables exported to ``.npz``
(``vggish/conv1/weights`` ... ``vggish/fc2/biases``, HWIO / [in, out] layouts). The TF checkpoint
file itself (``vggish_model.ckpt``, TF's V1 checkpoint format) is not read without TensorFlow.
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict
from collections.abc import Mapping as _MappingABC
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..frontends import VGGishLogMel
from ..registry import ModelCard, Normalisation, register
from ..weights import unwrap_state_dict
from . import register_family
from .base import Backbone, Family, Tiling

__all__ = ["VGGish", "LayerOutputs", "convert_state_dict", "load_state",
           "load_pca_params", "enable_postprocessor", "disable_postprocessor", "LAYER_NAMES", "PCA_WEIGHTS_KEY"]

# the conv stack as one Sequential: channels of each conv, "M" for a 2x2 max pool
_CONV_PLAN = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M")
_CONV_NAMES = ("conv1", "pool1", "conv2", "pool2", "conv3_1", "conv3_2", "pool3", "conv4_1", "conv4_2", "pool4")
_FC_NAMES = ("fc1_1", "fc1_2", "embedding")

#: Names of the 22 layers of the network, index = position in the original's numbering.
LAYER_NAMES: Tuple[str, ...] = tuple(
    [n for c in _CONV_NAMES for n in ((c,) if c.startswith("pool") else (c, c + "_relu"))]
    + [n for c in _FC_NAMES for n in (c, c + "_relu")])

#: The EUSIPCO 2022 fusion layers and the grid they are pooled to (that of pool4).
FUSION_SOURCES = {"conv3_2_relu_pooled": "conv3_2_relu", "conv4_2_relu_pooled": "conv4_2_relu"}

#: Manifest key of the postprocessor's PCA parameters.
PCA_WEIGHTS_KEY = "vggish-pca"

QUANTIZE_MIN, QUANTIZE_MAX = -2.0, 2.0


class VGGish(Backbone):
    """The VGGish network; ``forward(x [B, n_mels, T], lengths=None)`` -> :class:`LayerOutputs`.

    ``features`` (the conv stack) and ``embeddings`` (the fc stack) have torchvggish's module layout,
    so its checkpoints load as they are. The ReLU modules are not in-place, so pre-activations stay
    available (:class:`LayerOutputs` applies them in place only when nothing can hold the input).
    ``forward`` also takes the original's input, examples ``[N, 1, 96, 64]``: then ``B = N`` rows of
    one example each.
    """

    def __init__(self, n_mels: int = 64, example_frames: int = 96, embedding_size: int = 128, hidden: int = 4096):
        super().__init__()
        if n_mels % 16 or example_frames % 16:
            raise ValueError("VGGish needs n_mels and example_frames divisible by 16 (four 2x2 pools)")
        self.n_mels, self.example_frames = n_mels, example_frames
        layers: List[nn.Module] = []
        c_in = 1
        for v in _CONV_PLAN:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(c_in, v, kernel_size=3, stride=1, padding=1), nn.ReLU()]
                c_in = v
        self.features = nn.Sequential(*layers)
        flat = c_in * (example_frames // 16) * (n_mels // 16)
        self.embeddings = nn.Sequential(nn.Linear(flat, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                        nn.Linear(hidden, embedding_size), nn.ReLU())
        self._pca: Optional[Tuple[torch.Tensor, torch.Tensor]] = None   # float64 (eigenvectors, means), CPU

        # geometry: (channels, time steps, frequency bins) per example of each conv-stack layer
        self.shapes: Dict[str, Tuple[int, ...]] = OrderedDict()
        c, t, f = 1, example_frames, n_mels
        for name, mod in zip(LAYER_NAMES, self.features):
            if isinstance(mod, nn.Conv2d):
                c = mod.out_channels
            elif isinstance(mod, nn.MaxPool2d):
                t, f = t // 2, f // 2
            self.shapes[name] = (c, t, f)
        for name, mod in zip(LAYER_NAMES[len(self.features):], self.embeddings):
            if isinstance(mod, nn.Linear):
                c = mod.out_features
            self.shapes[name] = (c,)
        grid = self.shapes["pool4"][1]                          # time steps per example of the fusion grid
        for name, src in FUSION_SOURCES.items():
            sc, st, sf = self.shapes[src]
            self.shapes[name] = (sc, grid, sf)
        self.layer_dims: Dict[str, int] = OrderedDict()
        self.layer_strides: Dict[str, int] = OrderedDict()
        for name in list(self.shapes):
            self._add_layer(name)
        self.min_frames = example_frames
        self.tiling = Tiling(chunk_frames=10 * example_frames)   # pieces of 10 whole examples: they are independent

    def _add_layer(self, name: str) -> None:
        shape = self.shapes[name]
        self.layer_dims[name] = shape[0] * shape[2] if len(shape) == 3 else shape[0]
        self.layer_strides[name] = self.example_frames // shape[1] if len(shape) == 3 else self.example_frames

    # ---- geometry for the encoder -----------------------------------------------------------
    def steps_per_example(self, layer: str) -> int:
        return self.example_frames // self.layer_strides[layer]

    def out_frames(self, n_frames: int, layer: str) -> int:
        """Output steps of ``layer`` for ``n_frames`` input frames: whole examples only."""
        return (n_frames // self.example_frames) * self.steps_per_example(layer)

    # ---- postprocessor ----------------------------------------------------------------------
    def set_postprocessor(self, eigen_vectors, means) -> None:
        """Switch the postprocessor on with PCA ``eigen_vectors`` [128, 128] (rows = output dims) and
        ``means`` [128]; adds the layer ``postprocessed``."""
        d = self.shapes["embedding"][0]
        v = torch.as_tensor(np.asarray(eigen_vectors), dtype=torch.float64).cpu()
        m = torch.as_tensor(np.asarray(means), dtype=torch.float64).cpu().reshape(-1)
        if tuple(v.shape) != (d, d) or tuple(m.shape) != (d,):
            raise ValueError(f"PCA parameters must be eigenvectors [{d}, {d}] and means [{d}], got "
                             f"{tuple(v.shape)} and {tuple(m.shape)}")
        if not (torch.isfinite(v).all() and torch.isfinite(m).all()):
            raise ValueError("PCA parameters contain NaN or infinite values")
        self._pca = (v, m)
        self.shapes["postprocessed"] = (d,)
        self._add_layer("postprocessed")

    def clear_postprocessor(self) -> None:
        self._pca = None
        for table in (self.shapes, self.layer_dims, self.layer_strides):
            table.pop("postprocessed", None)

    def postprocess(self, embedding: torch.Tensor) -> torch.Tensor:
        """TF's ``Postprocessor.postprocess`` on pre-activation embeddings ``[..., 128]``: PCA, clip to
        [-2, 2], quantise to 0..255 (truncating, as ``astype(uint8)``). Float64 inside; same dtype out."""
        if self._pca is None:
            raise RuntimeError("the VGGish postprocessor is off: call enable_postprocessor() first")
        dt = torch.float64 if embedding.device.type != "mps" else torch.float32
        v, m = (p.to(device=embedding.device, dtype=dt) for p in self._pca)
        pca = torch.matmul(embedding.to(dt) - m, v.T)
        q = (pca.clamp(QUANTIZE_MIN, QUANTIZE_MAX) - QUANTIZE_MIN) * (255.0 / (QUANTIZE_MAX - QUANTIZE_MIN))
        return torch.floor(q).to(embedding.dtype)

    # ---- forward ----------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> "LayerOutputs":
        """``x [B, n_mels, T]`` -> every layer ``[B, E * steps, D]`` with ``E = T // 96`` examples per row.

        ``lengths`` is accepted for the common interface and not needed: examples are independent,
        and a row's examples past its own length are simply not used by the caller. Layers are
        computed when first read (see :class:`LayerOutputs`).
        """
        if x.ndim == 4 and x.shape[1] == 1:                   # [N, 1, 96, 64] examples, as the original takes
            return LayerOutputs(self, x, x.shape[0], 1)
        if x.ndim != 3 or x.shape[1] != self.n_mels:
            raise ValueError(f"VGGish expects log-mel frames [B, {self.n_mels}, T], got {tuple(x.shape)}")
        B, Fq, T = x.shape
        E = T // self.example_frames
        ex = x[..., : E * self.example_frames].reshape(B, Fq, E, self.example_frames)
        ex = ex.permute(0, 2, 3, 1).reshape(B * E, 1, self.example_frames, Fq)   # [B*E, 1, time, mel]
        return LayerOutputs(self, ex, B, E)

    def _module(self, i: int) -> nn.Module:
        n_conv = len(self.features)
        return self.features[i] if i < n_conv else self.embeddings[i - n_conv]

    def _step(self, i: int, h: torch.Tensor) -> torch.Tensor:
        n_conv = len(self.features)
        if i < n_conv:
            return self.features[i](h)
        if i == n_conv:                                        # flatten channels last, as TF
            h = h.permute(0, 2, 3, 1).reshape(h.shape[0], -1)
        return self.embeddings[i - n_conv](h)


class LayerOutputs(_MappingABC):
    """Read-only ordered mapping ``layer name -> [B, steps, D]`` computed on first access.

    Reading a layer runs the network only as far as that layer (continuing from the deepest layer
    computed so far), so asking for the embedding does not keep 21 other activations in memory.
    Values are cached. Iteration follows the layer order; ``dict(outputs)`` computes everything.
    The grad / inference mode of the call that created the mapping is used for the computation.
    """

    def __init__(self, net: VGGish, examples: torch.Tensor, batch: int, n_examples: int):
        self._net, self._x, self._B, self._E = net, examples, batch, n_examples
        self._pos, self._cur, self._shared = -1, examples, True
        self._cache: Dict[str, torch.Tensor] = {}
        self._grad = torch.is_grad_enabled()
        self._inference = torch.is_inference_mode_enabled()

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._net.layer_dims))

    def __len__(self) -> int:
        return len(self._net.layer_dims)

    def __contains__(self, name) -> bool:
        return name in self._net.layer_dims

    def __repr__(self) -> str:
        return f"LayerOutputs(batch={self._B}, examples={self._E}, layers={list(self._net.layer_dims)})"

    def _raw(self, name: str) -> torch.Tensor:
        i = LAYER_NAMES.index(name)
        if i < self._pos:                                      # an earlier layer: start again
            self._pos, self._cur, self._shared = -1, self._x, True
        while self._pos < i:
            j = self._pos + 1
            if (not self._shared and not torch.is_grad_enabled()
                    and isinstance(self._net._module(j), nn.ReLU)):
                self._cur = torch.relu_(self._cur)             # nobody else holds it: save the memory
            else:
                self._cur = self._net._step(j, self._cur)
            self._pos, self._shared = j, False
        self._shared = True                                    # the caller may keep a view of it
        return self._cur

    def _per_step(self, h: torch.Tensor) -> torch.Tensor:
        if h.ndim == 2:                                        # fc: one step per example
            return h.reshape(self._B, self._E, h.shape[-1])
        N, C, T, Fq = h.shape
        return h.reshape(self._B, self._E, C, T, Fq).permute(0, 1, 3, 2, 4).reshape(self._B, self._E * T, C * Fq)

    def __getitem__(self, name: str) -> torch.Tensor:
        out = self._cache.get(name)
        if out is not None:
            return out
        if name not in self._net.layer_dims:
            raise KeyError(name)
        ctx = torch.inference_mode() if self._inference else torch.set_grad_enabled(self._grad)
        with ctx:
            if name in FUSION_SOURCES:
                src = self._raw(FUSION_SOURCES[name])
                k = src.shape[2] // self._net.shapes[name][1]
                out = self._per_step(F.max_pool2d(src, kernel_size=(k, 1), stride=(k, 1)))
            elif name == "postprocessed":
                out = self._per_step(self._net.postprocess(self._raw("embedding")))
            else:
                out = self._per_step(self._raw(name))
        self._cache[name] = out
        return out


# ----------------------------------------------------------------------------------------------
# checkpoints
# ----------------------------------------------------------------------------------------------
_TORCH_KEY = re.compile(r"(?:^|\.)(features\.(?:0|3|6|8|11|13)|embeddings\.[024]|fc\.[024])\.(weight|bias)$")
_TF_NAMES = {  # TF-slim variable scope -> our module
    "conv1": "features.0", "conv2": "features.3", "conv3/conv3_1": "features.6", "conv3/conv3_2": "features.8",
    "conv4/conv4_1": "features.11", "conv4/conv4_2": "features.13", "fc1/fc1_1": "embeddings.0",
    "fc1/fc1_2": "embeddings.2", "fc2": "embeddings.4"}
_TF_KEY = re.compile(r"(?:^|/)vggish/(.+)/(weights|biases)(?::0)?$")


def _tensor(v) -> Optional[torch.Tensor]:
    if torch.is_tensor(v):
        return v
    if isinstance(v, np.ndarray) and v.dtype.kind == "f":
        return torch.from_numpy(np.ascontiguousarray(v))
    return None


def convert_state_dict(obj: Mapping) -> Dict[str, torch.Tensor]:
    """Official VGGish checkpoints -> our state dict (``features.*``, ``embeddings.*``).

    Accepts torchvggish's state dict (also the hub model's, whose ``pproc.*`` PCA tensors are
    ignored here: see :func:`enable_postprocessor`), tcvrick's (``fc.*``), either wrapped in
    ``state_dict``/``model`` or behind a prefix, and TF variables by name (``vggish/conv1/weights``,
    HWIO kernels and [in, out] matrices, numpy or torch) as exported from ``vggish_model.ckpt``.
    """
    obj = unwrap_state_dict(obj)
    out: Dict[str, torch.Tensor] = {}
    for k, v in obj.items():
        t = _tensor(v)
        if not isinstance(k, str) or t is None:
            continue
        m = _TF_KEY.search(k)
        if m is not None and m.group(1) in _TF_NAMES:
            mod, kind = _TF_NAMES[m.group(1)], m.group(2)
            if kind == "biases":
                out[f"{mod}.bias"] = t.float()
            elif t.ndim == 4:                                  # HWIO -> OIHW
                out[f"{mod}.weight"] = t.permute(3, 2, 0, 1).contiguous().float()
            else:                                              # [in, out] -> [out, in]
                out[f"{mod}.weight"] = t.T.contiguous().float()
            continue
        m = _TORCH_KEY.search(k)
        if m is None:
            continue
        mod = m.group(1).replace("fc.", "embeddings.")
        name = f"{mod}.{m.group(2)}"
        if name in out and k != m.group(0):
            continue                                           # prefer an unprefixed key when both exist
        out[name] = t
    return out


def _is_tf_checkpoint(path: Path) -> bool:
    name = path.name
    return (path.suffix in (".ckpt", ".index", ".meta") or ".data-" in name
            or (path.is_dir() and any(path.glob("*.ckpt*"))))


def load_state(path: Union[str, os.PathLike]) -> Dict[str, torch.Tensor]:
    """A VGGish weights file -> our state dict: a PyTorch checkpoint (read with ``weights_only=True``)
    or an ``.npz`` of TF variables (read without pickle)."""
    from ..weights import WeightsError, load_checkpoint

    path = Path(path)
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                return convert_state_dict({k: z[k] for k in z.files})
        except (OSError, ValueError) as e:
            raise WeightsError(f"cannot read {path} as an .npz of VGGish variables: {e}") from e
    if _is_tf_checkpoint(path):
        raise WeightsError(
            f"{path} looks like the TensorFlow checkpoint (vggish_model.ckpt), which cannot be read without "
            "TensorFlow. Use torchvggish's conversion (vggish-10086976.pth, the default download), or export "
            "the variables once with TensorFlow to an .npz: {v.name: v.numpy() for v in tf.global_variables()}.")
    return convert_state_dict(load_checkpoint(path))


# ----------------------------------------------------------------------------------------------
# the postprocessor's PCA parameters
# ----------------------------------------------------------------------------------------------
def _torch_load_numpy(path: Path):
    from ..weights import load_checkpoint

    return load_checkpoint(path)          # numpy arrays are allowed (audio_repr.weights.numpy_safe_globals)


def _pca_from_mapping(obj: Mapping, where: str) -> Tuple[torch.Tensor, torch.Tensor]:
    from ..weights import WeightsError

    for vk, mk in (("pca_eigen_vectors", "pca_means"), ("pproc.pca_matrix", "pproc.pca_means"),
                   ("pca_matrix", "pca_means")):
        if vk in obj and mk in obj:
            v, m = (_tensor(x if torch.is_tensor(x) else np.asarray(x)) for x in (obj[vk], obj[mk]))
            if v is None or m is None:
                break
            return v.double(), m.double().reshape(-1)
    raise WeightsError(f"{where}: no VGGish PCA parameters (pca_eigen_vectors and pca_means) found")


def load_pca_params(path: Union[str, os.PathLike]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Read the postprocessor's PCA parameters without running pickled code: torchvggish's
    ``vggish_pca_params-970ea276.pth`` (numpy arrays in a torch pickle: only numpy's array
    reconstruction is allowed), TF's ``vggish_pca_params.npz`` (no pickle at all), or a state dict
    holding ``pproc.pca_matrix``/``pproc.pca_means``. Returns float64 ``(eigenvectors [128, 128], means [128])``."""
    from ..weights import WeightsError

    path = Path(path)
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            raise WeightsError(f"cannot read {path} as an .npz of arrays (read without pickle): {e}") from e
        return _pca_from_mapping(arrays, str(path))
    obj = _torch_load_numpy(path)
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{path}: expected a mapping of PCA parameters, got {type(obj).__name__}")
    return _pca_from_mapping(obj, str(path))


def _network_of(model) -> VGGish:
    net = getattr(model, "network", model)
    if not isinstance(net, VGGish):
        raise TypeError(f"expected a VGGish encoder or network, got {type(net).__name__}")
    return net


def enable_postprocessor(model, pca_params=None) -> None:
    """Switch on the AudioSet postprocessor (PCA + 8-bit quantisation) of a VGGish encoder (or network):
    afterwards the layer ``"postprocessed"`` exists (``enc.embed(x, layers="postprocessed")``).

    ``pca_params``: a file (torchvggish ``.pth`` or TF ``.npz``) or folder holding one, a mapping with
    ``pca_eigen_vectors``/``pca_means``, or ``None`` for the usual weights resolution of the manifest
    entry ``"vggish-pca"`` (cache, ``AUDIO_REPR_MIRROR``, download).
    """
    net = _network_of(model)
    if isinstance(pca_params, Mapping):
        v, m = _pca_from_mapping(pca_params, "pca_params")
    else:
        from .. import weights as W

        path = W.resolve(PCA_WEIGHTS_KEY, pca_params)
        if path.is_dir():
            found = sorted(path.glob("vggish_pca_params*.pth")) + sorted(path.glob("vggish_pca_params*.npz"))
            if not found:
                raise W.WeightsNotFoundError(f"no vggish_pca_params*.pth or *.npz in {path}")
            path = found[0]
        v, m = load_pca_params(path)
    net.set_postprocessor(v, m)


def disable_postprocessor(model) -> None:
    _network_of(model).clear_postprocessor()


register_family(Family("vggish", build_frontend=VGGishLogMel, build_network=VGGish, load_state=load_state))


# ---- the cards ---------------------------------------------------------------------------------------------------
_VGGISH_LICENCE = ("Apache-2.0 (tensorflow/models research/audioset/vggish; the PyTorch weights are "
                   "harritaylor/torchvggish's conversion of the TF release)")
_VGGISH_CITE = ("S. Hershey, S. Chaudhuri, D. P. W. Ellis, J. F. Gemmeke, A. Jansen, R. C. Moore, M. Plakal, "
                "D. Platt, R. A. Saurous, B. Seybold, M. Slaney, R. J. Weiss, K. Wilson, \"CNN Architectures for "
                "Large-Scale Audio Classification\", ICASSP 2017. Fusion and VGGish-4K: D. Niizumi, D. Takeuchi, "
                "Y. Ohishi, N. Harada, K. Kashino, \"Composing General Audio Representation by Fusing Multilayer "
                "Features of a Pre-trained Model\", EUSIPCO 2022.")
# TF vggish_input + mel_features: 25 ms periodic Hann frames every 10 ms (no centring), |rfft| of 512,
# 64 HTK mel bands 125-7500 Hz, log(mel + 0.01), examples of 96 frames (0.96 s) without overlap.
# tail="drop" is the original (the last partial 0.96 s is lost); enc.frontend.tail = "pad" keeps it.
_VGGISH_FE = dict(sample_rate=16000, win_length=400, hop_length=160, fft_size=512, n_mels=64, f_min=125.0,
                  f_max=7500.0, log_offset=0.01, example_frames=96, tail="drop")

for _name, _layer, _desc, _published in [
    ("vggish", "embedding",
     "VGGish (AudioSet), 128-d pre-activation embedding per 0.96 s example (TF's output)",
     {"EVAR avg (9 tasks)": 47.2, "ESC-50": 68.2, "fusion: EVAR avg": 71.3, "fusion: ESC-50": 86.5}),
    ("vggish-4k", "fc1_1_relu",
     "VGGish-4K: VGGish's first fc layer after its ReLU, 4096-d per 0.96 s example (EUSIPCO 2022)",
     {"EVAR avg (9 tasks)": 58.3, "ESC-50": 79.5, "fusion: EVAR avg": 71.3, "fusion: ESC-50": 86.5}),
]:
    register(ModelCard(
        name=_name, family="vggish", description=_desc,
        sample_rate=16000, frontend=_VGGISH_FE, arch=dict(n_mels=64, example_frames=96),
        normalisation=Normalisation(0.0, 1.0),  # VGGish takes the log-mel as it is
        weights="vggish-10086976.pth",
        default_layer=_layer,
        # EUSIPCO 2022 "VGGish-Fusion#10#15": layers 9 and 14 (0-based), each pooled to 6 steps per example
        fusion_layers=("conv3_2_relu_pooled", "conv4_2_relu_pooled"),
        licence=_VGGISH_LICENCE, citation=_VGGISH_CITE, paper="https://arxiv.org/abs/1609.09430",
        resampler="kaiser_best",               # resampy's default, as vggish_input.waveform_to_examples
        published=_published,
    ))
