"""The DICOM privacy allow-list: which header values may reach ``Volume.meta`` (and so the screen,
logs, reports and exports), and how they are cleaned.

A policy, kept apart from the reader so it can be read and reviewed on its own: DICOM headers carry
names, IDs, dates, times, institutions, physicians, UIDs, descriptions and free text; none of them is
ever copied. Only the technical attributes below are, as plain numbers or short cleaned codes.
"""

from __future__ import annotations

import re
from typing import Any, Callable

import numpy as np

#: The only DICOM attributes copied into ``Volume.meta`` (technical, non-identifying).
DICOM_META_TAGS: tuple[str, ...] = (
    "Modality",
    "Manufacturer",
    "ManufacturerModelName",
    "SliceThickness",
    "PixelSpacing",
    "KVP",
    "ConvolutionKernel",
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "PixelRepresentation",
    "PhotometricInterpretation",
    "RescaleSlope",
    "RescaleIntercept",
    "PatientPosition",
    "ImageOrientationPatient",
    "BurnedInAnnotation",  # YES/NO flag only: the app warns that pixels may carry identifying text
)
#: Keys the reader derives itself; together with DICOM_META_TAGS the complete allow-list of ``meta``.
DERIVED_META_KEYS: tuple[str, ...] = (
    "TransferSyntax",
    "n_slices",
    "series_count",
    "slice_order",
    "skipped_files",
    "number_of_frames",
    "series_choices",  # the upload's series by technical fields only (``dicom.choice.SeriesOption``)
    "series_chosen",
    "series_why",
)
DICOM_META_KEYS = frozenset(DICOM_META_TAGS + DERIVED_META_KEYS)

_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9 ._\-+/()\[\],]")


def safe_text(value: object, limit: int = 64) -> str:
    """A header string reduced to plain characters and cut short (no control codes, no long free text)."""
    return _UNSAFE_CHARS.sub("", str(value)).strip()[:limit]


def safe_value(value: Any) -> Any:
    """Plain, short, technical values only (numbers, short codes); None when nothing safe is left."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        items = [safe_value(v) for v in value]
        return tuple(v for v in items if v is not None) or None
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    try:  # DSfloat / IS subclasses of float/int are caught above; other strings here
        text = safe_text(value)
    except Exception:
        return None
    return text or None


def safe_meta(read: Callable[[str], Any], transfer_syntax: str | None = None) -> dict[str, Any]:
    """``meta`` from the allow-listed attributes only; ``read(keyword)`` fetches one (may raise when absent).

    ``read`` is never asked for anything outside :data:`DICOM_META_TAGS`.
    """
    meta: dict[str, Any] = {}
    for keyword in DICOM_META_TAGS:
        try:
            value = safe_value(read(keyword))
        except Exception:
            continue
        if value is not None:
            meta[keyword] = value
    if transfer_syntax:
        meta["TransferSyntax"] = transfer_syntax
    return meta
