"""What the tests build again and again, built one way: zips made in memory, synthetic CT DICOM slices, and
waiting for something that happens elsewhere (another process, a thread)."""

from __future__ import annotations

import io
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

T = TypeVar("T")

#: The models of the quick cross-validation (``quick_cv`` in conftest): the baseline, then two students side by side.
QUICK_CV_MODELS = ("baseline", "kd", "ghost_kd")

# ------------------------------------------------------------------------------------------------ zips


def zip_bytes(files: Mapping[str | zipfile.ZipInfo, bytes], *, stored: bool = False) -> bytes:
    """A zip of ``files`` in their order: member name -> bytes, deflated (``stored``: not compressed). A
    ``zipfile.ZipInfo`` key writes a member with its own attributes (a symlink, say) and compression."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buf.getvalue()


def zip_folder(folder: Path, pattern: str = "*", *, prefix: str = "", limit: int | None = None,
               stored: bool = False) -> bytes:
    """The files of ``folder`` matching ``pattern`` ("**/*": every file below it), sorted, the first ``limit``
    of them, zipped as a user would upload them: each named by its path under ``folder``, after ``prefix``."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(p for p in folder.glob(pattern) if p.is_file())[:limit]:
            zf.write(f, prefix + f.relative_to(folder).as_posix())
    return buf.getvalue()


# ----------------------------------------------------------------------------------------------- DICOM


def ct_dataset(
    pixels: np.ndarray | bytes | int | None = 1000,
    *,
    rows: int | None = None,
    cols: int | None = None,
    z: float | None = 0.0,
    xy: tuple[float, float] = (0.0, 0.0),
    iop: Sequence[float] | None = (1, 0, 0, 0, 1, 0),
    spacing: Sequence[float] = (0.7, 0.7),
    instance: int | None = None,
    slice_location: float | None = None,
    slope: float = 1,
    intercept: float = -1024,
    series_uid: str | None = None,
    modality: str = "CT",
    sop_class: str = CTImageStorage,
    transfer_syntax: str = ExplicitVRLittleEndian,
    **attrs: object,
) -> Dataset:
    """A synthetic CT slice made from scratch: 16-bit unsigned (12 stored) MONOCHROME2 pixels, rescaled to HU
    by ``slope`` and ``intercept``, with the patient name DOE^JANE (which no message may ever show).

    ``pixels``: an array (raw stored values, one frame or several; ``rows`` x ``cols`` default to its shape),
    bytes (a PixelData as it is: encapsulated, cut, spoiled), a value (a block of it, at most 64 x 64 whatever
    ``rows`` and ``cols`` claim), or None (no pixel data). ``z``, ``iop``, ``instance``, ``slice_location``:
    None leaves the attribute out. ``attrs``: any other attribute set (or spoiled) by keyword, after the
    above."""
    if isinstance(pixels, np.ndarray):
        rows = pixels.shape[-2] if rows is None else rows
        cols = pixels.shape[-1] if cols is None else cols
    rows = 32 if rows is None else rows
    cols = 32 if cols is None else cols
    fm = FileMetaDataset()
    fm.MediaStorageSOPClassUID = sop_class
    fm.MediaStorageSOPInstanceUID = generate_uid()
    fm.TransferSyntaxUID = transfer_syntax
    ds = Dataset()
    ds.file_meta = fm
    ds.PatientName = "DOE^JANE"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = fm.MediaStorageSOPInstanceUID
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.Modality = modality
    if instance is not None:
        ds.InstanceNumber = instance
    if z is not None:
        ds.ImagePositionPatient = [*xy, z]
    if iop is not None:
        ds.ImageOrientationPatient = list(iop)
    if slice_location is not None:
        ds.SliceLocation = slice_location
    ds.PixelSpacing = list(spacing)
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    for k, v in attrs.items():
        setattr(ds, k, v)
    if pixels is not None:
        if isinstance(pixels, np.ndarray):
            ds.PixelData = pixels.astype(np.uint16).tobytes()
        elif isinstance(pixels, bytes):
            ds.PixelData = pixels
        else:
            ds.PixelData = np.full((min(rows, 64), min(cols, 64)), pixels, np.uint16).tobytes()
        ds["PixelData"].VR = "OW" if transfer_syntax == ExplicitVRLittleEndian else "OB"
    return ds


def dicom_bytes(ds: Dataset, preamble: bool = True) -> bytes:
    """``ds`` as a DICOM file (Part 10: its 128-byte preamble and DICM); ``preamble=False``: without them."""
    buf = io.BytesIO()
    if preamble:
        ds.save_as(buf, enforce_file_format=True)
    else:
        ds.preamble = None
        pydicom.dcmwrite(buf, ds, enforce_file_format=False)
    return buf.getvalue()


def ct_dicom(pixels: np.ndarray | bytes | int | None = 1000, **kwargs: object) -> bytes:
    """``ct_dataset(pixels, **kwargs)`` as the bytes of a DICOM file."""
    return dicom_bytes(ct_dataset(pixels, **kwargs))


# ------------------------------------------------------------------------------------------------ waiting


def wait_until(condition: Callable[[], T], timeout: float, what: str, interval: float = 0.1) -> T:
    """Call ``condition`` every ``interval`` s until it returns something truthy, and return that. After
    ``timeout`` s raise AssertionError naming ``what`` was awaited and the last value seen. The condition is
    asked once more when the time is up, so a slow host still gets the whole ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            seen = repr(value)
            seen = seen if len(seen) <= 500 else seen[:500] + "..."
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; last value seen: {seen}")
        time.sleep(interval)
