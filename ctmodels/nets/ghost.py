"""Ghost modules (Han et al., CVPR 2020) dropped into torchvision ResNets.

Two designs (``design=``):

``fused`` (the ``ghost`` default since the Efficiency issue): :class:`FusedGhostModule` makes
``out/ratio`` intrinsic maps with the primary conv and each further group of ``out/ratio`` maps
with its own depthwise conv (channel multiplier 1), each conv followed by its BatchNorm, and
*replaces the block's BatchNorm* (set to Identity). Every BatchNorm then folds into its conv for
inference, there is no channel slice, and every cheap op is a true depthwise conv: the layer
shapes ONNX Runtime's int8 and NCHWc kernels and oneDNN's channels-last kernels run fast. Measured
on 2 cores (docs/models.md): v1 ratio 3 ran int8 at 2.7x the baseline's eager time because a
depthwise conv with channel multiplier 2 has no fast QLinearConv path, and its concat→slice→BN
tail blocked BN folding in every runtime.

``v1``: a :class:`GhostModule` replaces a block's ``conv`` attribute *in place* and is built with
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

from ctmodels.nets.resnet import resnet18, resnet50

__all__ = ["GhostModule", "FusedGhostModule", "ghost_resnet50", "ghost_resnet18", "PLACEMENTS", "DESIGNS"]

log = logging.getLogger(__name__)

#: ``paper``: only the last 1x1 conv (conv3) of each Bottleneck, as paper 000 describes.
#: ``full``: every conv of the residual branch (conv1, the strided 3x3 conv2, conv3).
PLACEMENTS = ("paper", "full")
#: ``v1``: GhostModule followed by the block's BN (checkpoints made before ``fused`` rebuild as v1).
#: ``fused``: FusedGhostModule replacing conv *and* its BN (fast in every runtime; see module doc).
DESIGNS = ("v1", "fused")


def _torchvision_init(module: nn.Module) -> None:
    """The init torchvision gives the convs a Ghost module replaces, so ghost nets train comparably."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


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
        _torchvision_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.primary_conv(x)
        x2 = self.cheap_operation(x1)
        return torch.cat([x1, x2], dim=1)[:, : self.out_channels]

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, ratio={self.ratio}"
        )


class FusedGhostModule(nn.Module):
    """Ghost module built from ops that fold and vectorise: primary conv + BN makes ``out/ratio``
    maps; ``ratio - 1`` depthwise convs (multiplier 1) + BN each make ``out/ratio`` more from them.

    No ReLU inside and no slice: it stands in for a ``conv → BN`` pair of a ResNet block, whose
    ReLU (where the block has one) still follows.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 1, stride: int = 1, ratio: int = 2,
                 dw_size: int = 3) -> None:
        super().__init__()
        if ratio < 2:
            raise ValueError(f"Ghost ratio must be >= 2 (1 would be a plain conv), got {ratio}")
        if out_ch % ratio:
            raise ValueError(f"the fused Ghost design needs out_ch divisible by the ratio (no slice): {out_ch} % {ratio}")
        if dw_size % 2 != 1:
            raise ValueError(f"dw_size must be odd so ghosts stay aligned, got {dw_size}")
        self.in_channels, self.out_channels = in_ch, out_ch
        self.kernel_size, self.stride, self.ratio = kernel_size, stride, ratio
        init_ch = out_ch // ratio
        self.primary_conv = nn.Sequential(
            nn.Conv2d(in_ch, init_ch, kernel_size, stride, kernel_size // 2, bias=False), nn.BatchNorm2d(init_ch))
        self.cheap_operations = nn.ModuleList(
            nn.Sequential(nn.Conv2d(init_ch, init_ch, dw_size, 1, dw_size // 2, groups=init_ch, bias=False),
                          nn.BatchNorm2d(init_ch))
            for _ in range(ratio - 1))
        _torchvision_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.primary_conv(x)
        return torch.cat([x1] + [cheap(x1) for cheap in self.cheap_operations], dim=1)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, ratio={self.ratio}")


def _check_conv(conv: nn.Conv2d) -> int:
    if conv.groups != 1 or conv.dilation != (1, 1):
        raise ValueError("Ghost replacement supports only plain convs (groups=1, dilation=1)")
    k = conv.kernel_size[0]
    if conv.kernel_size != (k, k) or conv.stride[0] != conv.stride[1]:
        raise ValueError("Ghost replacement supports only square kernels and strides")
    return k


def _ghost_from_conv(conv: nn.Conv2d, ratio: int, dw_size: int, design: str) -> nn.Module:
    """A Ghost module with the conv's in/out channels, kernel and stride (v1: relu=False, see module doc)."""
    k = _check_conv(conv)
    if design == "fused":
        return FusedGhostModule(conv.in_channels, conv.out_channels, k, conv.stride[0], ratio, dw_size)
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


def _stage_ratios(stages: tuple[int, ...], ratio: int | Sequence[int]) -> dict[int, int]:
    """One ratio for all stages, or one per stage (in the order of ``stages``)."""
    if isinstance(ratio, int):
        return {s: ratio for s in stages}
    ratios = [int(r) for r in ratio]
    if len(ratios) != len(stages):
        raise ValueError(f"ratio must be one int or one per stage ({len(stages)}), got {list(ratio)}")
    return dict(zip(stages, ratios))


def _ghost_plan(stages: Sequence[int], ratio: int | Sequence[int], design: str) -> dict[int, int]:
    """Stage -> ratio, every argument checked (builders call it before paying for a ResNet init)."""
    if design not in DESIGNS:
        raise ValueError(f"design must be one of {DESIGNS}, got {design!r}")
    return _stage_ratios(_check_stages(stages), ratio)


def _ghostify(
    model: tv_resnet.ResNet, conv_names: Sequence[str], plan: dict[int, int], dw_size: int, design: str,
) -> tv_resnet.ResNet:
    for stage, r in plan.items():
        layer: nn.Sequential = getattr(model, f"layer{stage}")
        for block in layer:
            for name in conv_names:
                setattr(block, name, _ghost_from_conv(getattr(block, name), r, dw_size, design))
                if design == "fused":  # the module normalises its own outputs (module doc)
                    setattr(block, "bn" + name.removeprefix("conv"), nn.Identity())
    return model


def ghost_resnet50(
    placement: str = "paper",
    stages: Sequence[int] = (3, 4),
    ratio: int | Sequence[int] = 2,
    num_classes: int = 2,
    in_channels: int = 1,
    dw_size: int = 3,
    design: str = "v1",
    lesion_head: int = 0,
) -> tv_resnet.ResNet:
    """ResNet50 with Ghost modules in the residual branch of the chosen stages.

    Builder defaults are paper 000's literal design (conv3 of every Bottleneck in stages 3-4,
    ratio 2, v1 modules); the registry's ``ghost`` key uses a lighter, faster measured default
    (see docs/models.md). ``ratio`` may be one per stage.
    """
    if placement not in PLACEMENTS:
        raise ValueError(f"placement must be one of {PLACEMENTS}, got {placement!r}")
    plan = _ghost_plan(stages, ratio, design)
    model = resnet50(num_classes, in_channels, lesion_head)
    names = ("conv3",) if placement == "paper" else ("conv1", "conv2", "conv3")
    return _ghostify(model, names, plan, dw_size, design)


def ghost_resnet18(
    stages: Sequence[int] = (1, 2, 3, 4),
    ratio: int = 2,
    num_classes: int = 2,
    in_channels: int = 1,
    dw_size: int = 3,
    lesion_head: int = 0,
) -> tv_resnet.ResNet:
    """ResNet18 whose BasicBlock conv1/conv2 are Ghost modules: the ``ghost_kd`` student."""
    plan = _ghost_plan(stages, ratio, "v1")
    model = resnet18(num_classes, in_channels, lesion_head)
    return _ghostify(model, ("conv1", "conv2"), plan, dw_size, "v1")
