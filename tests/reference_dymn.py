"""A re-statement of EfficientAT's dynamic MobileNet (``models/dymn/model.py`` and ``models/dymn/dy_block.py`` of
fschmid56/EfficientAT at a425fdc, MIT), written for the tests: the original's module layout (so ``state_dict()`` has
the official checkpoint keys: ``in_c``, ``layers.N``, ``out_c``, ``classifier``) and its computation step by step
(per-clip kernels by a grouped convolution over the batch, ``adaptive_avg_pool2d``, ``AvgPool2d`` with zero
padding counted), in eval mode, without the parts inference never reaches (the temperature schedule, the
``no_dyconv`` / ``no_dyrelu`` / ``no_ca`` ablations, other heads). ``forward`` takes the original's input
``[B, 1, 128, T]`` (whole clips, no padding) and returns ``(logits, embedding)`` and, with ``return_fmaps``, the
maps of ``in_c``, every block and ``out_c``."""

import torch
import torch.nn.functional as F
from torch import nn


def make_divisible(v, divisor=8):
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def bn(c):
    return nn.BatchNorm2d(c, eps=0.001, momentum=0.01)


def conv_norm_act(c_in, c_out, kernel, stride=1):
    """torchvision's ConvNormActivation: conv (no bias, padding (k - 1) // 2), BN, hardswish."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, stride, (kernel - 1) // 2, bias=False), bn(c_out),
                         nn.Hardswish())


class DynamicConv(nn.Module):
    def __init__(self, c_in, c_out, context_dim, kernel, stride=1, padding=0, groups=1, k=4, temperature=1.0):
        super().__init__()
        self.c_in, self.c_out, self.kernel, self.stride, self.padding, self.groups = c_in, c_out, kernel, stride, padding, groups
        self.k, self.temperature = k, temperature
        self.residuals = nn.Sequential(nn.Linear(context_dim, k))
        self.weight = nn.Parameter(torch.randn(1, 1, k, c_out * (c_in // groups) * kernel * kernel))

    def forward(self, x, g):
        b, c, f, t = x.size()
        residuals = self.residuals(g[0].view(b, -1)).view(b, 1, 1, -1)
        attention = F.softmax(residuals / self.temperature, dim=-1)                     # [b, 1, 1, k]
        w = (attention @ self.weight).transpose(1, 2).reshape(b, self.c_out, self.c_in // self.groups,
                                                                self.kernel, self.kernel)
        w = w.view(b * self.c_out, self.c_in // self.groups, self.kernel, self.kernel)
        out = F.conv2d(x.view(1, -1, f, t), w, None, self.stride, self.padding, 1, self.groups * b)
        return out.view(b, self.c_out, out.size(-2), out.size(-1))


class DyReLUB(nn.Module):
    def __init__(self, channels, context_dim, M=2):
        super().__init__()
        self.channels, self.M = channels, M
        self.coef_net = nn.Sequential(nn.Linear(context_dim, 2 * M * channels))
        self.register_buffer("lambdas", torch.Tensor([1.0] * M + [0.5] * M).float())
        self.register_buffer("init_v", torch.Tensor([1.0] + [0.0] * (2 * M - 1)).float())

    def forward(self, x, g):
        b = x.size(0)
        theta = 2 * torch.sigmoid(self.coef_net(g[0].view(b, -1))) - 1
        coefs = theta.view(-1, self.channels, 1, 1, 2 * self.M) * self.lambdas + self.init_v
        mapped = x.unsqueeze(-1) * coefs[:, :, :, :, :self.M] + coefs[:, :, :, :, self.M:]
        return torch.maximum(mapped[..., 0], mapped[..., 1]) if self.M == 2 else torch.max(mapped, dim=-1)[0]


class ContextGen(nn.Module):
    def __init__(self, context_dim, c_in, c_exp, stride):
        super().__init__()
        self.joint_conv = nn.Conv2d(c_in, context_dim, 1, bias=False)
        self.joint_norm = bn(context_dim)
        self.joint_act = nn.Hardswish()
        self.conv_f = nn.Conv2d(context_dim, c_exp, 1)
        self.conv_t = nn.Conv2d(context_dim, c_exp, 1)
        if stride > 1:
            self.pool_f = nn.AvgPool2d((3, 1), (stride, 1), (1, 0))
            self.pool_t = nn.AvgPool2d((1, 3), (1, stride), (0, 1))
        else:
            self.pool_f = self.pool_t = nn.Identity()

    def forward(self, x):
        cf = F.adaptive_avg_pool2d(x, (None, 1))
        ct = F.adaptive_avg_pool2d(x, (1, None)).permute(0, 1, 3, 2)
        f, t = cf.size(2), ct.size(2)
        g = self.joint_act(self.joint_norm(self.joint_conv(torch.cat([cf, ct], dim=2))))
        h_cf, h_ct = torch.split(g, [f, t], dim=2)
        h_ct = h_ct.permute(0, 1, 3, 2)
        h_c = torch.mean(g, dim=2, keepdim=True)
        return h_c, self.conv_f(self.pool_f(h_cf)), self.conv_t(self.pool_t(h_ct))


class DYBlock(nn.Module):
    def __init__(self, c_in, kernel, c_exp, c_out, use_hs, stride, width_mult, temperature=1.0):
        super().__init__()
        self.use_res_connect = stride == 1 and c_in == c_out
        context_dim = int(min(max(make_divisible(c_exp // 4), make_divisible(32 * width_mult)),
                              make_divisible(128 * width_mult)))
        act = nn.Hardswish if use_hs else nn.ReLU
        if c_exp != c_in:
            self.exp_conv = DynamicConv(c_in, c_exp, context_dim, 1, temperature=temperature)
            self.exp_norm, self.exp_act = bn(c_exp), act()
        else:
            self.exp_conv = None
        self.depth_conv = DynamicConv(c_exp, c_exp, context_dim, kernel, stride, (kernel - 1) // 2, groups=c_exp,
                                      temperature=temperature)
        self.depth_norm = bn(c_exp)
        self.depth_act = DyReLUB(c_exp, context_dim)
        self.proj_conv = DynamicConv(c_exp, c_out, context_dim, 1, temperature=temperature)
        self.proj_norm = bn(c_out)
        self.context_gen = ContextGen(context_dim, c_in, c_exp, stride)

    def forward(self, x):
        inp = x
        g = self.context_gen(x)
        if self.exp_conv is not None:
            x = self.exp_act(self.exp_norm(self.exp_conv(x, g)))
        x = self.depth_act(self.depth_norm(self.depth_conv(x, g)), g)
        x = x * g[1].sigmoid() * g[2].sigmoid()                                          # coordinate attention
        x = self.proj_norm(self.proj_conv(x, g))
        return x + inp if self.use_res_connect else x


# input channels, kernel, expanded, out, activation, stride (the original's _dymn_conf with strides (2, 2, 2, 2))
CONF = [(16, 3, 16, 16, "RE", 1), (16, 3, 64, 24, "RE", 2), (24, 3, 72, 24, "RE", 1), (24, 5, 72, 40, "RE", 2),
        (40, 5, 120, 40, "RE", 1), (40, 5, 120, 40, "RE", 1), (40, 3, 240, 80, "HS", 2), (80, 3, 200, 80, "HS", 1),
        (80, 3, 184, 80, "HS", 1), (80, 3, 184, 80, "HS", 1), (80, 3, 480, 112, "HS", 1),
        (112, 3, 672, 112, "HS", 1), (112, 5, 672, 160, "HS", 2), (160, 5, 960, 160, "HS", 1),
        (160, 5, 960, 160, "HS", 1)]


class OriginalDyMN(nn.Module):
    def __init__(self, width_mult=1.0, num_classes=527, temperature=1.0):
        super().__init__()
        adj = lambda c: make_divisible(c * width_mult)   # noqa: E731
        self.in_c = conv_norm_act(1, adj(16), 3, 2)
        self.layers = nn.ModuleList([DYBlock(adj(i), k, adj(e), adj(o), a == "HS", s, width_mult, temperature)
                                     for i, k, e, o, a, s in CONF])
        last = 6 * adj(160)
        self.out_c = conv_norm_act(adj(160), last, 1)
        self.classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(start_dim=1), nn.Linear(last, adj(1280)),
                                        nn.Hardswish(), nn.Dropout(p=0.2), nn.Linear(adj(1280), num_classes))

    def forward(self, x, return_fmaps=False):
        fmaps = [self.in_c(x)]
        for layer in self.layers:
            fmaps.append(layer(fmaps[-1]))
        fmaps.append(self.out_c(fmaps[-1]))
        x = fmaps[-1]
        embed = F.adaptive_avg_pool2d(x, (1, 1)).view(x.size(0), -1)
        logits = self.classifier(x)
        return (logits, fmaps) if return_fmaps else (logits, embed)


#: the scale of the DyReLU coefficient and kernel-attention layers of ``random_checkpoint``: clearly input-dependent
#: lines and kernel mixtures (theta ~ +-0.3), yet a random network that stays at unit scale on real audio (at 1 the
#: dynamic gains compound over 15 blocks and outputs reach 1e13)
GATE_SCALE = 0.3


def random_checkpoint(calibration, width_mult=1.0, seed=0):
    """The original's state dict with deterministic random weights: He-scaled kernels and linear layers, BN affine
    parameters around the identity, and BN statistics measured on ``calibration`` (normalised log-mels
    ``[B, 1, 128, T]``: train-mode passes, as training leaves them), so that activations keep their scale and their dependence on the input through the
    15 blocks (with arbitrary statistics the coordinate attention and the BNs wash the input out)."""
    g = torch.Generator().manual_seed(seed)
    net = OriginalDyMN(width_mult)
    sd = {}
    for k, v in net.state_dict().items():
        if k.endswith(("lambdas", "init_v", "running_mean", "running_var", "num_batches_tracked")):
            pass                                                          # constants; statistics: measured below
        elif k.endswith(".bias"):
            v = 0.1 * torch.randn(v.shape, generator=g)
        elif k.endswith("_conv.weight") and v.ndim == 4 and v.shape[:2] == (1, 1):  # dynamic: k kernels
            mod = net.get_submodule(k[: -len(".weight")])
            v = torch.randn(v.shape, generator=g) * (2.0 / ((mod.c_in // mod.groups) * mod.kernel ** 2)) ** 0.5
        elif ".coef_net." in k or ".residuals." in k:                    # DyReLU lines, kernel attention: mild
            v = torch.randn(v.shape, generator=g) * GATE_SCALE * (1.0 / v.shape[1]) ** 0.5
        elif v.ndim == 1:                                                 # BN scale
            v = 1.0 + 0.1 * torch.randn(v.shape, generator=g)
        else:
            v = torch.randn(v.shape, generator=g) * (2.0 / v[0].numel()) ** 0.5
        sd[k] = v.clone()
    net.load_state_dict(sd)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None                                             # the plain average over the passes
    net.train()
    with torch.no_grad():
        net(calibration)
    return {k: v.clone() for k, v in net.state_dict().items()}
