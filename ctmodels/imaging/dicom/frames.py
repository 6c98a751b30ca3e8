"""One record per 2-D slice, read from the header alone (pixels not decoded yet): an enhanced multi-frame
file keeps each frame's position, rescale and spacing in functional groups, a classic file at the top
level."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom.dataset import Dataset


@dataclass
class _Frame:
    """One 2-D slice as described by the header (pixels not decoded yet)."""

    ds: Dataset
    frame: int | None  # index inside a multi-frame object, None for single-frame
    input_index: int
    rows: int
    cols: int
    position: np.ndarray | None
    orientation: np.ndarray | None
    slice_location: float | None
    instance: int | None
    slope: float
    intercept: float
    thickness: float | None
    pixel_spacing: tuple[float, float] | None


def _float(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if np.isfinite(out) else None


def _floats(value: Any, n: int) -> np.ndarray | None:
    try:
        arr = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return arr if arr.shape == (n,) and np.all(np.isfinite(arr)) else None


def _functional(ds: Dataset, frame: int | None, seq: str, keyword: str) -> Any:
    """Look a value up in the enhanced multi-frame functional groups (per-frame, then shared)."""
    groups = []
    if frame is not None and "PerFrameFunctionalGroupsSequence" in ds:
        pf = ds.PerFrameFunctionalGroupsSequence
        if frame < len(pf):
            groups.append(pf[frame])
    if "SharedFunctionalGroupsSequence" in ds and len(ds.SharedFunctionalGroupsSequence):
        groups.append(ds.SharedFunctionalGroupsSequence[0])
    for group in groups:
        if seq in group and len(group[seq].value):
            item = group[seq].value[0]
            if keyword in item:
                return item[keyword].value
    return None


def _lookup(ds: Dataset, frame: int | None, seq: str, keyword: str) -> Any:
    value = _functional(ds, frame, seq, keyword) if frame is not None else None
    if value is None and keyword in ds:
        value = ds[keyword].value
    return value


def _number_of_frames(ds: Dataset) -> int:
    try:
        n = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        n = 1
    return max(n, 1)


def _frame_position(ds: Dataset, frame: int | None) -> np.ndarray | None:
    """Per-frame position; a top-level ImagePositionPatient only describes frame 0 of a multi-frame."""
    if frame is None:
        return _floats(ds.get("ImagePositionPatient") or [], 3)
    return _floats(_functional(ds, frame, "PlanePositionSequence", "ImagePositionPatient") or [], 3)


def _frames_of(ds: Dataset, input_index: int) -> list[_Frame]:
    rows, cols = int(ds.Rows), int(ds.Columns)
    n = _number_of_frames(ds)
    out = []
    for f in range(n):
        frame = f if n > 1 else None
        slope = _float(_lookup(ds, frame, "PixelValueTransformationSequence", "RescaleSlope"))
        intercept = _float(_lookup(ds, frame, "PixelValueTransformationSequence", "RescaleIntercept"))
        spacing = _floats(_lookup(ds, frame, "PixelMeasuresSequence", "PixelSpacing") or [], 2)
        instance = _float(ds.get("InstanceNumber"))
        out.append(
            _Frame(
                ds=ds,
                frame=frame,
                input_index=input_index,
                rows=rows,
                cols=cols,
                position=_frame_position(ds, frame),
                orientation=_floats(
                    _lookup(ds, frame, "PlaneOrientationSequence", "ImageOrientationPatient") or [], 6
                ),
                slice_location=_float(ds.get("SliceLocation")) if n == 1 else None,
                instance=int(instance) if instance is not None else None,
                slope=slope if slope not in (None, 0.0) else 1.0,
                intercept=intercept if intercept is not None else 0.0,
                thickness=_float(_lookup(ds, frame, "PixelMeasuresSequence", "SliceThickness")),
                pixel_spacing=(float(spacing[0]), float(spacing[1])) if spacing is not None else None,
            )
        )
    return out
