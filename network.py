"""Networks f (features), g (label head), h (bias head), and the gradient reversal layer.

Learning Not to Learn (Kim et al., CVPR 2019, arXiv:1812.10352) splits the classifier into
f and g and attaches h to f's features. Networks are found by name in NETWORKS so that
--f_network_name/--g_network_name/--h_network_name can pick them.

Bias-head contract: h returns logits of shape (N, heads, classes, *positions) and the bias
target b has shape (N, heads, *positions); 255 marks positions to ignore.
"""
import math

import torch
from torch import nn

NETWORKS = {}


def register(name):
    def deco(fn):
        NETWORKS[name] = fn
        return fn
    return deco


def build_network(name, **kwargs):
    """Build a registered network; unknown names list the known ones."""
    if name not in NETWORKS:
        raise ValueError(f"unknown network '{name}'; known networks: {', '.join(sorted(NETWORKS))}")
    return NETWORKS[name](**kwargs)


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output.neg() * ctx.scale, None


def grad_reverse(x, scale):
    """Identity forward; gradient multiplied by -scale backward (LNL §3.3, mu = 0.1)."""
    return _GradReverse.apply(x, scale)


class GradientReversal(nn.Module):
    """Module form of grad_reverse, so the reversal can sit inside a Sequential."""

    def __init__(self, scale=0.1):
        super().__init__()
        self.scale = scale

    def forward(self, x):
        return grad_reverse(x, self.scale)

    def extra_repr(self):
        return f"scale={self.scale}"


def reference_init(module):
    """He-style init of the LNL reference: conv ~ N(0, sqrt(2 / (k*k*out))), BN = (1, 0)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            n = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / n))
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return module


@register("cmnist_f")
def cmnist_f(in_channels=3, **_):
    """f of the reference Colored-MNIST net: 3x28x28 -> 32x14x14 features."""
    net = nn.Sequential(
        nn.BatchNorm2d(in_channels),
        nn.Conv2d(in_channels, 32, 5, padding=2), nn.ReLU(inplace=True),
        nn.MaxPool2d(3, stride=2, padding=1),
        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(inplace=True),
    )
    return reference_init(net)


@register("cmnist_g")
def cmnist_g(num_main_classes=10, **_):
    """g of the reference Colored-MNIST net: 32x14x14 -> class logits."""
    net = nn.Sequential(
        nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(inplace=True),
        nn.AvgPool2d(7), nn.Flatten(),
        nn.Linear(64, num_main_classes),
    )
    return reference_init(net)


class PixelBiasHeads(nn.Module):
    """h for Colored MNIST: one small conv head per colour channel, each giving per-pixel
    logits over colour bins (LNL reference: conv3x3, BN, ReLU, conv3x3)."""

    def __init__(self, in_channels=32, num_bias_classes=8, num_heads=3):
        super().__init__()
        # PyTorch's default init, as in the reference (its He init was applied to f, g only).
        self.heads = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(in_channels, in_channels, 3, padding=1),
                nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True),
                nn.Conv2d(in_channels, num_bias_classes, 3, padding=1),
            )
            for _ in range(num_heads)
        )

    def forward(self, feat):
        return torch.stack([head(feat) for head in self.heads], dim=1)


@register("cmnist_h")
def cmnist_h(num_bias_classes=8, **_):
    return PixelBiasHeads(32, num_bias_classes, num_heads=3)
