"""Stored pixel values -> HU slices: each frame rescaled with its own RescaleSlope/RescaleIntercept (they
can change within a series), stacked in slice order.

Values below -1024 HU (the region outside the scanner's circular field of view, padded with -2048 or
-3024 by many scanners) are set to -1024 HU (air), so downstream windows, lung masks and statistics see
air there, as a radiologist's viewer shows it."""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

import numpy as np
from pydicom.dataset import Dataset

from ..errors import CorruptImageError, NotCTError
from .frames import _Frame
from .guards import _as_corrupt
from .lossless import decode_lossless
from .order import _Order

#: Lowest HU kept: air. Lower values are field-of-view padding, not tissue.
HU_FLOOR = -1024.0


def _decode(ds: Dataset) -> np.ndarray:
    """All frames of one data set as (frames, rows, cols), raw stored values (lossless JPEG by the fast
    decoder, ``.lossless``; everything else, and whatever it declines, by pydicom)."""
    arr = decode_lossless(ds)
    if arr is not None:
        return arr
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


def _stack_frame(out: np.ndarray, k: int, raw: np.ndarray, frame: _Frame) -> np.ndarray:
    """Put ``frame``'s HU at ``out[k]``; returns ``out``, turned float32 when a value leaves int16."""
    index = frame.frame or 0
    if raw.shape[1:] != out.shape[1:] or index >= raw.shape[0]:
        raise CorruptImageError("The image data do not match the size stated in the DICOM header.")
    hu = _to_hu(raw[index], frame)
    if out.dtype == np.int16 and not -32768 <= hu.max(initial=0) <= 32767:
        out = out.astype(np.float32)
    out[k] = hu
    return out


def _assemble(frames: Sequence[_Frame], order: _Order) -> np.ndarray:
    """Decode each data set once, rescale each frame with its own slope/intercept, stack in order.

    With whole-number slopes and intercepts (as CT stores them) the HU are whole numbers and the volume is
    int16, half the memory of float32 (``Volume.slice`` reads float32); a value beyond int16 turns it float32.
    Data sets decode in threads, in the order their slices are stacked: decoders that release the GIL
    (``.lossless``) use every core, and each data set's pixels are dropped once its last frame is stacked.
    """
    rows, cols = frames[0].rows, frames[0].cols
    whole = all(float(f.slope).is_integer() and float(f.intercept).is_integer() for f in frames)
    out = np.empty((len(frames), rows, cols), dtype=np.int16 if whole else np.float32)
    remaining = Counter(id(f.ds) for f in frames)
    first_use = list({id(frames[i].ds): frames[i].ds for i in order.indices}.values())
    decoded: dict[int, np.ndarray] = {}
    with ThreadPoolExecutor(max(1, min(len(first_use), os.cpu_count() or 1, 4))) as pool:
        arrays = pool.map(_decode, first_use)
        for k, i in enumerate(order.indices):
            key = id(frames[i].ds)
            if key not in decoded:
                decoded[key] = next(arrays)
            out = _stack_frame(out, k, decoded[key], frames[i])
            remaining[key] -= 1
            if remaining[key] == 0:
                del decoded[key]
    return out
