"""Grad-CAM family explanations (pytorch-grad-cam), mapped back onto the full slice.

Target layer: the last residual block of the deepest stage whose feature map is at least 14×14
(every net we build keeps torchvision's layer1–layer4 layout, strides 4/8/16/32): ``layer3`` at
224 px, ``layer1`` for the 64-px demo models. A CAM is only as sharp as its map: ``layer4`` would
be 7×7 at 224 px and 2×2 at 64 px, too coarse to say *where* in a lung the evidence is (measured on
severe phantoms, the share of CAM mass inside the lungs rises from 0.42 at 2×2 to 0.68 at 8×8 and
0.77 at 16×16 for the demo baseline). Hooks are released after every call (``with``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from .inference import LoadedModel
from .preprocess import FLIPS, network_logits

METHODS = {
    "GradCAM": GradCAM,
    "GradCAM++": GradCAMPlusPlus,
    "HiResCAM": HiResCAM,
    "EigenCAM": EigenCAM,
    "LayerCAM": LayerCAM,
}
DEFAULT_METHOD = "GradCAM"
MIN_MAP = 14
STAGE_STRIDES = (("layer4", 32), ("layer3", 16), ("layer2", 8), ("layer1", 4))


def target_layer(model: torch.nn.Module, input_size: int) -> torch.nn.Module:
    """The block whose activations the CAM is computed on (see module docstring)."""
    for name, stride in STAGE_STRIDES:
        if input_size // stride >= MIN_MAP and hasattr(model, name):
            return getattr(model, name)[-1]
    return model.layer1[-1]


def target_layer_name(model: torch.nn.Module, input_size: int) -> str:
    layer = target_layer(model, input_size)
    return next(n for n, m in model.named_modules() if m is layer)


def cam_batch(
    lm: LoadedModel, x: torch.Tensor, classes: list[int] | None, method: str = DEFAULT_METHOD
) -> tuple[np.ndarray, torch.Tensor]:
    """CAMs (n, S, S) in [0, 1] and the logits they explain (one computation serves verdict and map).

    ``classes``: the class each map explains; None explains each image's predicted (arg-max) class.
    A model that scores the mean over four flips (``Preprocessing.flip_average``) is explained the same
    way: the mean of the four flips' CAMs, each turned back, for the class of the mean logits. Besides
    explaining the verdict actually shown, this cancels evidence that sits at one image border only
    (a padding artefact, not anatomy): on real severe slices the Ghost ResNet50's CAM peak fell in the
    infection 0.23 of the time single-pass and 0.59 flip-averaged, in-sample (uniform map: 0.18; the first,
    v1, Ghost design; docs/real_ct.md for the held-out numbers of both designs).
    The input carries the gradient, so models with frozen weights still give gradient-based CAMs.
    """
    if method not in METHODS:
        raise ValueError(f"unknown CAM method {method!r}; choose from {', '.join(METHODS)}")
    views = FLIPS if lm.pre.flip_average else FLIPS[:1]
    if classes is None and len(views) > 1:
        with torch.no_grad():
            classes = network_logits(lm.model, x, lm.pre).argmax(1).tolist()
    layer = target_layer(lm.model, x.shape[-1])
    targets = None if classes is None else [ClassifierOutputTarget(c) for c in classes]
    maps, logits = [], []
    with METHODS[method](model=lm.model, target_layers=[layer]) as cam:
        for dims in views:
            view = x.flip(dims) if dims else x
            m = np.nan_to_num(np.asarray(cam(input_tensor=view.detach().requires_grad_(True), targets=targets),
                                         dtype=np.float32))
            maps.append(np.flip(m, dims).copy() if dims else m)
            logits.append(cam.outputs.detach().float())
    mean = np.mean(maps, axis=0)
    peak = mean.reshape(len(mean), -1).max(axis=1)
    return mean / np.where(peak > 0, peak, 1.0)[:, None, None], torch.stack(logits).mean(0)


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
