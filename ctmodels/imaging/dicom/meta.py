"""The volume's ``meta``: only the allow-listed technical attributes of ``dicom_privacy``, so no name,
ID, date or free text of a DICOM header leaves the reader."""

from __future__ import annotations

from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import UID

from ..dicom_privacy import safe_meta
from .checks import _ts_name
from .frames import _lookup, _number_of_frames


def _meta(ds: Dataset) -> dict[str, Any]:
    """The allow-listed attributes (``dicom_privacy``), read where an enhanced multi-frame file keeps them."""
    frame = 0 if _number_of_frames(ds) > 1 else None
    try:
        syntax = _ts_name(UID(str(ds.file_meta.TransferSyntaxUID)))
    except Exception:
        syntax = None
    return safe_meta(lambda keyword: _lookup(ds, frame, _META_SEQ.get(keyword, ""), keyword), syntax)


_META_SEQ = {
    "SliceThickness": "PixelMeasuresSequence",
    "PixelSpacing": "PixelMeasuresSequence",
    "RescaleSlope": "PixelValueTransformationSequence",
    "RescaleIntercept": "PixelValueTransformationSequence",
    "ImageOrientationPatient": "PlaneOrientationSequence",
}
