"""Networks: 1-channel ResNet builders, Ghost variants, widths-as-data, and the one registry.

Use :func:`create` (key + kwargs) or :func:`build` (a checkpoint card); see docs/models.md.
"""

from __future__ import annotations

from ctmodels.nets.ghost import DESIGNS, PLACEMENTS, FusedGhostModule, GhostModule, ghost_resnet18, ghost_resnet50
from ctmodels.nets.pretrained import ImageNetLoadReport, adapt_input_conv, load_imagenet_resnet
from ctmodels.nets.registry import (
    GHOST_DEFAULTS,
    GHOST_KD_DEFAULTS,
    MODEL_INFO,
    MODEL_KEYS,
    ModelInfo,
    ModelSpec,
    UnknownModelError,
    apply_widths,
    build,
    compare_defaults,
    create,
    extract_widths,
    info,
    register,
    resolve_arch,
    unregister,
)
from ctmodels.nets.resnet import resnet18, resnet50

__all__ = [
    "GHOST_DEFAULTS",
    "GHOST_KD_DEFAULTS",
    "MODEL_INFO",
    "MODEL_KEYS",
    "PLACEMENTS",
    "DESIGNS",
    "FusedGhostModule",
    "GhostModule",
    "ImageNetLoadReport",
    "ModelInfo",
    "ModelSpec",
    "UnknownModelError",
    "adapt_input_conv",
    "apply_widths",
    "build",
    "compare_defaults",
    "create",
    "extract_widths",
    "ghost_resnet18",
    "ghost_resnet50",
    "info",
    "register",
    "unregister",
    "load_imagenet_resnet",
    "resnet18",
    "resnet50",
    "resolve_arch",
]
