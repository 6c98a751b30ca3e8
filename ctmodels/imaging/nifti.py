"""NIfTI-1 / NIfTI-2 reader (.nii, .nii.gz) from bytes, into our superior-first radiological layout.

Why: research CT sets (Kaggle covid19-ct-scans, MosMedData) ship as NIfTI with arbitrary voxel
orientations. We reorient to RAS+ with nibabel, then to the app's convention
(slice 0 most superior, rows anterior->posterior, columns patient right->left):
``vol = ras.transpose(2, 1, 0)[::-1, ::-1, ::-1]``.

Decisions (kept consistent):
- Shape and size are checked from the header before any voxel is read or decompressed.
- Non-finite voxels (NaN/inf): up to 1 % are replaced by the volume's lowest finite value
  (air in a CT, background in an intensity image); more than 1 % means a broken export ->
  CorruptImageError.
- ``is_hu`` is inferred from the values (NIfTI has no modality): min < -500 and the 99th
  percentile within [-1100, 4000]. HU volumes are floored at -1024 like DICOM.
- ``meta`` holds technical fields only; the header's free-text fields (descrip, aux_file,
  db_name, intent_name) are never copied.
"""

from __future__ import annotations

import logging
import zlib
from io import BytesIO
from typing import Any, Iterator

import nibabel as nib
import numpy as np

from .errors import (
    CorruptImageError,
    ImageReadError,
    ImageTooLargeError,
    NotAnImageError,
    UnsupportedDimensionsError,
    UnsupportedEncodingError,
)
from .limits import MAX_SLICE_PIXELS, MAX_SLICES, MAX_VOXELS, MIN_SLICE_SIDE, READ_CHUNK_BYTES
from .volume import Volume

logger = logging.getLogger(__name__)

HU_FLOOR = -1024.0
#: Largest share of NaN/inf voxels we silently repair.
MAX_NONFINITE_FRACTION = 0.01

NIFTI_META_KEYS = frozenset(
    {
        "nifti_version",
        "datatype",
        "original_orientation",
        "qform_code",
        "sform_code",
        "n_slices",
        "intensity",
        "nonfinite_replaced",
    }
)

_GZIP_MAGIC = b"\x1f\x8b"


def is_gzip(data: bytes) -> bool:
    """gzip magic (.nii.gz): the header is peeked after decompressing its first bytes."""
    return data[:2] == _GZIP_MAGIC


def header_kind(head: bytes) -> str | None:
    """'nifti1' / 'nifti2' for single-file NIfTI, 'pair' for a .hdr of a .hdr/.img pair, else None."""
    if len(head) < 348:
        return None
    for order in ("little", "big"):
        size = int.from_bytes(head[:4], order)  # type: ignore[arg-type]
        if size == 348:
            magic = head[344:348]
            if magic == b"n+1\x00":
                return "nifti1"
            return "pair"  # 'ni1' header of a pair, or a plain Analyze 7.5 header
        if size == 540 and len(head) >= 540:
            magic = head[4:8]
            if magic == b"n+2\x00":
                return "nifti2"
            if magic == b"ni2\x00":
                return "pair"
    return None


def gunzip_head(data: bytes, size: int = 540) -> bytes:
    """First bytes of a gzip stream (enough for a NIfTI header); b'' if the stream is broken."""
    try:
        return _gunzip(data, size)
    except CorruptImageError:
        return b""


def is_nifti(data: bytes) -> bool:
    """Content sniff for plain or gzip-compressed NIfTI (including unsupported .hdr pairs)."""
    head = gunzip_head(data) if is_gzip(data) else data[:540]
    return header_kind(head) is not None


def _gunzip_chunks(data: bytes, limit: int) -> Iterator[bytes]:
    """Decompress at most ``limit`` bytes, chunk by chunk: a gzip bomb cannot blow past the header's size.

    A stream of several gzip members (bgzip, some pipelines) is read member after member, as gzip does.
    """
    decomp = zlib.decompressobj(31)
    n = 0
    buf = data
    try:
        while n < limit:
            chunk = decomp.decompress(buf, min(READ_CHUNK_BYTES, limit - n))
            n += len(chunk)
            if chunk:
                yield chunk
            buf = decomp.unconsumed_tail
            if decomp.eof:
                buf = decomp.unused_data
                if not is_gzip(buf):  # the last member (trailing padding is ignored, as gzip does)
                    break
                decomp = zlib.decompressobj(31)
                continue
            if not chunk and not buf:
                break
    except zlib.error as exc:
        raise CorruptImageError(
            "The compressed NIfTI file (.nii.gz) is damaged and cannot be unpacked."
        ) from exc


def _gunzip(data: bytes, limit: int) -> bytearray:
    """The first ``limit`` bytes of the stream, written into one buffer of ``limit`` bytes (calloc'd: pages
    cost memory only once written), so the stream is never held twice."""
    out = bytearray(limit)
    n = 0
    with memoryview(out) as view:
        for chunk in _gunzip_chunks(data, limit):
            view[n : n + len(chunk)] = chunk
            n += len(chunk)
    del out[n:]
    return out


def _wide_voxels_float32(data: bytes, gz: bool, dtype: np.dtype, offset: int, n: int) -> np.ndarray | None:
    """The file's 8-byte voxels (float64, int64) as float32 in file order, converted a chunk at a time, or None
    when the stream ends early. Unpacking them whole first would hold twice the float32 volume on top of it
    (a 1.2 MB .nii.gz of 151 M float64 voxels peaked at 1.8 GB); this holds the result and one chunk."""
    out = np.empty(n, np.float32)
    if not gz:
        if len(data) < offset + n * dtype.itemsize:
            return None
        src = np.frombuffer(data, dtype=dtype, count=n, offset=offset)
        step = READ_CHUNK_BYTES // dtype.itemsize
        for k in range(0, n, step):
            out[k : k + step] = src[k : k + step]
        return out
    skip, filled, carry = offset, 0, b""
    for chunk in _gunzip_chunks(data, offset + n * dtype.itemsize):
        if skip:
            cut = min(skip, len(chunk))
            chunk, skip = chunk[cut:], skip - cut
        chunk = carry + chunk
        whole = len(chunk) // dtype.itemsize
        if whole:
            out[filled : filled + whole] = np.frombuffer(chunk, dtype=dtype, count=whole)
            filled += whole
        carry = chunk[whole * dtype.itemsize :]
    return out if filled == n else None


def _parse_header(head: bytes, kind: str) -> nib.Nifti1Header:
    klass = nib.Nifti2Header if kind == "nifti2" else nib.Nifti1Header
    try:
        return klass.from_fileobj(BytesIO(head))
    except Exception as exc:
        raise CorruptImageError("The NIfTI header is damaged and cannot be read.") from exc


def _spatial_shape(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """3-D (x, y, z) from the header shape: 2-D gets one slice, trailing size-1 dims are dropped."""
    if any(int(s) <= 0 for s in shape):
        raise CorruptImageError("The NIfTI header gives an empty image size.")
    if len(shape) > 3:
        extra = int(np.prod(shape[3:]))
        if extra > 1:
            raise UnsupportedDimensionsError(
                "This is a 4-D NIfTI (time series or multi-channel), not a CT volume. Upload a 3-D scan."
            )
        shape = shape[:3]
    if len(shape) == 2:
        shape = (shape[0], shape[1], 1)
    if len(shape) != 3:
        raise UnsupportedDimensionsError("This NIfTI holds a 1-D signal, not an image.")
    return int(shape[0]), int(shape[1]), int(shape[2])


def _check_shape(shape3: tuple[int, int, int], affine: np.ndarray) -> None:
    """In-plane size and totals, judged in the canonical frame (which axis becomes the slice axis)."""
    ornt = nib.orientations.io_orientation(affine)
    out_axis = {int(ornt[i, 0]): shape3[i] for i in range(3)}  # canonical axis -> size
    nx, ny, nz = out_axis.get(0, shape3[0]), out_axis.get(1, shape3[1]), out_axis.get(2, shape3[2])
    if min(nx, ny) < MIN_SLICE_SIDE:
        raise UnsupportedDimensionsError(
            f"The NIfTI slices are only {nx} x {ny} voxels; that is a line or a point, not a CT slice."
        )
    if nx * ny > MAX_SLICE_PIXELS:
        raise ImageTooLargeError(
            f"The NIfTI slices are {nx} x {ny} voxels; that is larger than the app accepts."
        )
    if nz > MAX_SLICES or nx * ny * nz > MAX_VOXELS:
        raise ImageTooLargeError(
            f"The NIfTI volume is {nx} x {ny} x {nz} voxels; that is more than the app can load at once."
        )


def _check_dtype(header: nib.Nifti1Header) -> np.dtype:
    dtype = header.get_data_dtype()
    if dtype.fields is not None or dtype.kind == "c":
        raise UnsupportedEncodingError(
            "This NIfTI stores colour or complex values, not CT intensities. Upload a grey-scale CT volume."
        )
    return dtype


def read_nifti(data: bytes, name: str | None = None) -> Volume:
    """Read a single-file NIfTI-1/2, plain or gzip-compressed, into a superior-first Volume."""
    try:
        return _read_nifti(data)
    except ImageReadError:
        raise
    except MemoryError as exc:
        raise ImageTooLargeError("The NIfTI volume is too large to load into memory.") from exc
    except Exception as exc:  # nibabel raises several types on damaged files
        logger.info("NIfTI read failed (%s)", type(exc).__name__)
        raise CorruptImageError("The NIfTI file is damaged or incomplete and cannot be read.") from exc


def _read_nifti(data: bytes) -> Volume:
    gz = is_gzip(data)
    head = gunzip_head(data) if gz else data[:540]
    kind = header_kind(head)
    if kind is None:
        if gz:
            raise NotAnImageError("This compressed (.gz) file does not contain a NIfTI volume.")
        raise NotAnImageError("This file is not a NIfTI volume.")
    if kind == "pair":
        raise UnsupportedEncodingError(
            "This is the header of a two-file NIfTI/Analyze pair (.hdr + .img). "
            "Convert it to a single .nii or .nii.gz file and upload that."
        )
    header = _parse_header(head, kind)
    dtype = _check_dtype(header)
    shape3 = _spatial_shape(tuple(int(s) for s in header.get_data_shape()))
    affine = header.get_best_affine()
    _check_shape(shape3, affine)
    offset = max(int(header.get_data_offset()), 352 if kind == "nifti1" else 544)
    n = int(np.prod(header.get_data_shape()))
    if dtype.itemsize > 4:
        with np.errstate(over="ignore"):  # beyond float32: infinite, then refused as such (_repair_nonfinite)
            raw: bytes | bytearray | np.ndarray | None = _wide_voxels_float32(data, gz, dtype, offset, n)
        dtype, offset = np.dtype(np.float32), 0
        if raw is None:
            raise CorruptImageError("The NIfTI file is truncated: it holds fewer voxels than its header states.")
    else:
        expected = offset + n * dtype.itemsize
        raw = _gunzip(data, expected) if gz else data
        if len(raw) < expected:
            raise CorruptImageError("The NIfTI file is truncated: it holds fewer voxels than its header states.")
    vol, canonical_affine = _canonical_float32(raw, header, dtype, offset, shape3, affine)
    del raw
    replaced = _repair_nonfinite(vol)
    is_hu = looks_like_hu(vol)
    if is_hu:
        np.maximum(vol, np.float32(HU_FLOOR), out=vol)
    zx, zy, zz = (round(float(z), 6) for z in np.sqrt((canonical_affine[:3, :3] ** 2).sum(axis=0)))
    positions = _slice_positions(canonical_affine, vol.shape[0])
    meta = _meta(header, kind, affine, vol, is_hu, replaced)
    logger.debug("Read NIfTI: %d slices of %dx%d, is_hu=%s", *vol.shape, is_hu)
    return Volume(
        array=vol,
        is_hu=is_hu,
        spacing=(zz, zy, zx) if all(z > 0 for z in (zx, zy, zz)) else None,
        source_format="nifti",
        meta=meta,
        slice_positions=positions,
    )


def _canonical_float32(
    raw: bytes | bytearray | np.ndarray, header: Any, dtype: np.dtype, offset: int, shape3: tuple[int, int, int],
    affine: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The voxels as the app's superior-first float32 volume, plus the canonical (RAS+) affine.

    Views all the way (the file's voxels in place, reoriented by flips and transposes) until one
    float32 copy: peak memory is the file's voxels plus the result, not nibabel's chain of copies
    (bytes → image → float → canonical → contiguous measured 2.9 GB for a 0.6 GB volume).
    """
    n = int(np.prod(header.get_data_shape()))
    voxels = np.frombuffer(raw, dtype=dtype, count=n, offset=offset).reshape(shape3, order="F")  # an array too
    ornt = nib.orientations.io_orientation(affine)
    ras = nib.orientations.apply_orientation(voxels, ornt)
    vol = ras.transpose(2, 1, 0)[::-1, ::-1, ::-1].astype(np.float32, order="C")
    slope, inter = header.get_slope_inter()
    if slope is not None and slope != 1.0:
        vol *= np.float32(slope)
    if inter is not None and inter != 0.0:
        vol += np.float32(inter)
    return vol, affine @ nib.orientations.inv_ornt_aff(ornt, shape3)


def _repair_nonfinite(vol: np.ndarray) -> int:
    """Replace up to 1 % NaN/inf by the lowest finite value; refuse broken volumes."""
    if all(np.isfinite(s).all() for s in vol):  # slice by slice: no volume-sized mask for a clean scan
        return 0
    bad = ~np.isfinite(vol)
    n_bad = int(bad.sum())
    if n_bad == 0:
        return 0
    if n_bad > MAX_NONFINITE_FRACTION * vol.size or n_bad == vol.size:
        raise CorruptImageError(
            f"{100.0 * n_bad / vol.size:.1f}% of the voxels in this NIfTI have no value (NaN); "
            "the export is broken."
        )
    vol[bad] = np.min(vol[~bad])
    logger.info("Replaced %d non-finite NIfTI voxels", n_bad)
    return n_bad


def looks_like_hu(vol: np.ndarray) -> bool:
    """HU: air well below -500 and the bulk within the CT range; 0..255 or 0..1 images fail this."""
    flat = vol.reshape(-1)
    step = max(1, flat.size // 2_000_000)
    sample = flat[::step]
    lo = float(np.min(flat))
    p99 = float(np.percentile(sample, 99))
    return lo < -500.0 and -1100.0 <= p99 <= 4000.0


def _slice_positions(affine: np.ndarray, n: int) -> tuple[float, ...]:
    """World z (superior +) of each output slice; canonical index k is output slice n-1-k."""
    z = [float((affine @ np.array([0.0, 0.0, k, 1.0]))[2]) for k in range(n)]
    return tuple(reversed(z))


def _meta(header: Any, kind: str, affine: np.ndarray, vol: np.ndarray, is_hu: bool, replaced: int) -> dict:
    try:
        axcodes = "".join(nib.aff2axcodes(affine))
    except Exception:
        axcodes = ""
    meta = {
        "nifti_version": 2 if kind == "nifti2" else 1,
        "datatype": str(header.get_data_dtype().name),
        "original_orientation": axcodes,
        "qform_code": int(header["qform_code"]),
        "sform_code": int(header["sform_code"]),
        "n_slices": int(vol.shape[0]),
        "intensity": "HU" if is_hu else "intensity",
        "nonfinite_replaced": replaced,
    }
    return meta
