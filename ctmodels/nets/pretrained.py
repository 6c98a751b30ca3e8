"""Optional ImageNet initialisation from a weights file the user already has on disk.

Nothing is ever downloaded. The file is a torchvision-format ResNet state dict, either
``.safetensors`` (preferred) or ``.pth`` read with ``torch.load(weights_only=True)``, which
refuses arbitrary pickled objects. RGB stem weights are summed into the single CT channel
(the same trick as timm's ``adapt_input_conv``: a grey image fed as R=G=B gives the same
activations), the classifier is skipped (class count differs) and anything whose name or shape
does not match (Ghost-replaced convs, pruned layers) is skipped and reported.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

__all__ = ["ImageNetLoadReport", "load_imagenet_resnet", "adapt_input_conv"]

log = logging.getLogger(__name__)


@dataclass
class ImageNetLoadReport:
    """What an ImageNet init actually did, for the training log and the run card."""

    path: str
    loaded: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # name -> reason
    not_in_file: list[str] = field(default_factory=list)

    @property
    def n_loaded(self) -> int:
        return len(self.loaded)

    @property
    def n_skipped(self) -> int:
        return len(self.skipped)

    def summary(self) -> str:
        return (
            f"ImageNet init from {Path(self.path).name}: {self.n_loaded} tensors loaded, "
            f"{self.n_skipped} skipped, {len(self.not_in_file)} left at random init"
        )


def adapt_input_conv(in_channels: int, weight: torch.Tensor) -> torch.Tensor:
    """Map RGB stem weights [out, 3, k, k] to ``in_channels`` inputs."""
    if weight.shape[1] == in_channels:
        return weight
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    # Other counts: tile the RGB filters and rescale so the summed response stays the same.
    reps = -(-in_channels // weight.shape[1])
    tiled = weight.repeat(1, reps, 1, 1)[:, :in_channels]
    return tiled * (weight.shape[1] / float(in_channels))


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"ImageNet weights file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    if suffix in (".pth", ".pt"):
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
        if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
            obj = obj["state_dict"]
        if not isinstance(obj, dict):
            raise ValueError(f"{path.name} does not hold a state dict")
        return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    raise ValueError(f"ImageNet weights must be .safetensors or .pth, got {path.name}")


def load_imagenet_resnet(model: nn.Module, path: str | Path) -> ImageNetLoadReport:
    """Copy matching tensors of a local torchvision ResNet state dict into ``model`` (in place)."""
    path = Path(path)
    source = _read_state_dict(path)
    target = model.state_dict()
    report = ImageNetLoadReport(path=str(path))
    update: dict[str, torch.Tensor] = {}
    for name, tensor in source.items():
        if name.startswith("fc."):
            report.skipped[name] = "classifier (class count differs)"
            continue
        if name not in target:
            report.skipped[name] = "no layer of that name in this net"
            continue
        if name == "conv1.weight" and tensor.ndim == 4:
            tensor = adapt_input_conv(target[name].shape[1], tensor)
        if tensor.shape != target[name].shape:
            report.skipped[name] = f"shape {list(tensor.shape)} != {list(target[name].shape)}"
            continue
        update[name] = tensor.to(dtype=target[name].dtype)
        report.loaded.append(name)
    report.not_in_file = [n for n in target if n not in update]
    model.load_state_dict(update, strict=False)
    log.info(report.summary())
    return report
