"""Networks f (features), g (label head), h (bias head), and the gradient reversal layer.

Learning Not to Learn (Kim et al., CVPR 2019, arXiv:1812.10352) splits the classifier into
f and g and attaches h to f's features. Networks are found by name in NETWORKS so that
--f_network_name/--g_network_name/--h_network_name can pick them.

Bias-head contract: h returns logits of shape (N, heads, classes, *positions) and the bias
target b has shape (N, heads, *positions); 255 marks positions to ignore. An image-level bias
is one head with no positions: logits (N, 1, classes), b of shape (N,) or (N, 1).
"""
import functools
import math
import os

import torch
from torch import nn

from utils import UserError

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


@register("none")
def no_network(**_):
    """For methods that use no bias head (IRM, AND-mask): an empty module."""
    return nn.Identity()


def _mlp(sizes, activation, final_activation=True):
    layers = [nn.Flatten()]
    for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if final_activation or k < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


def _init_linear(net, weight_init, bias_value):
    for m in net.modules():
        if isinstance(m, nn.Linear):
            weight_init(m.weight)
            nn.init.constant_(m.bias, bias_value)
    return net


@register("irm_mlp_f")
def irm_mlp_f(in_features=2 * 14 * 14, hidden_dim=390, **_):
    """IRM's Colored-MNIST MLP without its output layer (Arjovsky et al. 2019): two hidden
    ReLU layers, Xavier-uniform weights, zero biases."""
    return _init_linear(_mlp([in_features, hidden_dim, hidden_dim], nn.ReLU),
                        nn.init.xavier_uniform_, 0.0)


@register("irm_mlp_g")
def irm_mlp_g(hidden_dim=390, num_main_classes=1, **_):
    return _init_linear(nn.Linear(hidden_dim, num_main_classes), nn.init.xavier_uniform_, 0.0)


@register("spiral_mlp_f")
def spiral_mlp_f(in_features=18, hidden_dim=256, **_):
    """AND-mask's synthetic-task MLP without its output layer (Parascandolo et al., ICLR 2021):
    three hidden LeakyReLU layers, Kaiming-normal weights, biases 0.01."""
    return _init_linear(_mlp([in_features] + [hidden_dim] * 3, nn.LeakyReLU),
                        nn.init.kaiming_normal_, 0.01)


@register("spiral_mlp_g")
def spiral_mlp_g(hidden_dim=256, num_main_classes=1, **_):
    return _init_linear(nn.Linear(hidden_dim, num_main_classes), nn.init.kaiming_normal_, 0.01)


class BasicBlock(nn.Module):
    """Two 3x3 conv + BatchNorm layers with an identity (or 1x1 conv + BN) shortcut
    (He et al. 2016)."""

    def __init__(self, a, b, stride):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(a, b, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(b),
            nn.ReLU(inplace=True),
            nn.Conv2d(b, b, 3, padding=1, bias=False), nn.BatchNorm2d(b))
        self.shortcut = (nn.Identity() if stride == 1 and a == b else nn.Sequential(
            nn.Conv2d(a, b, 1, stride=stride, bias=False), nn.BatchNorm2d(b)))

    def forward(self, x):
        return torch.relu(self.body(x) + self.shortcut(x))


@register("cifar_resnet_f")
def cifar_resnet_f(in_channels=3, blocks=3, **_):
    """The AND-mask authors' CIFAR-10 network is a small ResNet with BatchNorm
    (docs/references.md): here He et al.'s CIFAR ResNet (stages of widths 16, 32, 64, `blocks`
    basic blocks each: ResNet-20), up to the pooled 64 features."""
    layers, width = [nn.Conv2d(in_channels, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16),
                     nn.ReLU(inplace=True)], 16
    for k, out in enumerate((16, 32, 64)):
        for j in range(blocks):
            layers.append(BasicBlock(width, out, 2 if k and not j else 1))
            width = out
    return reference_init(nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten()))


@register("cifar_resnet_g")
def cifar_resnet_g(num_main_classes=10, **_):
    return nn.Linear(64, num_main_classes)


# --------------------------------------------------------------------------- ResNet-18
# The real-image benchmarks (Dogs and Cats, IMDB-Face; LNL §4.2-4.3) use a ResNet-18 for g∘f.
# f runs from the stem through stage --resnet_split (1-4), g runs the remaining stages, the
# pooling and the classifier; h reads f's pooled features.
RESNET18_WIDTHS = (64, 64, 128, 256, 512)  # stem, stage 1..4
RESNET18_FILE = "resnet18-f37072fd.pth"     # torchvision's ImageNet weights


@functools.lru_cache(maxsize=1)
def _imagenet_resnet18_state():
    from torchvision.models import ResNet18_Weights
    try:
        return ResNet18_Weights.IMAGENET1K_V1.get_state_dict(progress=False)
    except Exception as exc:  # offline, proxy, or a broken cache file
        cache = os.path.join(torch.hub.get_dir(), "checkpoints", RESNET18_FILE)
        raise UserError(f"--pretrained could not get the ImageNet ResNet-18 weights ({exc}). "
                        f"torchvision caches them at {cache}: copy {RESNET18_FILE} there from "
                        "a machine that has it (or set TORCH_HOME), or drop --pretrained.") \
            from None


def _resnet18(pretrained):
    from torchvision.models import resnet18
    net = resnet18()
    if pretrained:
        net.load_state_dict(_imagenet_resnet18_state())
    return net


def _check_split(split):
    if split not in (1, 2, 3, 4):
        raise ValueError(f"--resnet_split must be 1, 2, 3 or 4 (the last stage in f); got {split}")


@register("resnet18_f")
def resnet18_f(resnet_split=3, pretrained=False, **_):
    """ResNet-18 from the stem through stage resnet_split."""
    _check_split(resnet_split)
    net = _resnet18(pretrained)
    stages = [net.layer1, net.layer2, net.layer3, net.layer4][:resnet_split]
    return nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, *stages)


@register("resnet18_g")
def resnet18_g(resnet_split=3, pretrained=False, num_main_classes=2, **_):
    """The rest of ResNet-18 after stage resnet_split, its pooling and a new classifier."""
    _check_split(resnet_split)
    net = _resnet18(pretrained)
    stages = [net.layer1, net.layer2, net.layer3, net.layer4][resnet_split:]
    return nn.Sequential(*stages, net.avgpool, nn.Flatten(),
                         nn.Linear(RESNET18_WIDTHS[-1], num_main_classes))


class ImageBiasHead(nn.Module):
    """h for an image-level bias (colour, age, gender): global average pooling of f's features,
    then a two-layer MLP. Logits have the bias-head shape with one head and no positions,
    (N, 1, classes), so the LNL losses serve pixel-level and image-level targets alike."""

    def __init__(self, in_channels, num_bias_classes, hidden=256):
        super().__init__()
        self.net = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                 nn.Linear(in_channels, hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, num_bias_classes))

    def forward(self, feat):
        return self.net(feat).unsqueeze(1)


@register("resnet18_h")
def resnet18_h(resnet_split=3, num_bias_classes=2, **_):
    _check_split(resnet_split)
    return ImageBiasHead(RESNET18_WIDTHS[resnet_split], num_bias_classes)


@register("lff_mlp_f")
def lff_mlp_f(in_features=3 * 28 * 28, **_):
    """LfF's Colored-MNIST MLP without its classifier (Nam et al. 2020; alinlab/LfF
    module/mlp.py): three hidden layers of 100 with ReLU, PyTorch's default initialisation.
    (Their input scaling is the dataset's: --lff_input_scale.)"""
    return _mlp([in_features, 100, 100, 100], nn.ReLU)


@register("lff_mlp_g")
def lff_mlp_g(num_main_classes=10, **_):
    return nn.Linear(100, num_main_classes)


class FeatureBiasHead(nn.Module):
    """An image-level bias head on a feature vector: a hidden layer of 100 with ReLU, then the
    bias classes as one head (N, 1, classes): LNL's and BlindEye's h on LfF's MLP (the LNL
    authors define h only for their convolutional f; this one is ours)."""

    def __init__(self, in_features, num_bias_classes, hidden=100):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(),
                                 nn.Linear(hidden, num_bias_classes))

    def forward(self, feat):
        return self.net(feat).unsqueeze(1)


@register("lff_mlp_h")
def lff_mlp_h(num_bias_classes=10, **_):
    return FeatureBiasHead(100, num_bias_classes)


@register("dfa_mlp_f")
def dfa_mlp_f(in_features=3 * 28 * 28, **_):
    """DFA's Colored-MNIST encoder (Lee et al. 2021; their module/mlp.py MLP_DISENTANGLE):
    LfF's MLP narrowed to 16 features, ReLU after each layer, PyTorch's default init. DFA
    builds two, the intrinsic f and the bias f_b."""
    return _mlp([in_features, 100, 100, 16], nn.ReLU)


@register("dfa_mlp_g")
def dfa_mlp_g(num_main_classes=10, **_):
    """DFA's head: one linear layer over both encoders' features concatenated (2 x 16)."""
    return nn.Linear(32, num_main_classes)
