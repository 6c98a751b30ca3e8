"""The registry: keys, defaults, card-driven build, and widths-as-data for pruned nets."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch.nn as nn

from ctmodels.nets import (
    GHOST_DEFAULTS,
    MODEL_INFO,
    MODEL_KEYS,
    FusedGhostModule,
    GhostModule,
    UnknownModelError,
    apply_widths,
    build,
    create,
    extract_widths,
    info,
    resolve_arch,
)


def test_keys_and_infos() -> None:
    assert set(MODEL_KEYS) == {"baseline", "ghost", "kd", "ghost_kd", "sparse", "pruned"}
    assert set(MODEL_INFO) == set(MODEL_KEYS)
    for key in MODEL_KEYS:
        i = info(key)
        assert i.key == key and i.title and i.description and i.reference
    assert "Table I row 1" in info("baseline").reference


def test_unknown_key_lists_valid_keys() -> None:
    with pytest.raises(UnknownModelError) as err:
        create("resnet9000")
    assert isinstance(err.value, ValueError)
    for key in MODEL_KEYS:
        assert key in str(err.value)
    with pytest.raises(UnknownModelError):
        info("nope")


def test_ghost_kwargs_override_defaults() -> None:
    m = create("ghost", placement="paper", stages=(4,), ratio=2)
    assert isinstance(m.layer4[0].conv3, FusedGhostModule) and isinstance(m.layer3[0].conv3, nn.Conv2d)
    assert isinstance(m.layer4[0].conv1, nn.Conv2d)
    m = create("ghost", placement="paper", stages=(4,), ratio=2, design="v1")
    assert isinstance(m.layer4[0].conv3, GhostModule) and isinstance(m.layer4[0].bn3, nn.BatchNorm2d)


def test_a_ghost_card_from_before_designs_rebuilds_as_v1() -> None:
    """Cards store resolved kwargs; one written before ``design`` existed must not get the new default."""
    old = _Card("ghost", {"placement": "full", "stages": [1, 2, 3, 4], "ratio": 3, "dw_size": 3})
    m = build(old)
    assert isinstance(m.layer1[0].conv1, GhostModule) and isinstance(m.layer1[0].bn1, nn.BatchNorm2d)
    assert sum(p.numel() for p in m.parameters()) == 9_928_090
    assert isinstance(build(_Card("ghost", resolve_arch("ghost"))).layer1[0].conv1, FusedGhostModule)


def test_resolve_arch_is_complete_and_json_safe() -> None:
    assert resolve_arch("ghost") == GHOST_DEFAULTS
    arch = resolve_arch("ghost", {"stages": (4, 3), "num_classes": 2})
    assert arch["stages"] == [3, 4] and "num_classes" not in arch
    assert resolve_arch("pruned", {"widths": {"fc": (2, 10)}}) == {"base": "baseline", "widths": {"fc": [2, 10]}}
    with pytest.raises(UnknownModelError):
        resolve_arch("pruned", {"base": "mystery"})


@dataclass
class _Card:
    model_key: str
    arch: dict = field(default_factory=dict)
    class_names: list = field(default_factory=lambda: ["mild", "severe"])
    in_channels: int = 1


def test_build_from_card_like() -> None:
    m = build(_Card("kd", class_names=["a", "b", "c"], in_channels=3))
    assert m.fc.out_features == 3 and m.conv1.in_channels == 3
    with pytest.raises(ValueError, match="num_classes"):
        build(_Card("kd", arch={"num_classes": 5}))


def test_fresh_net_has_no_widths() -> None:
    assert extract_widths(create("kd"), "kd") == {}


def test_apply_widths_keeps_conv_hyperparameters() -> None:
    m = nn.Sequential(
        nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8, bias=True),  # depthwise
        nn.BatchNorm2d(8, eps=1e-3),
        nn.Linear(8, 4),
    )
    apply_widths(m, {"0": [5, 5], "1": [5], "2": [4, 5]})
    conv, bn, lin = m[0], m[1], m[2]
    assert (conv.in_channels, conv.out_channels, conv.groups) == (5, 5, 5)
    assert conv.kernel_size == (3, 3) and conv.stride == (2, 2) and conv.padding == (1, 1)
    assert conv.bias is not None and conv.weight.shape == (5, 1, 3, 3)
    assert bn.num_features == 5 and bn.eps == 1e-3
    assert lin.in_features == 5 and lin.out_features == 4
    with pytest.raises(ValueError, match="does not have"):
        apply_widths(m, {"9.conv": [1, 1, 1]})
    with pytest.raises(ValueError, match="divisible"):
        apply_widths(m, {"0": [4, 6, 4]})


def test_extract_then_apply_widths_on_a_hand_shrunk_net() -> None:
    model = create("kd")
    model.layer4[1].conv2 = nn.Conv2d(512, 256, 3, padding=1, bias=False)
    model.layer4[1].bn2 = nn.BatchNorm2d(256)
    model.fc = nn.Linear(256, 2)
    widths = extract_widths(model, "kd")
    assert widths == {"layer4.1.conv2": [256, 512, 1], "layer4.1.bn2": [256], "fc": [2, 256]}
    rebuilt = create("pruned", base="kd", widths=widths)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }
    model.extra_head = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="does not exist"):
        extract_widths(model, "kd")
