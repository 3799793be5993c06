"""Straightforward re-statements of the original BYOL-A networks (module layout of the official
code, so their ``state_dict()`` has the official checkpoint keys) used to make checkpoints in
the original format and to compute reference outputs one clip at a time."""

import torch
from torch import nn


def conv_bn_relu_pool(c_in):
    return [nn.Conv2d(c_in, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2, 2)]


class OriginalV1(nn.Module):
    """AudioNTT2020 layout: features.{0,1,4,5,8,9}, fc.{0,3}."""

    def __init__(self, d=512, n_mels=64):
        super().__init__()
        self.features = nn.Sequential(*conv_bn_relu_pool(1), *conv_bn_relu_pool(64), *conv_bn_relu_pool(64))
        self.fc = nn.Sequential(nn.Linear(64 * (n_mels // 8), d), nn.ReLU(), nn.Dropout(0.3), nn.Linear(d, d), nn.ReLU())

    def frames(self, lms):  # [1, 1, F, T] -> [1, T/8, d]
        x = self.features(lms)
        x = x.permute(0, 3, 2, 1)
        return self.fc(x.reshape(x.shape[0], x.shape[1], -1))


class OriginalV2(nn.Module):
    """AudioNTT2022 layout: two conv blocks, fc 1024 -> 2048 -> 2048, output concat(conv, fc)."""

    def __init__(self, n_mels=64):
        super().__init__()
        self.features = nn.Sequential(*conv_bn_relu_pool(1), *conv_bn_relu_pool(64))
        self.fc = nn.Sequential(nn.Linear(64 * (n_mels // 4), 2048), nn.ReLU(), nn.Dropout(0.3),
                                nn.Linear(2048, 2048), nn.ReLU())

    def frames(self, lms):
        x = self.features(lms)
        x = x.permute(0, 3, 2, 1)
        x = x.reshape(x.shape[0], x.shape[1], -1)
        return torch.cat([x, self.fc(x)], dim=-1)


def randomise(net, seed=0):
    """Random weights and non-trivial BatchNorm statistics, as a trained checkpoint would have."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
                m.weight.copy_(1 + 0.1 * torch.randn(m.num_features, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.num_features, generator=g))
            elif isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / m.weight[0].numel()) ** 0.5)
                m.bias.copy_(0.01 * torch.randn(m.bias.shape, generator=g))
    return net.eval()
