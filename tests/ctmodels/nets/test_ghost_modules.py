"""Ghost modules: shapes, parameter savings, and where the builders put them."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from ctmodels.nets import FusedGhostModule, GhostModule, create, ghost_resnet18, ghost_resnet50


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def meta(builder, **kw) -> nn.Module:
    """Build on the meta device: parameter counts without the cost of random init."""
    with torch.device("meta"):
        return builder(**kw)


@pytest.mark.parametrize(("out_ch", "ratio", "stride"), [(8, 2, 1), (5, 2, 1), (12, 3, 2), (10, 4, 1)])
def test_ghost_module_shape(out_ch: int, ratio: int, stride: int) -> None:
    g = GhostModule(4, out_ch, kernel_size=3, stride=stride, ratio=ratio, relu=False)
    y = g(torch.randn(2, 4, 16, 16))
    assert y.shape == (2, out_ch, 16 // stride, 16 // stride)


def test_ghost_module_params_follow_ratio() -> None:
    # primary 1x1: in * ceil(out/r); cheap 3x3 depthwise: ceil(out/r)*(r-1) * 9; BN: 2 per channel.
    for r in (2, 3, 4):
        g = GhostModule(64, 256, ratio=r)
        init = math.ceil(256 / r)
        expected = 64 * init + init * (r - 1) * 9 + 2 * (init + init * (r - 1))
        assert n_params(g) == expected
        assert n_params(g) < n_params(nn.Conv2d(64, 256, 1, bias=False))


def test_ghost_module_rejects_bad_ratio() -> None:
    with pytest.raises(ValueError):
        GhostModule(4, 8, ratio=1)


@pytest.mark.parametrize(("out_ch", "ratio", "stride"), [(8, 2, 1), (12, 3, 2), (16, 4, 1)])
def test_fused_ghost_module_shape_and_ops(out_ch: int, ratio: int, stride: int) -> None:
    g = FusedGhostModule(4, out_ch, kernel_size=3, stride=stride, ratio=ratio).eval()
    assert g(torch.randn(2, 4, 16, 16)).shape == (2, out_ch, 16 // stride, 16 // stride)
    dw = [m for m in g.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    # every cheap op is a true depthwise conv (multiplier 1): the shape int8/NCHWc kernels run fast
    assert len(dw) == ratio - 1 and all(m.in_channels == m.out_channels == m.groups for m in dw)


def test_fused_ghost_module_refuses_a_width_it_would_have_to_slice() -> None:
    with pytest.raises(ValueError, match="divisible"):
        FusedGhostModule(4, 10, ratio=4)
    with pytest.raises(ValueError, match="one per stage"):
        ghost_resnet50(stages=(3, 4), ratio=[2, 2, 4])


def test_fused_design_replaces_the_block_bn_so_every_bn_folds() -> None:
    """Every BatchNorm directly follows a conv whose only user it is: torch.fx's fuse folds them all."""
    from torch.fx.experimental.optimization import fuse

    m = create("ghost").eval()
    first = m.layer4[0]
    assert isinstance(first.conv2, FusedGhostModule) and first.conv2.ratio == 4 and m.layer3[0].conv1.ratio == 2
    assert all(isinstance(getattr(first, f"bn{i}"), nn.Identity) for i in (1, 2, 3))
    fused = fuse(m)
    assert not any(isinstance(x, nn.BatchNorm2d) for x in fused.modules())
    x = torch.randn(1, 1, 64, 64)
    assert torch.allclose(fused(x), m(x), atol=1e-4)


def test_paper_placement_replaces_only_conv3_of_stages_3_4() -> None:
    m = meta(ghost_resnet50, placement="paper", stages=(3, 4), ratio=2)
    for stage in (1, 2, 3, 4):
        for block in getattr(m, f"layer{stage}"):
            assert isinstance(block, Bottleneck)
            assert isinstance(block.conv3, GhostModule) == (stage in (3, 4))
            assert isinstance(block.conv1, nn.Conv2d) and isinstance(block.conv2, nn.Conv2d)
            if block.downsample is not None:
                assert isinstance(block.downsample[0], nn.Conv2d)


def test_full_placement_keeps_strides_and_shortcuts() -> None:
    m = ghost_resnet50(placement="full", stages=(1, 2, 3, 4), ratio=3)
    for stage in (1, 2, 3, 4):
        first = getattr(m, f"layer{stage}")[0]
        assert all(isinstance(getattr(first, c), GhostModule) for c in ("conv1", "conv2", "conv3"))
        assert first.conv2.stride == (1 if stage == 1 else 2)
        assert isinstance(first.downsample[0], nn.Conv2d)
    assert isinstance(m.conv1, nn.Conv2d) and m.conv1.in_channels == 1
    m.eval()
    assert m(torch.randn(1, 1, 64, 64)).shape == (1, 2)


def test_ghost_resnet18_student() -> None:
    m = ghost_resnet18(ratio=2)
    for stage in (1, 2, 3, 4):
        for block in getattr(m, f"layer{stage}"):
            assert isinstance(block, BasicBlock)
            assert isinstance(block.conv1, GhostModule) and isinstance(block.conv2, GhostModule)
    m.eval()
    assert m(torch.randn(1, 1, 64, 64)).shape == (1, 2)


# Measured counts at 2 classes / 1 channel; docs/models.md quotes these exact numbers.
MEASURED = [
    ("paper", (3, 4), 2, 21_226_434),
    ("paper", (1, 2, 3, 4), 2, 21_089_090),
    ("full", (1, 2, 3, 4), 2, 13_314_818),
    ("full", (1, 2, 3, 4), 3, 9_928_090),
    ("full", (1, 2, 3, 4), 4, 8_196_642),
    ("full", (3, 4), 3, 10_742_058),
    ("full", (2, 3, 4), 3, 10_048_138),
    ("full", (2, 3, 4), 4, 8_334_018),
]


@pytest.mark.parametrize(("placement", "stages", "ratio", "expected"), MEASURED)
def test_measured_parameter_table(placement: str, stages: tuple[int, ...], ratio: int, expected: int) -> None:
    m = meta(ghost_resnet50, placement=placement, stages=stages, ratio=ratio)
    assert n_params(m) == expected


def test_default_ghost_parameter_count() -> None:
    with torch.device("meta"):
        assert n_params(create("ghost")) == 10_078_978  # docs/models.md; 0.43x the baseline


def test_bad_placement_and_stages() -> None:
    with pytest.raises(ValueError, match="placement"):
        ghost_resnet50(placement="everywhere")
    with pytest.raises(ValueError, match="stages"):
        ghost_resnet50(stages=(5,))
