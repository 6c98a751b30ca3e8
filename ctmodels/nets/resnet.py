"""Single-channel ResNet builders on top of torchvision.

CT slices are one channel (windowed HU), so the stem conv takes ``in_channels`` inputs instead
of RGB; everything else is torchvision's ResNet unchanged, so torchvision-format state dicts and
tools (Grad-CAM target ``layer4``, torch-pruning) keep working by name.
"""

from __future__ import annotations

import torch.nn as nn
from torchvision.models import resnet as tv_resnet

from ctmodels.nets.lesion import CTResNet

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


def resnet50(num_classes: int = 2, in_channels: int = 1, lesion_head: int = 0) -> tv_resnet.ResNet:
    """ResNet50 (torchvision V1.5 bottlenecks), random init: the ``baseline`` and ``sparse`` nets.

    ``lesion_head``: width of the lesion decoder (:mod:`ctmodels.nets.lesion`); 0 builds none.
    """
    model = replace_stem(CTResNet(tv_resnet.Bottleneck, [3, 4, 6, 3], num_classes=num_classes), in_channels)
    return model.add_lesion_head(lesion_head) if lesion_head else model


def resnet18(num_classes: int = 2, in_channels: int = 1, lesion_head: int = 0) -> tv_resnet.ResNet:
    """ResNet18, random init: the ``kd`` student distilled from the ResNet50 teacher."""
    model = replace_stem(CTResNet(tv_resnet.BasicBlock, [2, 2, 2, 2], num_classes=num_classes), in_channels)
    return model.add_lesion_head(lesion_head) if lesion_head else model
