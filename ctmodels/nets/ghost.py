"""Ghost modules (Han et al., CVPR 2020) dropped into torchvision ResNets.

Design: a :class:`GhostModule` replaces a block's ``conv`` attribute *in place* and is built with
``relu=False``, so the torchvision block's own ``forward`` is untouched: every replaced conv is
still followed by the block's existing BatchNorm (and ReLU, where the block applies one). The
module's inner BatchNorms normalise the intrinsic and ghost halves separately (as in GhostNet);
the block's BN after them is a cheap affine re-scaling that keeps the residual branch identical
in structure to the plain ResNet (and lets ``zero_init_residual``-style tricks, Grad-CAM targets
and state-dict names of everything *not* replaced keep working).

Shortcut/downsample convs and the stem always stay standard convs: they are cheap and the
residual path should stay an exact linear projection.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
import torch.nn as nn
from torchvision.models import resnet as tv_resnet

from ctmodels.nets.resnet import replace_stem

__all__ = ["GhostModule", "ghost_resnet50", "ghost_resnet18", "PLACEMENTS"]

log = logging.getLogger(__name__)

#: ``paper``: only the last 1x1 conv (conv3) of each Bottleneck, as paper 000 describes.
#: ``full``: every conv of the residual branch (conv1, the strided 3x3 conv2, conv3).
PLACEMENTS = ("paper", "full")


class GhostModule(nn.Module):
    """Primary conv makes ``ceil(out/ratio)`` intrinsic maps; a depthwise conv makes the rest.

    Output = concat(intrinsic, ghosts)[:, :out_ch]. Parameters drop roughly by ``ratio``
    against a dense ``kernel_size`` conv, which is the whole point on constrained hosts.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel_size: int = 1,
        stride: int = 1,
        ratio: int = 2,
        dw_size: int = 3,
        relu: bool = True,
    ) -> None:
        super().__init__()
        if ratio < 2:
            raise ValueError(f"Ghost ratio must be >= 2 (1 would be a plain conv), got {ratio}")
        if dw_size % 2 != 1:
            raise ValueError(f"dw_size must be odd so ghosts stay aligned, got {dw_size}")
        self.in_channels = in_ch
        self.out_channels = out_ch
        self.kernel_size = kernel_size
        self.stride = stride
        self.ratio = ratio
        init_ch = math.ceil(out_ch / ratio)
        new_ch = init_ch * (ratio - 1)
        self.primary_conv = nn.Sequential(
            nn.Conv2d(in_ch, init_ch, kernel_size, stride, kernel_size // 2, bias=False),
            nn.BatchNorm2d(init_ch),
            nn.ReLU(inplace=True) if relu else nn.Identity(),
        )
        self.cheap_operation = nn.Sequential(
            nn.Conv2d(init_ch, new_ch, dw_size, 1, dw_size // 2, groups=init_ch, bias=False),
            nn.BatchNorm2d(new_ch),
            nn.ReLU(inplace=True) if relu else nn.Identity(),
        )
        # Same init torchvision gives the convs it replaces, so ghost nets train comparably.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.primary_conv(x)
        x2 = self.cheap_operation(x1)
        return torch.cat([x1, x2], dim=1)[:, : self.out_channels]

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, ratio={self.ratio}"
        )


def _ghost_from_conv(conv: nn.Conv2d, ratio: int, dw_size: int) -> GhostModule:
    """A GhostModule with the conv's in/out channels, kernel and stride (relu=False: see module doc)."""
    if conv.groups != 1 or conv.dilation != (1, 1):
        raise ValueError("Ghost replacement supports only plain convs (groups=1, dilation=1)")
    k = conv.kernel_size[0]
    if conv.kernel_size != (k, k) or conv.stride[0] != conv.stride[1]:
        raise ValueError("Ghost replacement supports only square kernels and strides")
    return GhostModule(
        conv.in_channels,
        conv.out_channels,
        kernel_size=k,
        stride=conv.stride[0],
        ratio=ratio,
        dw_size=dw_size,
        relu=False,
    )


def _check_stages(stages: Sequence[int]) -> tuple[int, ...]:
    out = tuple(sorted({int(s) for s in stages}))
    if not out or any(s not in (1, 2, 3, 4) for s in out):
        raise ValueError(f"stages must be a non-empty subset of 1..4 (torchvision layer1..layer4), got {stages}")
    return out


def _ghostify(
    model: tv_resnet.ResNet,
    conv_names: Sequence[str],
    stages: Sequence[int],
    ratio: int,
    dw_size: int,
) -> tv_resnet.ResNet:
    for stage in _check_stages(stages):
        layer: nn.Sequential = getattr(model, f"layer{stage}")
        for block in layer:
            for name in conv_names:
                setattr(block, name, _ghost_from_conv(getattr(block, name), ratio, dw_size))
    return model


def ghost_resnet50(
    placement: str = "paper",
    stages: Sequence[int] = (3, 4),
    ratio: int = 2,
    num_classes: int = 2,
    in_channels: int = 1,
    dw_size: int = 3,
) -> tv_resnet.ResNet:
    """ResNet50 with Ghost modules in the residual branch of the chosen stages.

    Builder defaults are paper 000's literal design (conv3 of every Bottleneck in stages 3-4,
    ratio 2); the registry's ``ghost`` key uses a lighter measured default (see docs/models.md).
    """
    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")
    stages = _check_stages(stages)  # fail before paying for a ResNet50 init
    model = replace_stem(tv_resnet.resnet50(weights=None, num_classes=num_classes), in_channels)
    names = ("conv3",) if placement == "paper" else ("conv1", "conv2", "conv3")
    return _ghostify(model, names, stages, ratio, dw_size)


def ghost_resnet18(
    stages: Sequence[int] = (1, 2, 3, 4),
    ratio: int = 2,
    num_classes: int = 2,
    in_channels: int = 1,
    dw_size: int = 3,
) -> tv_resnet.ResNet:
    """ResNet18 whose BasicBlock conv1/conv2 are Ghost modules: the ``ghost_kd`` student."""
    stages = _check_stages(stages)
    model = replace_stem(tv_resnet.resnet18(weights=None, num_classes=num_classes), in_channels)
    return _ghostify(model, ("conv1", "conv2"), stages, ratio, dw_size)
