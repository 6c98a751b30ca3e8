"""The one in-memory representation of a scan used everywhere downstream."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping

import numpy as np


@dataclass(frozen=True, eq=False)
class Volume:
    """A scan as a stack of axial slices.

    ``array`` has shape (slices, rows, cols) and is float32, or int16 for whole-number HU (DICOM series
    come that way; ``compact()`` makes it so for others a session holds): half the memory. Read voxels
    through ``slice(i)``, which is float32 either way. Slice 0 is the most superior slice
    (head end), the order radiologists scroll and the order of COVID-CT-MD's slice labels.
    Rows run anterior to posterior and columns patient-right to patient-left (radiological view).

    ``is_hu`` is True when values are Hounsfield units (CT DICOM, CT NIfTI); 8-bit PNG/JPG hold
    display intensities, not HU, and HU-only features (involvement %, window presets) are skipped.

    ``spacing`` is (slice, row, col) in millimetres when the file says so, else None.
    ``meta`` holds only allow-listed, non-identifying technical fields.
    """

    array: np.ndarray
    is_hu: bool
    spacing: tuple[float, float, float] | None = None
    source_format: str = "unknown"
    meta: Mapping[str, Any] = field(default_factory=dict)
    slice_positions: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise ValueError(f"Volume array must be 3-D (slices, rows, cols), got {self.array.shape}")
        if self.array.dtype != np.float32 and not (self.array.dtype == np.int16 and self.is_hu):
            object.__setattr__(self, "array", self.array.astype(np.float32))

    @property
    def n_slices(self) -> int:
        return int(self.array.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.array.shape)  # type: ignore[return-value]

    def slice(self, index: int) -> np.ndarray:
        """One slice, float32 (a view of a float32 volume, a converted copy of a compact one)."""
        return self.array[index].astype(np.float32, copy=False)

    def compact(self) -> Volume:
        """The same scan with its HU kept as int16 when every value is a whole number in int16's range (CT
        HU are: stored integers times a whole slope plus a whole intercept); otherwise this volume."""
        if not self.is_hu or self.array.dtype != np.float32:
            return self
        small = np.empty(self.array.shape, np.int16)
        for i, sl in enumerate(self.array):  # slice by slice: no second float volume on the way
            if sl.min(initial=0) < -32768 or sl.max(initial=0) > 32767:
                return self
            with np.errstate(invalid="ignore"):  # NaN casts to nonsense, which the comparison then rejects
                small[i] = sl
            if not np.array_equal(small[i], sl):
                return self
        return replace(self, array=small)

    def describe(self) -> str:
        """One line for captions: size, spacing and what the values mean."""
        s, h, w = self.shape
        unit = "HU" if self.is_hu else "8-bit intensity (not HU)"
        sp = (
            f", {self.spacing[1]:.2f}x{self.spacing[2]:.2f} mm pixels, {self.spacing[0]:.2f} mm slices"
            if self.spacing
            else ""
        )
        return f"{s} slice{'s' if s != 1 else ''} of {h}x{w}{sp}; values in {unit}"
