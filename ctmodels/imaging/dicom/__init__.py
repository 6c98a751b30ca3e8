"""DICOM CT readers: one file (single or multi-frame) and a series (many files of one SeriesInstanceUID).

Why these readers are careful, and where each care lives:
- HU need RescaleSlope/RescaleIntercept applied *per slice*: they can change within a series (``pixels``).
- Slice order must be anatomical (superior first), never the file-name order: file names and even
  InstanceNumbers lie; ImagePositionPatient projected on the slice normal does not (``order``).
- DICOM headers carry names, IDs, dates and free text. ``meta`` is built from the allow-list of
  technical fields in ``dicom_privacy`` (``meta``), and no dataset or tag value outside it is ever
  logged (``guards``).
- Sizes are checked from the header before the pixel data are decoded (``checks``).

Parts, leaves first: ``guards``, ``frames`` (per-slice header records), ``parse`` (bytes -> Dataset),
``checks``, ``order``, ``pixels``, ``meta``, ``series`` (the readers).
"""

from __future__ import annotations

from .parse import has_dicom_preamble, is_dicom
from .series import check_series_headers, read_dicom, read_dicom_series, series_source_images

__all__ = ["check_series_headers", "has_dicom_preamble", "is_dicom", "read_dicom", "read_dicom_series",
           "series_source_images"]
