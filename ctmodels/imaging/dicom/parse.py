"""Bytes -> pydicom Dataset: is it DICOM at all (with or without the Part-10 preamble), and parse it
without trusting it (a deflated data set's unpacked size is counted before pydicom unpacks it)."""

from __future__ import annotations

import zlib
from io import BytesIO

import pydicom
from pydicom.dataset import Dataset

from ..errors import CorruptImageError, ImageTooLargeError, NotAnImageError
from ..limits import MAX_VOXELS, READ_CHUNK_BYTES
from .guards import _as_corrupt, quiet_pydicom


_EXTENSION_HINTS = {"", ".dcm", ".dicom", ".dic", ".ima"}
_PLAUSIBLE_FIRST_GROUPS = {0x0002, 0x0004, 0x0008, 0x0010, 0x0018, 0x0020, 0x0028}


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
