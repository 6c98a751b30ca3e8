"""Anatomical slice order (superior first) and the volume's spacing: file names and even InstanceNumbers
lie; ImagePositionPatient projected on the slice normal does not."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import MixedSeriesError
from .frames import _Frame, _float

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Order:
    indices: list[int]
    positions: tuple[float, ...] | None
    method: str


def _order_frames(frames: Sequence[_Frame]) -> _Order:
    """Superior first: position on the slice normal, then SliceLocation, InstanceNumber, input order."""
    n = len(frames)
    if all(f.position is not None and f.orientation is not None for f in frames):
        iop = frames[0].orientation
        assert iop is not None
        if any(not np.allclose(f.orientation, iop, atol=1e-3) for f in frames):  # type: ignore[arg-type]
            raise MixedSeriesError(
                "The slices have different orientations (for example axial and coronal); upload one series."
            )
        normal = np.cross(iop[:3], iop[3:])
        norm = float(np.linalg.norm(normal))
        if norm > 1e-6:
            normal = normal / norm
            # Sign the normal so "larger" means superior (LPS: +z is the head).
            axis = 2 if abs(normal[2]) > 1e-6 else int(np.argmax(np.abs(normal)))
            normal = normal * (1.0 if normal[axis] > 0 else -1.0)
            pos = [float(np.dot(f.position, normal)) for f in frames]  # type: ignore[arg-type]
            return _sorted_desc(frames, pos, "position")
    if all(f.slice_location is not None for f in frames):
        locations = [float(f.slice_location) for f in frames]  # type: ignore[arg-type]
        return _sorted_desc(frames, locations, "slice_location")
    if all(f.instance is not None for f in frames) and n > 1:
        idx = sorted(
            range(n), key=lambda i: (frames[i].instance, frames[i].input_index, frames[i].frame or 0)
        )
        return _Order(idx, None, "instance_number")
    return _Order(list(range(n)), None, "file_order")


def _sorted_desc(frames: Sequence[_Frame], pos: list[float], method: str) -> _Order:
    rounded = [round(p, 4) for p in pos]
    idx = sorted(
        range(len(frames)),
        key=lambda i: (-rounded[i], frames[i].instance if frames[i].instance is not None else 0,
                       frames[i].input_index, frames[i].frame or 0),
    )
    repeated = len(rounded) - len(set(rounded))
    if repeated:
        raise MixedSeriesError(
            f"{repeated} of the {len(rounded)} slices lie at a position another "
            "slice already has: the upload repeats slices (a copied file, or two acquisitions of one series). "
            "Upload one acquisition, each slice once."
        )
    return _Order(idx, tuple(pos[i] for i in idx), method)


def _slice_spacing(order: _Order, frames: Sequence[_Frame]) -> float | None:
    if order.positions is not None and len(order.positions) > 1:
        diffs = np.abs(np.diff(np.asarray(order.positions)))
        diffs = diffs[diffs > 1e-4]
        if diffs.size:
            return float(np.median(diffs))
    first = frames[order.indices[0]]
    if first.thickness:
        return first.thickness
    between = _float(first.ds.get("SpacingBetweenSlices"))
    return between


def _spacing(order: _Order, frames: Sequence[_Frame]) -> tuple[float, float, float] | None:
    first = frames[order.indices[0]]
    if first.pixel_spacing is None:
        return None
    dz = _slice_spacing(order, frames)
    if dz is None:
        logger.info("DICOM gives no slice spacing; assuming 1 mm")
        dz = 1.0
    return (float(dz), float(first.pixel_spacing[0]), float(first.pixel_spacing[1]))
