"""The models a sweep can train: a small MLP and CNN (sized for digits) and a CIFAR-style ResNet-18.

Every model's initial weights depend only on the global torch seed set before `build_model`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where a model is built: the names cost no torch import
    from torch import nn

MODELS: tuple[str, ...] = ("mlp", "cnn", "resnet18")


def model_names() -> list[str]:
    return list(MODELS)


def check_model_name(name: str) -> str:
    """Return `name` if it is a known model, else raise ValueError listing the valid names."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(MODELS)}")
    return name


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Model `name` mapping a batch of shape (B, *input_shape) to logits of shape (B, num_classes)."""
    check_model_name(name)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if name == "mlp":
        return mlp(input_shape, num_classes)
    if len(input_shape) != 3:
        raise ValueError(f"{name} needs an image input shape (C, H, W), got {tuple(input_shape)}")
    if name == "cnn":
        return cnn(input_shape[0], num_classes)
    return cifar_resnet18(input_shape[0], num_classes)


def mlp(input_shape: tuple[int, ...], num_classes: int, hidden: int = 128) -> nn.Sequential:
    from torch import nn

    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(math.prod(input_shape), hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, num_classes),
    )


def _conv_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    from torch import nn

    return [
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),  # BN's shift makes a bias redundant
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    ]


def cnn(in_channels: int, num_classes: int) -> nn.Sequential:
    """Three 3x3 conv blocks, one 2x2 max-pool and global average pooling: any image size >= 2x2."""
    from torch import nn

    return nn.Sequential(
        *_conv_bn_relu(in_channels, 32),
        *_conv_bn_relu(32, 64),
        nn.MaxPool2d(2),
        *_conv_bn_relu(64, 64),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, num_classes),
    )


def cifar_resnet18(in_channels: int, num_classes: int) -> nn.Module:
    """torchvision's ResNet-18 with the CIFAR stem: a 3x3 stride-1 conv1 and no max-pool, since the
    ImageNet stem would shrink a 32x32 image to 8x8 before the first residual block."""
    from torch import nn
    from torchvision.models import resnet18  # torchvision takes seconds to import: only when used

    model = resnet18(num_classes=num_classes)
    model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    # The same initialisation torchvision gives every other conv of the network.
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    return model
