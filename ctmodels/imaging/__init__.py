"""Imaging: read any scan (DICOM, NIfTI, PNG/JPEG/TIFF/BMP, zip or folder) into a ``Volume``."""

from __future__ import annotations

from .errors import (
    CorruptImageError,
    EmptyArchiveError,
    ImageReadError,
    ImageTooLargeError,
    ImplausibleScanError,
    MixedSeriesError,
    NoPixelDataError,
    NotAnImageError,
    NotCTError,
    UnsafeArchiveError,
    UnsupportedDimensionsError,
    UnsupportedEncodingError,
)
from .reader import read_any
from .volume import Volume

__all__ = [
    "read_any",
    "Volume",
    "ImageReadError",
    "NotAnImageError",
    "CorruptImageError",
    "NoPixelDataError",
    "UnsupportedEncodingError",
    "NotCTError",
    "UnsupportedDimensionsError",
    "ImageTooLargeError",
    "ImplausibleScanError",
    "EmptyArchiveError",
    "MixedSeriesError",
    "UnsafeArchiveError",
]
