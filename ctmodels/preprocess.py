"""The one preprocessing path from a scan slice to a network input, shared by training and inference.

A checkpoint card records these settings, so the app feeds a model exactly what it was trained
on: window (HU → [0, 1]), optional lung masking (pixels outside the slightly dilated lung mask set
to 0, so the model cannot use the spine, the table or the body outline as a shortcut), optional
lung-ROI crop (paper 001: the lungs' bounding box, stretched to the square input), optional CLAHE
(paper 001), resize, then normalisation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi
from skimage import exposure

from .imaging.window import Window, apply_window


@dataclass(frozen=True)
class Preprocessing:
    """Settings of the input pipeline; round-trips through a model card."""

    size: int = 128
    level: float = -600.0
    width: float = 1500.0
    roi_crop: bool = True
    roi_pad: float = 0.08
    lung_mask_input: bool = False
    clahe: bool = False
    mean: float = 0.5
    std: float = 0.25

    @property
    def window(self) -> Window:
        return Window("Lung" if (self.level, self.width) == (-600.0, 1500.0) else "Model", self.level, self.width)

    def card_fields(self) -> dict[str, Any]:
        """The ModelCard fields that carry these settings."""
        return {
            "input_size": self.size,
            "window": {"level": self.level, "width": self.width},
            "normalization": {"mean": self.mean, "std": self.std},
            "preprocessing": {"roi_crop": self.roi_crop, "roi_pad": self.roi_pad, "clahe": self.clahe,
                              "lung_mask_input": self.lung_mask_input},
        }

    @staticmethod
    def from_card(card: Any) -> "Preprocessing":
        pre: Mapping[str, Any] = card.preprocessing or {}
        return Preprocessing(
            size=int(card.input_size),
            level=float(card.window.get("level", -600.0)),
            width=float(card.window.get("width", 1500.0)),
            roi_crop=bool(pre.get("roi_crop", False)),
            roi_pad=float(pre.get("roi_pad", 0.08)),
            lung_mask_input=bool(pre.get("lung_mask_input", False)),
            clahe=bool(pre.get("clahe", False)),
            mean=float(card.normalization.get("mean", 0.5)),
            std=float(card.normalization.get("std", 0.25)),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


MIN_ROI_PIXELS = 64


def lung_box(mask: np.ndarray | None, pad: float) -> tuple[int, int, int, int] | None:
    """Box (r0, r1, c0, c1) around the lungs of one slice, each side padded by ``pad``; None without lung."""
    if mask is None or mask.sum() < MIN_ROI_PIXELS:
        return None
    rows = np.nonzero(mask.any(axis=1))[0]
    cols = np.nonzero(mask.any(axis=0))[0]
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    pr, pc = pad * (r1 - r0), pad * (c1 - c0)
    return int(round(r0 - pr)), int(round(r1 + pr)), int(round(c0 - pc)), int(round(c1 + pc))


def crop(img: np.ndarray, box: tuple[int, int, int, int], fill: float = 0.0) -> np.ndarray:
    """Crop ``box`` from ``img``, padding with ``fill`` where the box leaves the image."""
    r0, r1, c0, c1 = box
    out = np.full((r1 - r0, c1 - c0), fill, dtype=img.dtype)
    sr0, sr1, sc0, sc1 = max(r0, 0), min(r1, img.shape[0]), max(c0, 0), min(c1, img.shape[1])
    if sr1 > sr0 and sc1 > sc0:
        out[sr0 - r0 : sr1 - r0, sc0 - c0 : sc1 - c0] = img[sr0:sr1, sc0:sc1]
    return out


def to_unit(values: np.ndarray, is_hu: bool, pre: Preprocessing) -> np.ndarray:
    """HU through the model's window, or 8-bit intensities / 255, to float32 in [0, 1]."""
    if is_hu:
        return apply_window(values, pre.window)
    return np.clip(np.asarray(values, dtype=np.float32) / 255.0, 0.0, 1.0)


def prepare_slice(
    values: np.ndarray, is_hu: bool, pre: Preprocessing, lung_mask: np.ndarray | None = None
) -> tuple[np.ndarray, tuple[int, int, int, int] | None]:
    """One slice → float32 (size, size) in [0, 1], and the ROI box used (None: whole image)."""
    img = to_unit(values, is_hu, pre)
    if pre.lung_mask_input and lung_mask is not None and lung_mask.any():
        keep = ndi.binary_dilation(lung_mask, iterations=2)
        img = np.where(keep, img, np.float32(0.0))
    box = lung_box(lung_mask, pre.roi_pad) if pre.roi_crop else None
    if box is not None:
        img = crop(img, box)
    if pre.clahe:
        img = exposure.equalize_adapthist(img, clip_limit=0.01).astype(np.float32)
    t = torch.from_numpy(np.ascontiguousarray(img))[None, None]
    out = F.interpolate(t, size=(pre.size, pre.size), mode="bilinear", antialias=True, align_corners=False)
    return out[0, 0].clamp_(0, 1).numpy(), box


def normalize(batch: torch.Tensor, pre: Preprocessing) -> torch.Tensor:
    """[0, 1] inputs (N, 1, H, W) → the network's input scale."""
    return (batch - pre.mean) / pre.std
