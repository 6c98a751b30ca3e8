"""Stored pixel values -> HU slices: each frame rescaled with its own RescaleSlope/RescaleIntercept (they
can change within a series), stacked in slice order.

Values below -1024 HU (the region outside the scanner's circular field of view, padded with -2048 or
-3024 by many scanners) are set to -1024 HU (air), so downstream windows, lung masks and statistics see
air there, as a radiologist's viewer shows it."""

from __future__ import annotations

from collections import Counter
from typing import Sequence

import numpy as np
from pydicom.dataset import Dataset

from ..errors import CorruptImageError, NotCTError
from .frames import _Frame
from .guards import _as_corrupt
from .order import _Order


#: Lowest HU kept: air. Lower values are field-of-view padding, not tissue.
HU_FLOOR = -1024.0


def _decode(ds: Dataset) -> np.ndarray:
    """All frames of one data set as (frames, rows, cols), raw stored values."""
    with _as_corrupt("The image data in the DICOM file are damaged and cannot be decoded."):
        arr = np.asarray(ds.pixel_array)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise NotCTError("This DICOM image has colour or extra dimensions; it is not an original CT slice.")
    return arr


def _to_hu(raw: np.ndarray, frame: _Frame) -> np.ndarray:
    hu = raw.astype(np.float32, copy=True)
    if frame.slope != 1.0:
        hu *= np.float32(frame.slope)
    if frame.intercept != 0.0:
        hu += np.float32(frame.intercept)
    np.maximum(hu, np.float32(HU_FLOOR), out=hu)
    return hu


def _assemble(frames: Sequence[_Frame], order: _Order) -> np.ndarray:
    """Decode each data set once, rescale each frame with its own slope/intercept, stack in order.

    With whole-number slopes and intercepts (as CT stores them) the HU are whole numbers and the volume is
    int16, half the memory of float32 (``Volume.slice`` reads float32); a value beyond int16 turns it float32.
    """
    rows, cols = frames[0].rows, frames[0].cols
    whole = all(float(f.slope).is_integer() and float(f.intercept).is_integer() for f in frames)
    out = np.empty((len(frames), rows, cols), dtype=np.int16 if whole else np.float32)
    remaining = Counter(id(f.ds) for f in frames)
    decoded: dict[int, np.ndarray] = {}
    for k, i in enumerate(order.indices):
        frame = frames[i]
        key = id(frame.ds)
        if key not in decoded:
            decoded[key] = _decode(frame.ds)
        raw = decoded[key]
        index = frame.frame or 0
        if raw.shape[1:] != (rows, cols) or index >= raw.shape[0]:
            raise CorruptImageError("The image data do not match the size stated in the DICOM header.")
        hu = _to_hu(raw[index], frame)
        if out.dtype == np.int16 and not -32768 <= hu.max(initial=0) <= 32767:
            out = out.astype(np.float32)
        out[k] = hu
        remaining[key] -= 1
        if remaining[key] == 0:  # free decoded pixels as soon as no later slice needs them
            del decoded[key]
    return out
