"""The one preprocessing path from a scan slice to a network input, shared by training and inference.

A checkpoint card records these settings, so the app feeds a model exactly what it was trained
on: window (HU → [0, 1]), optional lung masking (pixels outside the lung mask set to the value of
aerated lung, so the model cannot use the spine, the table or the body outline as a
shortcut, and the lung border is not an edge worth looking at: its evidence is the lung), optional
lung-ROI crop (paper 001: the lungs' bounding box, stretched to the square input), optional CLAHE
(paper 001), resize, then normalisation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from skimage import exposure

from .imaging.window import Window, apply_window


#: Bumped whenever the code below changes what a network sees (keys caches of prepared data).
PREPROCESS_VERSION = 3


@dataclass(frozen=True)
class Preprocessing:
    """Settings of the input pipeline; round-trips through a model card."""

    size: int = 64
    level: float = -600.0
    width: float = 1500.0
    roi_crop: bool = True
    roi_pad: float = 0.02
    roi_mode: str = "bilateral"  # "box": the lungs' bounding box; "bilateral": each lung's box, side by side
    lung_mask_input: bool = True
    mask_fill: float = 0.327  # [0, 1] value outside the lungs: aerated lung (-860 HU) in the lung window
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
            "preprocessing": {"roi_crop": self.roi_crop, "roi_pad": self.roi_pad, "roi_mode": self.roi_mode,
                              "clahe": self.clahe,
                              "lung_mask_input": self.lung_mask_input, "mask_fill": self.mask_fill},
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
            roi_mode=str(pre.get("roi_mode", "box")),
            lung_mask_input=bool(pre.get("lung_mask_input", False)),
            mask_fill=float(pre.get("mask_fill", 0.0)),
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


Box = tuple[int, int, int, int]  # (r0, r1, c0, c1) on the slice
Tile = tuple[Box, Box]  # (box on the slice, region of the network input it fills)


def _split_column(mask: np.ndarray) -> int | None:
    """The column between the two lungs: the emptiest column in the middle 40 % of the lungs' extent."""
    cols = mask.sum(axis=0)
    nz = np.nonzero(cols)[0]
    if nz.size == 0:
        return None
    c0, c1 = nz[0], nz[-1] + 1
    lo, hi = c0 + int(0.3 * (c1 - c0)), c0 + int(0.7 * (c1 - c0))
    if hi <= lo:
        return None
    return int(lo + np.argmin(cols[lo:hi]))


def lung_tiles(mask: np.ndarray | None, pre: Preprocessing) -> list[Tile] | None:
    """Where each part of the network input comes from; None means the whole slice."""
    if not pre.roi_crop:
        return None
    s = pre.size
    if pre.roi_mode == "bilateral" and mask is not None and mask.sum() >= MIN_ROI_PIXELS:
        split = _split_column(mask)
        if split is not None:
            left, right = mask.copy(), mask.copy()
            left[:, split:] = False
            right[:, :split] = False
            bl, br = lung_box(left, pre.roi_pad), lung_box(right, pre.roi_pad)
            if bl is not None and br is not None:
                half = s // 2
                return [(bl, (0, s, 0, half)), (br, (0, s, half, s))]
    box = lung_box(mask, pre.roi_pad)
    return None if box is None else [(box, (0, s, 0, s))]


def _resize(img: np.ndarray, h: int, w: int) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(img))[None, None]
    return F.interpolate(t, size=(h, w), mode="bilinear", antialias=True, align_corners=False)[0, 0].numpy()


def prepare_slice(
    values: np.ndarray, is_hu: bool, pre: Preprocessing, lung_mask: np.ndarray | None = None
) -> tuple[np.ndarray, list[Tile] | None]:
    """One slice → float32 (size, size) in [0, 1], and the tiles it was cut from (None: whole slice)."""
    img = to_unit(values, is_hu, pre)
    if pre.lung_mask_input and lung_mask is not None and lung_mask.any():
        img = np.where(lung_mask, img, np.float32(pre.mask_fill))
    tiles = lung_tiles(lung_mask, pre)
    if pre.clahe:
        img = exposure.equalize_adapthist(img, clip_limit=0.01).astype(np.float32)
    if tiles is None:
        return np.clip(_resize(img, pre.size, pre.size), 0, 1), None
    out = np.empty((pre.size, pre.size), np.float32)
    for box, (r0, r1, c0, c1) in tiles:
        out[r0:r1, c0:c1] = _resize(crop(img, box, fill=pre.mask_fill if pre.lung_mask_input else 0.0), r1 - r0, c1 - c0)
    return np.clip(out, 0, 1), tiles


def normalize(batch: torch.Tensor, pre: Preprocessing) -> torch.Tensor:
    """[0, 1] inputs (N, 1, H, W) → the network's input scale."""
    return (batch - pre.mean) / pre.std
