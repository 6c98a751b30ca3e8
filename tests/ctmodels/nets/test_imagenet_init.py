"""ImageNet init from a local file: RGB stem summed to 1 channel, classifier and mismatches skipped."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torchvision.models import resnet18 as tv_resnet18

from ctmodels.nets import create, load_imagenet_resnet


@pytest.fixture(scope="module")
def imagenet_sd() -> dict[str, torch.Tensor]:
    """Stand-in for ImageNet weights: a random RGB, 1000-class torchvision ResNet18."""
    torch.manual_seed(0)
    return {k: v.contiguous() for k, v in tv_resnet18(weights=None).state_dict().items()}


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_load_into_resnet18(tmp_path: Path, imagenet_sd: dict[str, torch.Tensor], suffix: str) -> None:
    path = tmp_path / f"resnet18{suffix}"
    if suffix == ".safetensors":
        save_file(imagenet_sd, str(path))
    else:
        torch.save(imagenet_sd, path)
    model = create("kd")
    report = load_imagenet_resnet(model, path)
    sd = model.state_dict()
    assert torch.allclose(sd["conv1.weight"], imagenet_sd["conv1.weight"].sum(dim=1, keepdim=True))
    assert torch.equal(sd["layer3.1.conv2.weight"], imagenet_sd["layer3.1.conv2.weight"])
    assert set(report.skipped) == {"fc.weight", "fc.bias"}
    assert report.n_loaded == len(imagenet_sd) - 2
    assert set(report.not_in_file) == {"fc.weight", "fc.bias"}
    assert "loaded" in report.summary()


def test_ghost_student_loads_what_matches(tmp_path: Path, imagenet_sd: dict[str, torch.Tensor]) -> None:
    path = tmp_path / "resnet18.safetensors"
    save_file(imagenet_sd, str(path))
    model = create("ghost_kd")
    report = load_imagenet_resnet(model, path)
    assert "layer1.0.conv1.weight" in report.skipped  # replaced by a Ghost module
    assert "conv1.weight" in report.loaded and "layer2.0.downsample.0.weight" in report.loaded
    assert any(".primary_conv." in n for n in report.not_in_file)


def test_missing_or_wrong_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_imagenet_resnet(create("kd"), tmp_path / "absent.safetensors")
    bad = tmp_path / "weights.npz"
    bad.write_bytes(b"x")
    with pytest.raises(ValueError):
        load_imagenet_resnet(create("kd"), bad)
