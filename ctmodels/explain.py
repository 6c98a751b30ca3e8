"""Grad-CAM family explanations (pytorch-grad-cam), mapped back onto the full slice.

Target layer: the last residual block of ``layer4`` for every net we build (ResNet50, ResNet18,
Ghost and pruned variants keep torchvision's block layout), or ``layer3``'s last block when the
input is so small that ``layer4`` would be under 4×4 (64-px demo models: 2×2), because a 2×2 map
cannot say *where* in the lung the evidence is. Hooks are released after every call (``with``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from .inference import LoadedModel

METHODS = {
    "GradCAM": GradCAM,
    "GradCAM++": GradCAMPlusPlus,
    "HiResCAM": HiResCAM,
    "EigenCAM": EigenCAM,
    "LayerCAM": LayerCAM,
}
DEFAULT_METHOD = "GradCAM"
MIN_MAP = 4


def target_layer(model: torch.nn.Module, input_size: int) -> torch.nn.Module:
    """The block whose activations the CAM is computed on (see module docstring)."""
    stride4 = 32  # layer4 output stride of torchvision ResNets
    if input_size // stride4 < MIN_MAP and hasattr(model, "layer3"):
        return model.layer3[-1]
    return model.layer4[-1]


def target_layer_name(model: torch.nn.Module, input_size: int) -> str:
    layer = target_layer(model, input_size)
    return next(n for n, m in model.named_modules() if m is layer)


def cam_batch(lm: LoadedModel, x: torch.Tensor, classes: list[int], method: str = DEFAULT_METHOD) -> np.ndarray:
    """CAMs (n, S, S) in [0, 1] for a prepared batch, one target class per image."""
    if method not in METHODS:
        raise ValueError(f"unknown CAM method {method!r}; choose from {', '.join(METHODS)}")
    layer = target_layer(lm.model, x.shape[-1])
    with METHODS[method](model=lm.model, target_layers=[layer]) as cam:
        maps = cam(input_tensor=x, targets=[ClassifierOutputTarget(c) for c in classes])
    return np.nan_to_num(np.asarray(maps, dtype=np.float32))


def to_slice(cam: np.ndarray, box: tuple[int, int, int, int] | None, shape: tuple[int, int]) -> np.ndarray:
    """Place a network-sized CAM back onto the slice (inside the lung ROI box, zero elsewhere)."""
    h, w = shape
    if box is None:
        t = torch.from_numpy(cam)[None, None]
        return F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)[0, 0].numpy()
    r0, r1, c0, c1 = box
    t = torch.from_numpy(cam)[None, None]
    resized = F.interpolate(t, size=(r1 - r0, c1 - c0), mode="bilinear", align_corners=False)[0, 0].numpy()
    out = np.zeros((h, w), np.float32)
    sr0, sr1, sc0, sc1 = max(r0, 0), min(r1, h), max(c0, 0), min(c1, w)
    out[sr0:sr1, sc0:sc1] = resized[sr0 - r0 : sr1 - r0, sc0 - c0 : sc1 - c0]
    return out


def mass_inside(cam: np.ndarray, mask: np.ndarray) -> float | None:
    """Share of the CAM's total mass that falls inside ``mask`` (e.g. the lungs)."""
    total = float(cam.sum())
    return None if total <= 0 else float(cam[mask.astype(bool)].sum() / total)


@dataclass(frozen=True)
class Agreement:
    pearson: float | None
    top20_iou: float | None


def agreement(a: np.ndarray, b: np.ndarray, within: np.ndarray | None = None) -> Agreement:
    """How similarly two models look: Pearson correlation and IoU of their top-20 % pixels."""
    m = np.ones(a.shape, bool) if within is None else within.astype(bool)
    va, vb = a[m].ravel(), b[m].ravel()
    if va.size < 4 or va.std() == 0 or vb.std() == 0:
        return Agreement(None, None)
    r = float(np.corrcoef(va, vb)[0, 1])
    ta, tb = va >= np.quantile(va, 0.8), vb >= np.quantile(vb, 0.8)
    union = (ta | tb).sum()
    return Agreement(r, float((ta & tb).sum() / union) if union else None)


def heatmap_overlay(gray_rgb: np.ndarray, cam: np.ndarray, alpha: float = 0.45, floor: float = 0.15) -> np.ndarray:
    """Jet-coloured CAM blended over an RGB slice; weak activations (< floor) are left clear."""
    from matplotlib import colormaps

    colors = colormaps["jet"](np.clip(cam, 0, 1))[..., :3] * 255.0
    a = (alpha * np.clip((cam - floor) / (1 - floor), 0, 1))[..., None]
    out = gray_rgb.astype(np.float32) * (1 - a) + colors * a
    return np.clip(out, 0, 255).astype(np.uint8)
