"""References for VGGish tests: torchvggish's own network and numpy front end (the TF release's
``vggish_input``/``mel_features``), plus straightforward re-statements of what the EUSIPCO 2022
fusion code and TF's postprocessor compute, written from their descriptions."""

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

tv = __import__("pytest").importorskip("torchvggish")
from torchvggish import mel_features, vggish_input  # noqa: E402
from torchvggish.torchvggish import VGG, make_layers  # noqa: E402


def torchvggish_network(seed=0):
    """torchvggish's ``VGG`` (features.*, embeddings.*; the layout of vggish-10086976.pth) with random
    weights scaled so activations stay O(1) through the 9 layers, as trained weights would."""
    net = VGG(make_layers(), postprocess=False)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / m.weight[0].numel()) ** 0.5)
                m.bias.copy_(0.05 * torch.randn(m.bias.shape, generator=g))
    return net.eval()


def to_frames(examples):
    """Reference examples [E, 96, 64] -> our network's input [1, 64, E * 96]."""
    ex = torch.as_tensor(np.asarray(examples), dtype=torch.float32)
    return ex.permute(2, 0, 1).reshape(1, ex.shape[2], -1)


@torch.no_grad()
def reference_layers(net, examples):
    """Every module output of torchvggish's network on examples [E, 96, 64]: a list of 22 tensors in
    the EUSIPCO numbering (0-15 the conv stack, 16-21 the fc stack; 20 = pre-activation embedding)."""
    h = torch.as_tensor(np.asarray(examples), dtype=torch.float32)[:, None]
    outs = []
    for m in net.features:
        h = m(h)
        outs.append(h.clone())            # torchvggish's ReLUs are in-place
    h = h.permute(0, 2, 3, 1).reshape(h.shape[0], -1)   # channels last, as its forward transposes
    for m in net.embeddings:
        h = m(h)
        outs.append(h.clone())
    return outs


def per_step(h):
    """[E, C, T, F] -> [E * T, C * F] (channel-major per time step); [E, D] stays."""
    if h.ndim == 2:
        return h
    E, C, T, Fq = h.shape
    return h.permute(0, 2, 1, 3).reshape(E * T, C * Fq)


@torch.no_grad()
def eusipco_fusion(net, examples, layers=(9, 14)):
    """What GeneralPurposeVGGish.encode_frames computes (composing-general-audio-repr): each chosen
    conv-stack layer max-pooled over time to the pool4 grid (6 steps per example), flattened C x F
    channel-major, concatenated; examples laid end to end -> [E * 6, D]."""
    outs = reference_layers(net, examples)
    parts = []
    for i in layers:
        h = outs[i]
        k = h.shape[2] // 6
        parts.append(per_step(F.max_pool2d(h, kernel_size=(k, 1), stride=(k, 1))))
    return torch.cat(parts, dim=-1)


def tf_postprocess(embedding, eigen_vectors, means):
    """TF vggish_postprocess.Postprocessor.postprocess, from its description: PCA, clip [-2, 2],
    scale to [0, 255], cast to uint8 (truncation)."""
    e = np.asarray(embedding, dtype=np.float64)
    pca = (np.asarray(eigen_vectors, np.float64) @ (e.T - np.asarray(means, np.float64).reshape(-1, 1))).T
    q = (np.clip(pca, -2.0, 2.0) + 2.0) * (255.0 / 4.0)
    return q.astype(np.uint8)


def reference_examples(wav16k, tail="drop"):
    """The numpy pipeline on a 16 kHz waveform -> [E, 96, 64]; ``tail="pad"``: the waveform is first
    zero-padded so that every sample is in a frame and the frames fill whole examples."""
    x = np.asarray(wav16k, dtype=np.float64)
    if tail == "pad":
        covering = 1 + max(0, -(-(len(x) - 400) // 160))
        frames = -(-covering // 96) * 96
        x = np.pad(x, (0, (frames - 1) * 160 + 400 - len(x)))
    return vggish_input.waveform_to_examples(x, 16000, return_tensor=False)


def mel_matrix():
    return mel_features.spectrogram_to_mel_matrix(num_mel_bins=64, num_spectrogram_bins=257, audio_sample_rate=16000,
                                                  lower_edge_hertz=125.0, upper_edge_hertz=7500.0)
