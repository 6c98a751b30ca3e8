"""Who wrote a result: the device fields every SR and SEG carries, and the disclaimer."""

from __future__ import annotations

import io
from typing import Sequence

import pydicom
from pydicom.dataset import Dataset

from .. import __version__
from ..imaging.dicom.uids import repair_uids

MANUFACTURER = "CT Severity Studio"
MODEL_NAME = "CT Severity Studio"
SOFTWARE_VERSION = __version__
DEVICE_SERIAL = "research"
DISCLAIMER = "Research software, not for diagnostic use."
#: Series numbers of the results (high, so they sort after the scanner's series in a viewer).
SR_SERIES_NUMBER = 9901
SEG_SERIES_NUMBER = 9902


def as_bytes(ds: Dataset) -> bytes:
    """A written DICOM file (Part 10, preamble and meta) as bytes."""
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


#: Patient and study attributes a result copies from its sources to be filed under the study (DICOM type 2:
#: present, possibly empty; anonymised exports often drop some, and they come back empty).
FILING_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                   "ReferringPhysicianName", "StudyID", "AccessionNumber")
#: What else of a source a result needs: identity of the image and its geometry. An allow-list, like the
#: reader's: the writer sees nothing else of the headers (no institution, station, operator or descriptions).
_REFERENCE_KEYWORDS = (
    "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "Modality",
    "SeriesNumber", "InstanceNumber", "Rows", "Columns", "PixelSpacing", "ImagePositionPatient",
    "ImageOrientationPatient", "SliceThickness", "SpacingBetweenSlices", "SamplesPerPixel",
    "PhotometricInterpretation", "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation",
)


def prepared_sources(sources: Sequence[Dataset], n_slices: int) -> list[Dataset]:
    """Copies of the source headers holding only the allow-listed attributes, the filing ones always present.
    They must describe the assessed volume slice for slice (``series_source_images``)."""
    if len(sources) != n_slices:
        raise ValueError(f"{len(sources)} source headers for a volume of {n_slices} slices: not the assessed series")
    out = []
    for ds in sources:
        kept = Dataset()
        for keyword in _REFERENCE_KEYWORDS + FILING_KEYWORDS:
            if keyword in ds:
                setattr(kept, keyword, ds[keyword].value)
            elif keyword in FILING_KEYWORDS:
                setattr(kept, keyword, "")
        if "FrameOfReferenceUID" not in kept:  # a phantom or a stripped export: one frame per series
            kept.FrameOfReferenceUID = pydicom.uid.generate_uid(prefix=None, entropy_srcs=[str(ds.SeriesInstanceUID)])
        out.append(repair_uids(kept))  # as a PACS holds such a series (``ctmodels.pacs.loading``)
    return out
