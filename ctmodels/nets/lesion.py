"""The lesion head: a small FPN-style decoder that maps a ResNet's features to an infection map.

Why: every real slice comes with an infection mask, and severity is lesion burden over lung. A model
that only learns one number per slice learns what its few severe patients look like; one that must
also say *where* the lesion is learns from every mild slice too (docs/real_ct.md, "Lesion-aware").

The head reads the stem (stride 2) and the four stages (strides 4–32), projects each to ``width``
channels, adds them top-down (each level upsampled to the next finer one) and predicts one logit
per pixel at stride 2, upsampled to the input size. It is part of the backbone's module tree, so
structured pruning shrinks its input projections with the stages they read, and a checkpoint
carries it like any other layer.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models import resnet as tv_resnet

__all__ = ["LesionHead", "CTResNet", "LesionOutputs", "has_lesion_head", "lesion_outputs"]


def _conv_bn_relu(cin: int, cout: int, k: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class LesionHead(nn.Module):
    """Top-down decoder over (input, stem, layer1, …, layer4) → one lesion logit per input pixel.

    The deep levels are projected to ``width`` channels and added top-down (each upsampled to the next
    finer one) down to the stem's stride 2; a small full-resolution branch on the input itself
    (``width // 2`` channels) adds back the detail a ResNet's stride-2 stem and max-pool drop, which
    is where a few-pixel lesion of a 64-px input lives.
    """

    def __init__(self, in_channels: Sequence[int], width: int = 32) -> None:
        super().__init__()
        if width < 2:
            raise ValueError(f"lesion head width must be >= 2, got {width}")
        self.width = width
        fine = width // 2
        self.detail = nn.Sequential(_conv_bn_relu(in_channels[0], fine, 3), _conv_bn_relu(fine, fine, 3))
        self.lateral = nn.ModuleList(nn.Conv2d(c, width, 1) for c in in_channels[1:])
        self.smooth = nn.ModuleList([_conv_bn_relu(width, width, 3), _conv_bn_relu(width, width, 3)])
        self.to_fine = nn.Conv2d(width, fine, 1)
        self.fuse = _conv_bn_relu(fine, fine, 3)
        self.out = nn.Conv2d(fine, 1, 1)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """``features``: the input first, then the stem and the stages, finer first; returns (N, 1, H, W) logits."""
        x, deep = features[0], features[1:]
        p = self.lateral[-1](deep[-1])
        for k in range(len(deep) - 2, -1, -1):
            lat = self.lateral[k](deep[k])
            p = F.interpolate(p, size=lat.shape[-2:], mode="bilinear", align_corners=False) + lat
            if k == 1:  # stride 4: mix the deep context in before adding the stem's detail
                p = self.smooth[0](p)
        p = self.to_fine(self.smooth[1](p))
        p = F.interpolate(p, size=x.shape[-2:], mode="bilinear", align_corners=False) + self.detail(x)
        return self.out(self.fuse(p))


class CTResNet(tv_resnet.ResNet):
    """torchvision's ResNet, unchanged by name and weights, with an optional lesion head.

    ``model(x)`` returns the class logits (what Grad-CAM, ONNX export, torch.fx and the efficiency
    engine see); ``model.forward_both(x)`` returns ``(logits, lesion_logits)`` from one pass. Training
    goes through ``model(x)`` (a DDP wrapper must see the call), so inside :func:`lesion_outputs` the
    plain call returns both too. Without a head the state dict is exactly torchvision's, so checkpoints
    written before the head existed load as they were.
    """

    emit_lesion: bool = False

    def __init__(self, block: type, layers: list[int], num_classes: int = 2) -> None:
        super().__init__(block, layers, num_classes=num_classes)
        self.lesion_head: LesionHead | None = None

    def add_lesion_head(self, width: int) -> "CTResNet":
        """Give the net a lesion head reading its current input, stem and stages (build it after the stem is final)."""
        stages = [getattr(self, f"layer{i}")[-1] for i in range(1, 5)]
        widths = [self.conv1.in_channels, self.conv1.out_channels] + [_block_out(b) for b in stages]
        self.lesion_head = LesionHead(widths, int(width))
        return self

    def _features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        stem = self.relu(self.bn1(self.conv1(x)))
        c1 = self.layer1(self.maxpool(stem))
        c2 = self.layer2(c1)
        c3 = self.layer3(c2)
        c4 = self.layer4(c3)
        return self.fc(torch.flatten(self.avgpool(c4), 1)), [stem, c1, c2, c3, c4]

    def forward(self, x: torch.Tensor):  # type: ignore[override]
        if self.emit_lesion:
            return self.forward_both(x)
        return self._features(x)[0]

    def forward_both(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(class logits, lesion logits (N, 1, H, W)) from one pass."""
        if self.lesion_head is None:
            raise ValueError("this network has no lesion head")
        logits, features = self._features(x)
        return logits, self.lesion_head([x, *features])


@contextmanager
def lesion_outputs(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block, ``model(x)`` (or its DDP wrapper's) returns ``(logits, lesion_logits)``.

    For training processes only: the flag lives on the shared module, so the app's inference code calls
    ``forward_both`` instead and never toggles it.
    """
    inner = getattr(model, "module", model)
    old = inner.emit_lesion
    inner.emit_lesion = True
    try:
        yield model
    finally:
        inner.emit_lesion = old


class LesionOutputs(nn.Module):
    """``forward`` = the wrapped net's ``forward_both``: what tracing tools (torch.fx, ONNX export, op counters)
    must see to include the lesion head."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.forward_both(x)


def _block_out(block: nn.Module) -> int:
    """Output channels of a torchvision Bottleneck/BasicBlock (its last BN's width)."""
    bn = block.bn3 if hasattr(block, "bn3") else block.bn2
    return int(bn.num_features)


def has_lesion_head(model: nn.Module) -> bool:
    """Whether ``model`` (or the net a DDP wrapper holds) predicts a lesion map."""
    inner = getattr(model, "module", model)
    return getattr(inner, "lesion_head", None) is not None
