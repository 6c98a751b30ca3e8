"""Refusals from the header alone, before any pixel is decoded: no image, not CT (saying what it is),
too large or too small, an encoding no installed decoder reads, image data cut short."""

from __future__ import annotations

import re

import pydicom
import pydicom.encaps
import pydicom.pixels
import pydicom.pixels.utils
from pydicom.dataset import Dataset
from pydicom.uid import UID

from ..dicom_privacy import safe_text
from ..errors import (
    CorruptImageError,
    ImageTooLargeError,
    NoPixelDataError,
    NotCTError,
    UnsupportedDimensionsError,
    UnsupportedEncodingError,
)
from ..limits import MAX_SLICE_PIXELS, MAX_SLICES, MAX_VOXELS, MIN_SLICE_SIDE
from .frames import _number_of_frames
from .guards import _as_corrupt


CT_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
        "1.2.840.10008.5.1.4.1.1.2.1",  # Enhanced CT Image Storage
        "1.2.840.10008.5.1.4.1.1.2.2",  # Legacy Converted Enhanced CT Image Storage
    }
)
SECONDARY_CAPTURE_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.7",
        "1.2.840.10008.5.1.4.1.1.7.1",
        "1.2.840.10008.5.1.4.1.1.7.2",
        "1.2.840.10008.5.1.4.1.1.7.3",
        "1.2.840.10008.5.1.4.1.1.7.4",
    }
)
DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"

_MODALITY_NAMES = {
    "MR": "an MR (magnetic resonance) image",
    "US": "an ultrasound image",
    "CR": "a plain X-ray (computed radiography)",
    "DX": "a plain X-ray (digital radiography)",
    "DR": "a plain X-ray (digital radiography)",
    "RF": "a fluoroscopy image",
    "XA": "an X-ray angiography image",
    "MG": "a mammogram",
    "PT": "a PET image",
    "NM": "a nuclear medicine image",
    "OT": "an 'other' (OT) image, typically a screenshot or scanned picture",
    "SC": "a secondary capture (screenshot or scanned picture)",
    "SR": "a structured report",
    "PR": "a presentation state",
    "SEG": "a segmentation object",
    "RTSTRUCT": "a radiotherapy structure set",
    "RTDOSE": "a radiotherapy dose map",
    "RTPLAN": "a radiotherapy plan",
    "KO": "a key-object selection note",
    "DOC": "a document",
    "XC": "an external camera photograph",
    "ES": "an endoscopy image",
    "OP": "an ophthalmic photograph",
    "IO": "an intra-oral X-ray",
    "PX": "a panoramic dental X-ray",
}


def _sop_class(ds: Dataset) -> str:
    value = ds.get("SOPClassUID") or getattr(ds, "file_meta", Dataset()).get("MediaStorageSOPClassUID")
    return str(value or "")


def _has_pixels(ds: Dataset) -> bool:
    for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
        if keyword in ds and ds[keyword].value is not None and len(ds[keyword].value) > 0:
            return True
    return False


def check_has_pixels(ds: Dataset) -> None:
    """Reports, DICOMDIRs and presentation states hold no image."""
    if _sop_class(ds) == DICOMDIR_SOP_CLASS:
        raise NoPixelDataError(
            "This is a DICOMDIR index file, not an image. Upload the folder (or a zip) with the image files."
        )
    if not _has_pixels(ds):
        modality = _modality(ds)
        what = _MODALITY_NAMES.get(modality)
        detail = f" (it is {what})" if what and modality in {"SR", "PR", "KO", "DOC", "RTPLAN"} else ""
        raise NoPixelDataError(f"This DICOM file holds no image{detail}. Upload the CT image files.")


def _modality(ds: Dataset) -> str:
    value = str(ds.get("Modality", "") or "").strip().upper()
    return value if re.fullmatch(r"[A-Z]{2,8}", value) else ""


def check_is_ct(ds: Dataset) -> None:
    """Only CT has HU; MR, X-ray, ultrasound and screenshots are refused with what they are."""
    sop = _sop_class(ds)
    modality = _modality(ds)
    if sop in SECONDARY_CAPTURE_SOP_CLASSES:
        raise NotCTError(
            "This is a secondary capture (a screenshot or scanned picture), not an original CT scan. "
            "Upload the CT images from the scanner or PACS."
        )
    if modality and modality != "CT":
        what = _MODALITY_NAMES.get(modality, f"a {modality} image")
        raise NotCTError(f"This is {what}, not a CT scan. Only chest CT is supported.")
    if not modality and sop not in CT_SOP_CLASSES:
        raise NotCTError(
            "This DICOM file does not say it is a CT scan (no modality). Only chest CT is supported."
        )
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2") or "MONOCHROME2").strip().upper()
    if spp != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise NotCTError(
            "This is a colour image (a screenshot, a 3-D rendering or a colour-mapped picture), "
            "not an original CT slice: CT slices are greyscale."
        )
    try:
        bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)) or 16)
    except (TypeError, ValueError):
        bits = 16
    if bits < 8:
        raise NotCTError(
            f"The image stores {bits} bit{'s' if bits != 1 else ''} per pixel (a black-and-white or "
            "reduced picture); CT slices store 12 to 16 bits of Hounsfield units."
        )


def check_size(ds: Dataset) -> None:
    """Rows x Columns (x frames) against the limits, from the header, before decoding."""
    try:
        rows, cols = int(ds.Rows), int(ds.Columns)
    except (AttributeError, TypeError, ValueError) as exc:
        raise CorruptImageError("The DICOM file does not state the image size (rows and columns).") from exc
    if rows * cols > MAX_SLICE_PIXELS:
        raise ImageTooLargeError(
            f"The image is {cols} x {rows} pixels; the largest accepted slice is "
            f"{MAX_SLICE_PIXELS:,} pixels (4096 x 4096)."
        )
    if min(rows, cols) < MIN_SLICE_SIDE:
        raise UnsupportedDimensionsError(
            f"The image is only {cols} x {rows} pixels; it is too small to be a CT slice."
        )
    frames = _number_of_frames(ds)
    if frames > MAX_SLICES or frames * rows * cols > MAX_VOXELS:
        raise ImageTooLargeError(
            f"The file holds {frames} frames; that is more than the app can load at once."
        )


def check_encoding(ds: Dataset) -> None:
    """A compressed transfer syntax needs an installed decoder; say so plainly when it is missing."""
    uid = UID(str(ds.file_meta.TransferSyntaxUID))
    try:
        decoder = pydicom.pixels.get_decoder(uid)
    except NotImplementedError as exc:
        raise UnsupportedEncodingError(
            f"The image data are compressed as '{_ts_name(uid)}', which this app cannot decode. "
            "Export the series uncompressed (or as JPEG-Lossless) and try again."
        ) from exc
    if not decoder.is_available:
        raise UnsupportedEncodingError(
            f"The image data are compressed as '{_ts_name(uid)}'; no decoder for it is installed. "
            "Export the series uncompressed (or as JPEG-Lossless) and try again."
        )
    if not uid.is_compressed and "PixelData" in ds:
        expected = pydicom.pixels.utils.get_expected_length(ds, "bytes")
        if len(ds.PixelData) < expected:
            raise CorruptImageError(
                "The DICOM file is truncated: its image data stop early. Copy the file again."
            )
        if len(ds.PixelData) > expected + expected % 2:  # odd lengths are padded to even: one byte more is fine
            raise CorruptImageError(
                f"The DICOM file holds more image data than its stated size ({int(ds.Columns)} x {int(ds.Rows)}"
                f"{f' x {_number_of_frames(ds)} frames' if _number_of_frames(ds) > 1 else ''}) needs: the header "
                "is wrong, and the image read from it would be garbled. Export the series again."
            )
    if uid in _JPEG_FAMILY and "PixelData" in ds:
        _require_whole_codestreams(ds)


#: JPEG (baseline, extended, lossless) and JPEG-LS: libjpeg decodes a stream cut short without complaint and
#: fills the rest of the slice, so a truncated copy would read as a plausible, wrong image.
_JPEG_FAMILY = frozenset(pydicom.uid.JPEGTransferSyntaxes + pydicom.uid.JPEGLSTransferSyntaxes)
_END_OF_IMAGE = b"\xff\xd9"


def _require_whole_codestreams(ds: Dataset) -> None:
    """Every frame's codestream ends with the End-Of-Image marker (then at most padding). Coded data never
    contain FF D9 (JPEG stuffs a 00 after FF, JPEG-LS a byte below 80), so a cut stream lacks it."""
    with _as_corrupt("The image data in the DICOM file are damaged and cannot be decoded."):
        frames = pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=_number_of_frames(ds))
        for frame in frames:
            if not bytes(frame[-16:]).rstrip(b"\0\xff").endswith(_END_OF_IMAGE):  # padding: 00 or FF
                raise CorruptImageError("The DICOM file is truncated or damaged: its compressed image data "
                                        "end early. Copy the file again.")


def _ts_name(uid: UID) -> str:
    name = uid.name if uid.is_valid else ""
    name = name if name and name != str(uid) else "an unknown encoding"
    return safe_text(name, 120)
