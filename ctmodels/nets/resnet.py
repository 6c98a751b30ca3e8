"""Single-channel ResNet builders on top of torchvision.

CT slices are one channel (windowed HU), so the stem conv takes ``in_channels`` inputs instead
of RGB; everything else is torchvision's ResNet unchanged, so torchvision-format state dicts and
tools (Grad-CAM target ``layer4``, torch-pruning) keep working by name.
"""

from __future__ import annotations

import torch.nn as nn
from torchvision.models import resnet as tv_resnet

__all__ = ["resnet50", "resnet18", "replace_stem"]


def replace_stem(model: tv_resnet.ResNet, in_channels: int) -> tv_resnet.ResNet:
    """Swap ``conv1`` for one taking ``in_channels`` inputs (same kernel/stride/padding, no bias).

    Initialised like torchvision initialises convs (Kaiming normal, fan_out), so a freshly built
    1-channel net trains exactly like the RGB one would.
    """
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    old = model.conv1
    if old.in_channels == in_channels:
        return model
    new = nn.Conv2d(
        in_channels,
        old.out_channels,
        kernel_size=old.kernel_size,
        stride=old.stride,
        padding=old.padding,
        bias=old.bias is not None,
    )
    nn.init.kaiming_normal_(new.weight, mode="fan_out", nonlinearity="relu")
    model.conv1 = new
    return model


def resnet50(num_classes: int = 2, in_channels: int = 1) -> tv_resnet.ResNet:
    """ResNet50 (torchvision V1.5 bottlenecks), random init: the ``baseline`` and ``sparse`` nets."""
    model = tv_resnet.resnet50(weights=None, num_classes=num_classes)
    return replace_stem(model, in_channels)


def resnet18(num_classes: int = 2, in_channels: int = 1) -> tv_resnet.ResNet:
    """ResNet18, random init: the ``kd`` student distilled from the ResNet50 teacher."""
    model = tv_resnet.resnet18(weights=None, num_classes=num_classes)
    return replace_stem(model, in_channels)
