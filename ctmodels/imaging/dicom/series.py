"""The readers: one DICOM file, or the files of ONE CT series, -> a superior-first HU ``Volume``; and the
size probe a zip's or folder's members get from their headers before any member is read whole."""

from __future__ import annotations

import logging
from io import BytesIO
from typing import Callable, Sequence

import pydicom
from pydicom.dataset import Dataset

from ..archive import natural_key
from ..errors import (
    EmptyArchiveError,
    ImageReadError,
    ImageTooLargeError,
    MixedSeriesError,
    NoPixelDataError,
    NotCTError,
    UnsupportedDimensionsError,
)
from ..limits import MAX_SLICES, MAX_VOXELS
from ..volume import Volume
from .checks import check_encoding, check_has_pixels, check_is_ct, check_size
from .choice import describe, group_series, pick
from .frames import _Frame, _frames_of, _number_of_frames
from .guards import _as_corrupt, quiet_pydicom
from .meta import _meta
from .order import _order_frames, _spacing
from .parse import could_be_raw_dicom, has_dicom_preamble, parse_dicom
from .pixels import _assemble

logger = logging.getLogger(__name__)

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


def read_dicom_series(members: Sequence[tuple[str, bytes]], series: str | None = None) -> Volume:
    """The DICOM files of an upload -> one CT series as a superior-first HU volume.

    DICOMDIRs and image-less objects are skipped, as are non-CT images and scout (localizer)
    images when CT slices are present. Of several CT series the reader's pick is read (``choice``), or the one
    ``series`` names (a key from the volume's ``meta["series_choices"]``).
    """
    with quiet_pydicom(), _as_corrupt("A DICOM file is damaged or incomplete and cannot be read."):
        kept, skipped, choice, frames, order = _series_frames(members, series)
        array = _assemble(frames, order)
        first = frames[order.indices[0]]
        spacing = _spacing(order, frames)
        meta = _meta(first.ds)
        if first.frame is not None:
            meta["RescaleSlope"], meta["RescaleIntercept"] = first.slope, first.intercept
        meta.update(
            n_slices=int(array.shape[0]),
            slice_order=order.method,
            skipped_files=skipped,
            **choice,
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


def series_source_images(members: Sequence[tuple[str, bytes]], series: str | None = None) -> list[Dataset]:
    """The headers of the series ``read_dicom_series`` reads, one per slice in the volume's order (superior
    first), pixel data dropped: what a DICOM SEG or SR references. They carry the patient's identifiers, so
    they stay in the caller's memory (``ctmodels.dicom_out``) and are never shown, logged or kept.
    Multi-frame sources are refused: the exporters reference one image per slice."""
    with quiet_pydicom(), _as_corrupt("A DICOM file is damaged or incomplete and cannot be read."):
        kept, _, _, frames, order = _series_frames(members, series)
    if any(f.frame is not None for f in frames):
        raise UnsupportedDimensionsError("DICOM SR and SEG are written for series of single-frame slices; this "
                                         "scan is one multi-frame file.")
    out = []
    for i in order.indices:
        ds = frames[i].ds
        for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
            if keyword in ds:
                del ds[keyword]
        out.append(ds)
    return out


def _series_frames(members: Sequence[tuple[str, bytes]], series: str | None) -> tuple:
    """Parse, keep the CT images of the chosen series, check them and order their slices."""
    if not members:
        raise EmptyArchiveError("No DICOM files were found.")
    members = sorted(members, key=lambda m: natural_key(m[0]))  # only matters when nothing else orders
    datasets = [parse_dicom(data, name) for name, data in members]
    kept, skipped = _select_ct_images(datasets)
    kept, choice = _choose_series(kept, series)
    for _, ds in kept:
        check_size(ds)
        check_encoding(ds)
    frames = [fr for i, ds in kept for fr in _frames_of(ds, i)]
    _check_totals(frames)
    return kept, skipped, choice, frames, _order_frames(frames)


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


def _choose_series(kept: list[tuple[int, Dataset]], series: str | None) -> tuple[list[tuple[int, Dataset]], dict]:
    """The slices of the chosen series (``series``: a key offered before; None: the reader's pick, ``choice``),
    and what the volume's meta says about the choice (the options, technical fields only)."""
    groups = group_series(kept)
    if len(groups) == 1 and series in (None, *groups):
        return next(iter(groups.values())), {"series_count": 1}
    options = [describe(key, members) for key, members in groups.items()]
    best, why = pick(options)
    if series is not None and series not in groups:
        raise MixedSeriesError("The series asked for is not in this upload; pick one of the series it holds.")
    chosen = series or best.key
    if chosen != best.key:
        why = "chosen by you"
    logger.info("Upload holds %d CT series; reading %s (%s)", len(groups), chosen, why)
    return groups[chosen], {"series_count": len(groups), "series_choices": [o.as_meta() for o in options],
                            "series_chosen": chosen, "series_why": why}


def _check_totals(frames: Sequence[_Frame]) -> None:
    sizes = {(f.rows, f.cols) for f in frames}
    if len(sizes) > 1:
        raise MixedSeriesError(
            "The slices do not all have the same size, so they are not one CT series. Upload one series."
        )
    rows, cols = next(iter(sizes))
    spacings = {f.pixel_spacing for f in frames if f.pixel_spacing is not None}
    if spacings and max(max(abs(a - b) for a, b in zip(s, min(spacings))) for s in spacings) > 1e-3:
        shown = " and ".join(f"{s[0]:.3g} mm" for s in sorted(spacings)[:2])
        raise MixedSeriesError(
            f"The slices have different pixel spacings ({shown}{', ...' if len(spacings) > 2 else ''}), so they "
            "are not one reconstruction and would be measured wrongly. Upload one series."
        )
    if len(frames) > MAX_SLICES:
        raise ImageTooLargeError(f"The series has {len(frames)} slices; at most {MAX_SLICES} can be loaded.")
    if len(frames) * rows * cols > MAX_VOXELS:
        raise ImageTooLargeError(
            f"The series has {len(frames)} slices of {cols} x {rows}; "
            "that is more than the app can load at once."
        )
