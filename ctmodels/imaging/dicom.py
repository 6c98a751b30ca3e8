"""DICOM CT readers: one file (single or multi-frame) and a series (many files of one SeriesInstanceUID).

Why this module is careful:
- HU need RescaleSlope/RescaleIntercept applied *per slice*: they can change within a series.
- Slice order must be anatomical (superior first), never the file-name order: file names and even
  InstanceNumbers lie; ImagePositionPatient projected on the slice normal does not.
- DICOM headers carry names, IDs, dates and free text. ``meta`` is built from the allow-list of
  technical fields in ``dicom_privacy``, and no dataset or tag value outside it is ever logged.
- Sizes are checked from the header before the pixel data are decoded.

Pixel values below -1024 HU (the region outside the scanner's circular field of view, padded with
-2048 or -3024 by many scanners) are set to -1024 HU (air), so downstream windows, lung masks and
statistics see air there, as a radiologist's viewer shows it.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import zlib
from collections import Counter
from dataclasses import dataclass
from io import BytesIO
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import pydicom
import pydicom.encaps
import pydicom.pixels
import pydicom.pixels.utils
from pydicom import config as pydicom_config
from pydicom.dataset import Dataset
from pydicom.uid import UID

from .archive import natural_key
from .dicom_privacy import safe_meta, safe_text
from .errors import (
    CorruptImageError,
    EmptyArchiveError,
    ImageReadError,
    ImageTooLargeError,
    MixedSeriesError,
    NoPixelDataError,
    NotAnImageError,
    NotCTError,
    UnsupportedDimensionsError,
    UnsupportedEncodingError,
)
from .limits import MAX_SLICE_PIXELS, MAX_SLICES, MAX_VOXELS, MIN_SLICE_SIDE, READ_CHUNK_BYTES
from .volume import Volume

logger = logging.getLogger(__name__)

#: Lowest HU kept: air. Lower values are field-of-view padding, not tissue.
HU_FLOOR = -1024.0

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

_EXTENSION_HINTS = {"", ".dcm", ".dicom", ".dic", ".ima"}
_PLAUSIBLE_FIRST_GROUPS = {0x0002, 0x0004, 0x0008, 0x0010, 0x0018, 0x0020, 0x0028}


# ---------------------------------------------------------------------------------------------
# pydicom quietening: with validation on, pydicom logs offending tag VALUES (UIDs, names) as
# warnings. We switch validation off while our readers run (reference-counted, so concurrent
# readers in Streamlit's threads do not restore it under each other's feet).
_quiet_lock = threading.Lock()
_quiet_depth = 0
_saved_mode: int | None = None


@contextlib.contextmanager
def quiet_pydicom() -> Iterator[None]:
    """Run pydicom without value validation, so no tag value reaches the logs."""
    global _quiet_depth, _saved_mode
    with _quiet_lock:
        if _quiet_depth == 0:
            _saved_mode = pydicom_config.settings.reading_validation_mode
            pydicom_config.settings.reading_validation_mode = pydicom_config.IGNORE
        _quiet_depth += 1
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet_depth -= 1
            if _quiet_depth == 0 and _saved_mode is not None:
                pydicom_config.settings.reading_validation_mode = _saved_mode


@contextlib.contextmanager
def _as_corrupt(message: str) -> Iterator[None]:
    """Turn any library exception into a readable CorruptImageError (typed errors pass through)."""
    try:
        yield
    except ImageReadError:
        raise
    except MemoryError as exc:
        raise ImageTooLargeError("The scan is too large to load into memory.") from exc
    except Exception as exc:  # pydicom raises many types on damaged input
        logger.info("DICOM read failed (%s)", type(exc).__name__)
        raise CorruptImageError(message) from exc


# ---------------------------------------------------------------------------------------------
# sniffing and parsing


def has_dicom_preamble(data: bytes) -> bool:
    """The standard Part-10 file: 128-byte preamble then 'DICM'."""
    return len(data) >= 132 and data[128:132] == b"DICM"


def _extension(name: str | None) -> str:
    if not name:
        return ""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    if "." not in base:
        return ""
    ext = "." + base.rsplit(".", 1)[-1].lower()
    return "" if ext[1:].isdigit() else ext  # "1.2.840.113619.2.55.3.1" style names: no extension


def could_be_raw_dicom(data: bytes, name: str | None = None) -> bool:
    """A DICOM data set without preamble (old ACR-NEMA style exports, some PACS dumps).

    Only considered when the name allows it (.dcm/.dicom/.ima/none) and the first tag is in a
    group a DICOM data set starts with; the caller still checks the parsed tags are plausible.
    """
    if len(data) < 8 or _extension(name) not in _EXTENSION_HINTS:
        return False
    group_le = int.from_bytes(data[0:2], "little")
    group_be = int.from_bytes(data[0:2], "big")
    return group_le in _PLAUSIBLE_FIRST_GROUPS or group_be in _PLAUSIBLE_FIRST_GROUPS


def is_dicom(data: bytes, name: str | None = None) -> bool:
    """Content sniff; a raw (no-preamble) data set is accepted only if it parses to image-like tags."""
    if has_dicom_preamble(data):
        return True
    if not could_be_raw_dicom(data, name):
        return False
    try:
        with quiet_pydicom():
            ds = pydicom.dcmread(BytesIO(data), force=True, stop_before_pixels=True)
            return _plausible(ds)
    except Exception:  # not DICOM after all
        return False


def _plausible(ds: Dataset) -> bool:
    """Force-read data sets of random bytes yield a few junk tags; a real one has these."""
    image_like = "Rows" in ds and "Columns" in ds
    identity = "SOPClassUID" in ds or "Modality" in ds
    return bool(image_like or identity)


def parse_dicom(data: bytes, name: str | None = None) -> Dataset:
    """Parse bytes into a pydicom Dataset, or raise a typed error."""
    if not data:
        raise NotAnImageError("The file is empty.")
    preamble = has_dicom_preamble(data)
    if not preamble and not could_be_raw_dicom(data, name):
        raise NotAnImageError("This file is not a DICOM file (it has no DICOM header).")
    if preamble:
        _check_inflated_size(data)
    with quiet_pydicom(), _as_corrupt("The DICOM file is damaged or incomplete and cannot be read."):
        try:
            ds = pydicom.dcmread(BytesIO(data), force=True)
        except Exception as exc:
            if not preamble:
                raise NotAnImageError("This file is not a DICOM file (it has no DICOM header).") from exc
            raise
        if not preamble and not _plausible(ds):
            raise NotAnImageError("This file is not a DICOM file (it has no DICOM header).")
        _ensure_transfer_syntax(ds)
    return ds


#: Deflated Explicit VR Little Endian: the whole data set is zlib-compressed and pydicom inflates it at once.
DEFLATED_TS = "1.2.840.10008.1.2.1.99"
#: The most a deflated data set may inflate to: the largest pixel data we accept (16-bit) plus headers.
MAX_INFLATED_BYTES = 2 * MAX_VOXELS + 16 * 1024**2


def _check_inflated_size(data: bytes) -> None:
    """Count what a deflated data set inflates to, in chunks and without keeping it, before pydicom inflates it.

    The data set starts after the file meta group, whose length the group-length element states.
    """
    if DEFLATED_TS.encode() not in data[132:2048] or data[132:138] != b"\x02\x00\x00\x00UL":
        return
    start = 144 + int.from_bytes(data[140:144], "little")
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    total, buf = 0, data[start:]
    try:
        while buf and not inflater.eof:
            total += len(inflater.decompress(buf, READ_CHUNK_BYTES))
            buf = inflater.unconsumed_tail
            if total > MAX_INFLATED_BYTES:
                raise ImageTooLargeError(
                    f"The compressed (deflated) DICOM file unpacks to more than {MAX_INFLATED_BYTES / 1024**2:.0f} MB; "
                    "that is more than one CT file can hold. It is not safe to open."
                )
    except zlib.error as exc:
        raise CorruptImageError("The compressed (deflated) DICOM file is damaged and cannot be unpacked.") from exc


def _ensure_transfer_syntax(ds: Dataset) -> None:
    """Data sets without file meta still need a transfer syntax for pixel decoding."""
    if "TransferSyntaxUID" in getattr(ds, "file_meta", Dataset()):
        return
    implicit, little = ds.original_encoding
    if implicit is None:
        implicit, little = True, True
    if not little:
        uid = pydicom.uid.ExplicitVRBigEndian
    else:
        uid = pydicom.uid.ImplicitVRLittleEndian if implicit else pydicom.uid.ExplicitVRLittleEndian
    if not hasattr(ds, "file_meta") or ds.file_meta is None:
        ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = uid


# ---------------------------------------------------------------------------------------------
# per-frame header records


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


# ---------------------------------------------------------------------------------------------
# checks (header only, before decoding)


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


# ---------------------------------------------------------------------------------------------
# ordering


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


# ---------------------------------------------------------------------------------------------
# decoding


def _decode(ds: Dataset) -> np.ndarray:
    """All frames of one data set as (frames, rows, cols), raw stored values."""
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


# ---------------------------------------------------------------------------------------------
# metadata (allowlist)


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


# ---------------------------------------------------------------------------------------------
# public readers


#: A header probe reads this much of a member first, and more while Rows/Columns are not in it yet.
HEADER_PROBE_BYTES = 64 * 1024


def check_series_headers(members: Sequence[tuple[str, Callable[[int], bytes | None]]]) -> None:
    """Refuse a zip or folder whose DICOM images hold more slices or voxels than a volume may, counted from
    each member's header before any member is read whole (a few KB each, one at a time).

    Members whose header cannot be read this way (damaged, deflated, not DICOM) are left to the full read.
    """
    frames = voxels = 0
    for name, read_prefix in members:
        shape = _header_shape(name, read_prefix)
        if shape is None:
            continue
        frames += shape[0]
        voxels += shape[0] * shape[1] * shape[2]
        if frames > MAX_SLICES:
            raise ImageTooLargeError(
                f"The upload holds more than {MAX_SLICES} DICOM slices (counted from their headers); that is "
                "more than the app can load at once. Upload one series, or a part of it."
            )
        if voxels > MAX_VOXELS:
            raise ImageTooLargeError(
                f"The upload's DICOM slices hold more than {MAX_VOXELS / 1e6:.0f} million voxels "
                f"({frames} slices of {shape[2]} x {shape[1]} reach it, counted from their headers); that is "
                "more than the app can load at once. Upload one series, or a part of it."
            )


def _header_shape(name: str, read_prefix: Callable[[int], bytes | None]) -> tuple[int, int, int] | None:
    """(frames, rows, cols) of a CT image's header, or None when not known from a prefix."""
    size = HEADER_PROBE_BYTES
    while True:
        head = read_prefix(size)
        if not head or not (has_dicom_preamble(head) or could_be_raw_dicom(head, name)):
            return None
        try:
            with quiet_pydicom():
                ds = pydicom.dcmread(BytesIO(head), force=True, stop_before_pixels=True)
            rows, cols = int(ds.Rows), int(ds.Columns)
            modality = str(ds.get("Modality", "CT") or "CT").upper()
            return (_number_of_frames(ds), rows, cols) if modality == "CT" else None
        except Exception:  # cut inside the header (or not a parsable header at all)
            if len(head) < size:  # the whole member was read: the full read reports what is wrong
                return None
            size *= 4


def read_dicom(data: bytes, name: str | None = None) -> Volume:
    """One DICOM file (a slice, or a multi-frame CT whose frames are slices)."""
    volume = read_dicom_series([(name or "file.dcm", data)])
    meta = dict(volume.meta)
    meta.pop("skipped_files", None)
    return Volume(
        array=volume.array,
        is_hu=True,
        spacing=volume.spacing,
        source_format="dicom",
        meta=meta,
        slice_positions=volume.slice_positions,
    )


def read_dicom_series(members: Sequence[tuple[str, bytes]]) -> Volume:
    """Many DICOM files of ONE CT series -> a superior-first HU volume.

    DICOMDIRs and image-less objects are skipped, as are non-CT images and scout (localizer)
    images when CT slices are present; more than one CT series is refused (MixedSeriesError).
    """
    if not members:
        raise EmptyArchiveError("No DICOM files were found.")
    members = sorted(members, key=lambda m: natural_key(m[0]))  # only matters when nothing else orders
    with quiet_pydicom():
        datasets = [parse_dicom(data, name) for name, data in members]
        with _as_corrupt("A DICOM file is damaged or incomplete and cannot be read."):
            kept, skipped = _select_ct_images(datasets)
            series_count = _check_single_series(kept)
            for _, ds in kept:
                check_size(ds)
                check_encoding(ds)
            frames = [fr for i, ds in kept for fr in _frames_of(ds, i)]
            _check_totals(frames)
            order = _order_frames(frames)
            array = _assemble(frames, order)
            first = frames[order.indices[0]]
            spacing = _spacing(order, frames)
            meta = _meta(first.ds)
            if first.frame is not None:
                meta["RescaleSlope"], meta["RescaleIntercept"] = first.slope, first.intercept
            meta.update(
                n_slices=int(array.shape[0]),
                series_count=series_count,
                slice_order=order.method,
                skipped_files=skipped,
            )
            if len(kept) == 1 and _number_of_frames(kept[0][1]) > 1:
                meta["number_of_frames"] = _number_of_frames(kept[0][1])
    logger.debug("Read DICOM CT: %d slices of %dx%d, order by %s", *array.shape, order.method)
    return Volume(
        array=array,
        is_hu=True,
        spacing=spacing,
        source_format="dicom-series",
        meta=meta,
        slice_positions=order.positions,
    )


def _select_ct_images(datasets: Sequence[Dataset]) -> tuple[list[tuple[int, Dataset]], int]:
    """Keep CT images; skip reports, DICOMDIRs, other modalities and scouts (when CT remains)."""
    no_pixels: list[ImageReadError] = []
    not_ct: list[ImageReadError] = []
    kept: list[tuple[int, Dataset]] = []
    for i, ds in enumerate(datasets):
        try:
            check_has_pixels(ds)
            check_is_ct(ds)
        except NoPixelDataError as exc:
            no_pixels.append(exc)
            continue
        except NotCTError as exc:
            not_ct.append(exc)
            continue
        kept.append((i, ds))
    if not kept:
        raise (not_ct or no_pixels)[0]
    non_scouts = [(i, ds) for i, ds in kept if not _is_localizer(ds)]
    skipped = len(datasets) - len(kept)
    if non_scouts and len(non_scouts) < len(kept):
        skipped += len(kept) - len(non_scouts)
        kept = non_scouts
    if skipped:
        logger.info("Skipped %d DICOM files that are not CT slices of the series", skipped)
    return kept, skipped


def _is_localizer(ds: Dataset) -> bool:
    try:
        return any(str(v).upper() == "LOCALIZER" for v in (ds.get("ImageType") or []))
    except TypeError:
        return False


def _check_single_series(kept: Sequence[tuple[int, Dataset]]) -> int:
    uids = {str(ds.get("SeriesInstanceUID", "") or "") for _, ds in kept}
    if len(uids) > 1:
        raise MixedSeriesError(
            f"The upload holds {len(uids)} different CT series. Upload one series at a time "
            "(one folder or zip per series)."
        )
    return len(uids)


def _check_totals(frames: Sequence[_Frame]) -> None:
    sizes = {(f.rows, f.cols) for f in frames}
    if len(sizes) > 1:
        raise MixedSeriesError(
            "The slices do not all have the same size, so they are not one CT series. Upload one series."
        )
    rows, cols = next(iter(sizes))
    if len(frames) > MAX_SLICES:
        raise ImageTooLargeError(f"The series has {len(frames)} slices; at most {MAX_SLICES} can be loaded.")
    if len(frames) * rows * cols > MAX_VOXELS:
        raise ImageTooLargeError(
            f"The series has {len(frames)} slices of {cols} x {rows}; "
            "that is more than the app can load at once."
        )


def _assemble(frames: Sequence[_Frame], order: _Order) -> np.ndarray:
    """Decode each data set once, rescale each frame with its own slope/intercept, stack in order.

    With whole-number slopes and intercepts (as CT stores them) the HU are whole numbers and the volume is
    int16, half the memory of float32 (``Volume.slice`` reads float32); a value beyond int16 turns it float32.
    """
    rows, cols = frames[0].rows, frames[0].cols
    whole = all(float(f.slope).is_integer() and float(f.intercept).is_integer() for f in frames)
    out = np.empty((len(frames), rows, cols), dtype=np.int16 if whole else np.float32)
    remaining = Counter(id(f.ds) for f in frames)
    decoded: dict[int, np.ndarray] = {}
    for k, i in enumerate(order.indices):
        frame = frames[i]
        key = id(frame.ds)
        if key not in decoded:
            decoded[key] = _decode(frame.ds)
        raw = decoded[key]
        index = frame.frame or 0
        if raw.shape[1:] != (rows, cols) or index >= raw.shape[0]:
            raise CorruptImageError("The image data do not match the size stated in the DICOM header.")
        hu = _to_hu(raw[index], frame)
        if out.dtype == np.int16 and not -32768 <= hu.max(initial=0) <= 32767:
            out = out.astype(np.float32)
        out[k] = hu
        remaining[key] -= 1
        if remaining[key] == 0:  # free decoded pixels as soon as no later slice needs them
            del decoded[key]
    return out


def _spacing(order: _Order, frames: Sequence[_Frame]) -> tuple[float, float, float] | None:
    first = frames[order.indices[0]]
    if first.pixel_spacing is None:
        return None
    dz = _slice_spacing(order, frames)
    if dz is None:
        logger.info("DICOM gives no slice spacing; assuming 1 mm")
        dz = 1.0
    return (float(dz), float(first.pixel_spacing[0]), float(first.pixel_spacing[1]))
