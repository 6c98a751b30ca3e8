"""Load a case's scan and its masks as arrays aligned with the scan."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..imaging import Volume, read_any
from .model import Case


@dataclass(frozen=True)
class CaseMasks:
    """Ground-truth masks of a case, aligned with its volume (None where the dataset has none)."""

    lung: np.ndarray | None  # bool (S, H, W)
    lesion: np.ndarray | None  # uint8 (S, H, W): 0 none, >0 lesion (1 GGO, 2 consolidation where known)


def load_case(case: Case) -> Volume:
    """Read the scan of a case (raises ``ImageReadError`` with a readable message)."""
    return read_any(case.image)


def _mask(path, shape: tuple[int, int, int]) -> np.ndarray | None:
    if path is None:
        return None
    arr = read_any(path).array
    if arr.shape != shape:
        return None
    if arr.max() > 200:  # 8-bit PNG masks store 255 for "inside"
        arr = arr / 255.0
    return np.rint(arr).astype(np.uint8)


def load_masks(case: Case, volume: Volume) -> CaseMasks:
    """Lung and lesion masks of ``case``; masks whose shape does not match the scan are dropped."""
    lung = _mask(case.lung_mask, volume.shape)
    lesion = _mask(case.lesion_mask, volume.shape)
    return CaseMasks(lung=None if lung is None else lung > 0, lesion=lesion)


def involvement_from_masks(masks: CaseMasks) -> tuple[float, np.ndarray] | None:
    """(% of lung involved, per-slice %) from ground-truth masks, or None without both masks."""
    if masks.lung is None or masks.lesion is None:
        return None
    lung = masks.lung.sum(axis=(1, 2)).astype(float)
    les = ((masks.lesion > 0) & masks.lung).sum(axis=(1, 2)).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_slice = np.where(lung > 0, 100.0 * les / lung, np.nan)
    total = lung.sum()
    return (100.0 * les.sum() / total if total else 0.0), per_slice
