"""``read_any``: the one entry point from "whatever the user gave us" to a ``Volume``.

Why: uploads arrive as bytes with a name that may lie, local data as files or folders. The format
is sniffed from the CONTENT (magic bytes); the file extension is only a hint (it decides whether
a preamble-less DICOM is worth trying, and phrases the error). Every failure on bad input is an
``ImageReadError`` subclass with a message a clinician understands; nothing else escapes,
except KeyboardInterrupt/SystemExit (and MemoryError, reported as ImageTooLargeError).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Sequence, Union

from . import archive, dicom, nifti, raster
from .errors import (
    CorruptImageError,
    EmptyArchiveError,
    ImageReadError,
    ImageTooLargeError,
    MixedSeriesError,
    NotAnImageError,
    UnsafeArchiveError,
)
from .limits import MAX_INPUT_BYTES
from .plausibility import check_plausible
from .volume import Volume

logger = logging.getLogger(__name__)

Source = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO]
_PATH_OR_BYTES = (str, os.PathLike, bytes, bytearray, memoryview)

SOURCE_FORMATS = ("dicom", "dicom-series", "nifti", "png", "jpeg", "tiff", "bmp", "image-stack")

_UNKNOWN = (
    "This is not a file type we read. Upload a DICOM file or series (.dcm, or a .zip, .tar.gz or folder "
    "of them), "
    "a NIfTI volume (.nii, .nii.gz) or a PNG, JPEG, TIFF or BMP image."
)
_IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}


def read_any(source: Source, *, name: str | None = None, series: str | None = None) -> Volume:
    """Read a path (file or folder), bytes, or a binary file-like (e.g. Streamlit's UploadedFile).

    ``name`` is a hint only (its extension); for file-likes it defaults to their ``.name``. ``series``: which
    DICOM series of a multi-series upload to read (a key of ``meta["series_choices"]``; default the reader's pick).
    Raises an ``ImageReadError`` subclass for any input we cannot use.
    """
    if not isinstance(source, _PATH_OR_BYTES) and not hasattr(source, "read"):
        kind = type(source).__name__
        raise TypeError(f"read_any expects a path, bytes or a binary file object, not {kind}")
    return _guarded(lambda: _read_any(source, name, series))


def _guarded(read) -> Volume:
    """``read()`` checked for plausibility; nothing but an ``ImageReadError`` escapes (module docstring)."""
    try:
        return check_plausible(read())
    except ImageReadError:
        raise
    except MemoryError as exc:
        raise ImageTooLargeError("The scan is too large to load into memory.") from exc
    except Exception as exc:  # last resort: a library failed in a way the readers did not foresee
        logger.warning("Unexpected reader failure (%s)", type(exc).__name__)
        raise CorruptImageError(
            "The file could not be read: it looks damaged or uses a variant this app does not support."
        ) from exc


def _read_any(source: Source, name: str | None, series: str | None = None) -> Volume:
    if isinstance(source, (str, os.PathLike)):
        return _read_path(Path(source), name, series)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return read_bytes(bytes(source), name, series)
    return _read_filelike(source, name, series)


def _read_path(path: Path, name: str | None, series: str | None = None) -> Volume:
    if path.is_dir():
        return _read_members(archive.read_folder(path, probe=dicom.check_series_headers), "folder", series)
    if not path.is_file():
        if path.exists() or path.is_symlink():  # a FIFO, socket or device; or a dangling or looping link
            raise NotAnImageError(f"{path.name} is not a regular file (a pipe, device or broken link); "
                                  "point to the image file or folder itself.")
        raise NotAnImageError("No file or folder exists at the given path.")
    size = path.stat().st_size
    _check_input_size(size)
    with path.open("rb") as fh:
        head = fh.read(4)
    if archive.is_zip(head):
        return _read_members(archive.read_zip(path, probe=dicom.check_series_headers), "zip", series)
    return read_bytes(path.read_bytes(), name or path.name, series)


def _read_filelike(fh: BinaryIO, name: str | None, series: str | None = None) -> Volume:
    if name is None:
        raw_name = getattr(fh, "name", None)
        name = os.path.basename(raw_name) if isinstance(raw_name, str) else None
    try:
        if fh.seekable():
            fh.seek(0)  # an UploadedFile may already have been read once
    except (AttributeError, OSError, ValueError):
        pass
    data = fh.read(MAX_INPUT_BYTES + 1)
    if isinstance(data, str):
        raise TypeError("read_any needs a binary file object (opened with 'rb'), not a text one")
    return read_bytes(bytes(data), name, series)


def _check_input_size(size: int) -> None:
    if size > MAX_INPUT_BYTES:
        raise ImageTooLargeError(
            f"The upload is {size / 1024**3:.1f} GB; at most {MAX_INPUT_BYTES / 1024**3:.0f} GB is accepted."
        )


def sniff_format(data: bytes, name: str | None = None) -> str | None:
    """'zip', 'dicom', 'nifti', 'tar', 'png', 'jpeg', 'tiff', 'bmp' by content, or None."""
    if archive.is_zip(data):
        return "zip"
    if dicom.has_dicom_preamble(data):
        return "dicom"
    if nifti.is_nifti(data):
        return "nifti"
    if archive.is_tar(data):
        return "tar"
    kind = raster.sniff_raster(data)
    if kind:
        return kind
    if not nifti.is_gzip(data) and dicom.is_dicom(data, name):
        return "dicom"
    return None


def read_bytes(data: bytes, name: str | None = None, series: str | None = None) -> Volume:
    """One file's bytes (or a zip's) -> Volume."""
    if not data:
        raise NotAnImageError("The file is empty.")
    _check_input_size(len(data))
    kind = sniff_format(data, name)
    if kind == "zip":
        return _read_members(archive.read_zip(data, probe=dicom.check_series_headers), "zip", series)
    if kind == "tar":
        return _read_members(archive.read_tar(data, probe=dicom.check_series_headers), "tar archive", series)
    if kind == "dicom":
        return dicom.read_dicom(data, name)
    if kind == "nifti":
        return nifti.read_nifti(data, name)
    if kind in raster.RASTER_FORMATS.values():
        return raster.read_raster(data, name)
    raise NotAnImageError(_unknown_message(data, name))


def read_study_files(members: Sequence[tuple[str, bytes]], series: str | None = None) -> Volume:
    """The files of a study retrieved from a PACS (``ctmodels.pacs``) -> one series as a Volume, read like a zip
    of them (series choice included); typed errors as ``read_any``."""
    return _guarded(lambda: _read_members(members, "study", series))


def source_images(data: bytes | Path | Sequence[tuple[str, bytes]], name: str | None = None,
                  series: str | None = None) -> list:
    """The headers (pydicom Datasets, pixel data dropped) of the DICOM series ``read_any`` reads from these bytes
    (or this folder), one per slice in the volume's order: what a DICOM SR or SEG of the scan references. They
    hold the patient's identifiers: for the DICOM writers only (``ctmodels.dicom_out``), in memory."""
    if isinstance(data, Path) and not data.is_dir():
        data, name = data.read_bytes(), name or data.name
    if isinstance(data, Path):
        members = archive.read_folder(data)
    elif isinstance(data, list):
        members = data
    elif (kind := sniff_format(data, name)) in ("zip", "tar"):
        members = archive.read_zip(data) if kind == "zip" else archive.read_tar(data)
    elif kind == "dicom":
        members = [(name or "file.dcm", data)]
    else:
        raise NotAnImageError("DICOM SR and SEG are written for DICOM scans; this upload is not one.")
    return dicom.series_source_images([(n, d) for n, d in members if d and sniff_format(d, n) == "dicom"], series)


def _unknown_message(data: bytes, name: str | None) -> str:
    suffixes = [s.lower() for s in PurePosixPath((name or "").replace("\\", "/")).suffixes]
    ext = suffixes[-1] if suffixes else ""
    if nifti.is_gzip(data):
        return "This compressed (.gz) file does not contain a NIfTI volume."
    other = _other_picture(data)
    if other:
        return (f"This is a {other} picture; CT slices are read from DICOM, NIfTI, PNG, JPEG, TIFF or BMP. "
                "Export the slice as PNG (or the scan as DICOM) and upload that.")
    if ext in _IMAGE_EXTENSIONS:
        return f"This file is named like an image ({ext}) but is not an image file."
    if ext in {".dcm", ".dicom"}:
        return "This file is named like a DICOM file but is not a DICOM file."
    if ext == ".nii":
        return "This file is named like a NIfTI volume (.nii) but is not one."
    return _UNKNOWN


def _other_picture(data: bytes) -> str | None:
    """Picture formats we do not read, named by their magic bytes (so the message says what the file is)."""
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    if data[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftypavif"):
        return "HEIC/AVIF"
    return None


def _read_members(members: Sequence[tuple[str, bytes]], container: str, series: str | None = None) -> Volume:
    """Decide what a zip/folder holds: one DICOM series, one NIfTI, one image, or an image stack."""
    groups: dict[str, list[tuple[str, bytes]]] = {"dicom": [], "nifti": [], "raster": []}
    ignored = 0
    for member_name, data in members:
        kind = sniff_format(data, member_name) if data else None
        if kind in ("zip", "tar"):
            raise UnsafeArchiveError(archive.NESTED_MESSAGE.format(f"a {kind} file"))
        if kind is None:
            ignored += 1
            continue
        groups["raster" if kind in raster.RASTER_FORMATS.values() else kind].append((member_name, data))
    dcm, nii, img = groups["dicom"], groups["nifti"], groups["raster"]
    if dcm and nii:
        raise MixedSeriesError("The upload mixes DICOM files and NIfTI volumes; upload one scan at a time.")
    if dcm:
        # Viewer thumbnails or exported previews next to a DICOM series are ignored.
        return _with_skipped(dicom.read_dicom_series(dcm, series), ignored + len(img))
    if nii:
        if len(nii) > 1 or img:
            count = len(nii) + len(img)
            raise MixedSeriesError(
                f"The upload holds {count} separate scans or images; upload one at a time."
            )
        return nifti.read_nifti(nii[0][1], nii[0][0])
    if len(img) == 1:
        return raster.read_raster(img[0][1], img[0][0])
    if img:
        return raster.read_raster_stack(img)
    raise EmptyArchiveError(f"The {container} contains no DICOM, NIfTI or image files.")


def _with_skipped(volume: Volume, extra: int) -> Volume:
    if not extra:
        return volume
    meta = dict(volume.meta)
    meta["skipped_files"] = int(meta.get("skipped_files", 0)) + extra
    return dataclasses.replace(volume, meta=meta)
