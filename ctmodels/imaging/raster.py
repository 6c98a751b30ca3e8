"""PNG / JPEG / TIFF / BMP slices via Pillow, as grey-scale float32 intensities (never HU).

Why: many users have exported slices or screenshots. These hold display intensities after some
unknown window, so ``is_hu`` is always False and the app says HU-only features are unavailable.

Decisions:
- The size is read from the header (``Image.open`` is lazy) and checked before decoding;
  Pillow's own decompression-bomb error is reported the same way.
- Colour is reduced to luminance (ITU-R 601, Pillow's ``convert('L')``); transparent images are
  composited on black first, so transparent margins read as air-dark background.
- 16-bit and 32-bit grey images are min-max rescaled to 0..255 (jointly over all pages/slices,
  so the relative contrast between slices is kept): without a window their raw range is
  meaningless to the models, which expect 8-bit-like intensities for non-HU input.
- Only pixel values are kept: text chunks, EXIF and ICC data (possibly identifying) are dropped.
"""

from __future__ import annotations

import logging
import math
import warnings
from io import BytesIO
from typing import Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .archive import natural_key
from .errors import (
    CorruptImageError,
    ImageReadError,
    ImageTooLargeError,
    MixedSeriesError,
    NotAnImageError,
    UnsupportedDimensionsError,
)
from .limits import MAX_SLICE_PIXELS, MAX_SLICES, MAX_VOXELS, MIN_SLICE_SIDE
from .plausibility import non_finite
from .volume import Volume

logger = logging.getLogger(__name__)

#: Pillow format name -> our ``source_format``.
RASTER_FORMATS = {"PNG": "png", "JPEG": "jpeg", "TIFF": "tiff", "BMP": "bmp"}
RASTER_META_KEYS = frozenset({"format", "mode", "width", "height", "n_slices", "bit_depth", "rescaled"})

_SIZES_DIFFER = (
    "The images have different sizes, so they cannot be stacked into one scan. Upload them one at a time."
)
_WIDE_MODES = {"I", "F", "I;16", "I;16B", "I;16L", "I;16N", "I;16S", "I;32", "I;32B"}
_BMP_DIB_SIZES = {12, 16, 40, 52, 56, 64, 108, 124}


def sniff_raster(data: bytes) -> str | None:
    """'png' / 'jpeg' / 'tiff' / 'bmp' by magic bytes, else None."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if data[:2] == b"BM" and len(data) >= 18 and int.from_bytes(data[14:18], "little") in _BMP_DIB_SIZES:
        return "bmp"
    return None


def _open(data: bytes) -> Image.Image:
    """Lazy open (header only), restricted to the formats we support."""
    if not data:
        raise NotAnImageError("The file is empty.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(BytesIO(data), formats=list(RASTER_FORMATS))
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(
            f"The image is larger than the app accepts (at most {MAX_SLICE_PIXELS:,} pixels, 4096 x 4096)."
        ) from exc
    except UnidentifiedImageError as exc:
        raise NotAnImageError(
            "This is not an image file we can read (PNG, JPEG, TIFF or BMP), or it is badly damaged."
        ) from exc


def _check_size(width: int, height: int) -> None:
    if width * height > MAX_SLICE_PIXELS:
        raise ImageTooLargeError(
            f"The image is {width} x {height} pixels; the largest accepted is 4096 x 4096 pixels."
        )
    if min(width, height) < MIN_SLICE_SIDE:
        raise UnsupportedDimensionsError(
            f"The image is only {width} x {height} pixels; that is a line or a dot, not a CT slice."
        )


def _page_sizes(im: Image.Image) -> list[tuple[int, int]]:
    """Size of every page (multi-page TIFF), read from the headers only."""
    n = int(getattr(im, "n_frames", 1) or 1)
    if n > MAX_SLICES:
        raise ImageTooLargeError(f"The file has {n} pages; at most {MAX_SLICES} slices can be loaded.")
    sizes = []
    for i in range(n):
        if n > 1:
            im.seek(i)
        _check_size(*im.size)
        sizes.append(im.size)
    if n > 1:
        im.seek(0)
    return sizes


def _luminance(im: Image.Image) -> np.ndarray:
    """8-bit grey from any 8-bit mode; transparency composited on black."""
    mode = im.mode
    if mode == "L":
        return np.asarray(im, dtype=np.uint8)
    has_alpha = mode in {"RGBA", "LA", "PA", "RGBa", "La"} or (mode == "P" and "transparency" in im.info)
    if has_alpha:
        rgba = im.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return np.asarray(Image.alpha_composite(black, rgba).convert("L"), dtype=np.uint8)
    if mode in {"CMYK", "LAB", "HSV"}:
        im = im.convert("RGB")
    return np.asarray(im.convert("L"), dtype=np.uint8)


def _decode_page(im: Image.Image, single: bool) -> tuple[np.ndarray, bool]:
    """(values, wide): 8-bit images as 0..255, 16/32-bit raw (rescaled later, jointly)."""
    im.load()
    if single:
        im = ImageOps.exif_transpose(im) or im
    if im.mode in _WIDE_MODES:
        if im.mode not in {"I", "F"}:
            im = im.convert("I")
        return np.asarray(im, dtype=np.float32), True
    return _luminance(im).astype(np.float32), False


def _decode_all(data: bytes) -> tuple[list[np.ndarray], list[bool], Image.Image, str]:
    """Every page of one file, after the header-only size checks."""
    im = _open(data)
    fmt = RASTER_FORMATS.get(im.format or "", "")
    mode = im.mode
    try:
        sizes = _page_sizes(im)
        if len(sizes) > 1 and fmt == "png":
            raise UnsupportedDimensionsError(
                f"This PNG is animated ({len(sizes)} frames); a CT slice is one still image. "
                "Save a single frame as PNG, or upload the scan as DICOM."
            )
        if len(set(sizes)) > 1:
            raise UnsupportedDimensionsError(
                "The pages of this TIFF have different sizes, so they are not slices of one scan."
            )
        _check_total(len(sizes), sizes[0][1], sizes[0][0])  # from the headers, before any page is decoded
        pages, wide = [], []
        for i in range(len(sizes)):
            if len(sizes) > 1:
                im.seek(i)
            arr, w = _decode_page(im, single=len(sizes) == 1)
            pages.append(arr)
            wide.append(w)
    except ImageReadError:
        raise
    except MemoryError as exc:
        raise ImageTooLargeError("The image is too large to load into memory.") from exc
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError... on damaged files
        logger.info("Raster decode failed (%s)", type(exc).__name__)
        raise CorruptImageError(
            f"The {fmt.upper() or 'image'} file is damaged or incomplete and cannot be decoded."
        ) from exc
    return pages, wide, im, mode


def _rescale_wide(pages: list[np.ndarray], wide: list[bool]) -> bool:
    """Min-max 16/32-bit pages to 0..255, jointly, in place. Returns whether anything was rescaled."""
    idx = [i for i, w in enumerate(wide) if w]
    if not idx:
        return False
    lo = min(float(pages[i].min()) for i in idx)
    hi = max(float(pages[i].max()) for i in idx)
    if not (math.isfinite(lo) and math.isfinite(hi)):  # min/max carry any NaN or infinity: refuse, never rescale
        raise non_finite()
    for i in idx:
        pages[i] = ((pages[i] - lo) * (255.0 / (hi - lo))).astype(np.float32) if hi > lo else np.zeros_like(pages[i])
    return True


def _check_total(n: int, height: int, width: int) -> None:
    if n > MAX_SLICES or n * height * width > MAX_VOXELS:
        raise ImageTooLargeError(f"{n} images of {width} x {height} are more than the app can load at once.")


def read_raster(data: bytes, name: str | None = None) -> Volume:
    """One PNG/JPEG/TIFF/BMP file (multi-page TIFF pages become slices)."""
    pages, wide, im, mode = _decode_all(data)
    rescaled = _rescale_wide(pages, wide)
    array = np.stack(pages).astype(np.float32, copy=False)
    _check_total(*array.shape)
    fmt = RASTER_FORMATS.get(im.format or "", "png")
    meta = _meta(fmt, mode, array, rescaled, wide)
    logger.info("Read %s: %d slice(s) of %dx%d", fmt, *array.shape)
    return Volume(array=array, is_hu=False, spacing=None, source_format=fmt, meta=meta)


def read_raster_stack(members: Sequence[tuple[str, bytes]]) -> Volume:
    """Several slice images (a zip or folder) -> one stack, in natural order of their names."""
    ordered = sorted(members, key=lambda m: natural_key(m[0]))
    sizes = set()
    n_pages = 0
    for _, data in ordered:  # header-only pass: sizes and totals (every page of every file) before decoding
        im = _open(data)
        page_sizes = _page_sizes(im)
        im.close()
        sizes.update(page_sizes)
        n_pages += len(page_sizes)
        if n_pages > MAX_SLICES:
            raise ImageTooLargeError(f"The images hold more than {MAX_SLICES} slices (pages counted); "
                                     "that is more than the app can load at once.")
    if len(sizes) > 1:
        raise MixedSeriesError(_SIZES_DIFFER)
    width, height = next(iter(sizes))
    _check_total(n_pages, height, width)
    pages: list[np.ndarray] = []
    wide: list[bool] = []
    modes = set()
    for _, data in ordered:
        p, w, _im, mode = _decode_all(data)
        pages += p
        wide += w
        modes.add(mode)
    if len({p.shape for p in pages}) > 1:  # an EXIF rotation can swap a slice's sides
        raise MixedSeriesError(_SIZES_DIFFER)
    rescaled = _rescale_wide(pages, wide)
    array = np.stack(pages).astype(np.float32, copy=False)
    _check_total(*array.shape)
    meta = _meta("image-stack", "/".join(sorted(modes)), array, rescaled, wide)
    logger.info("Read image stack: %d slices of %dx%d", *array.shape)
    return Volume(array=array, is_hu=False, spacing=None, source_format="image-stack", meta=meta)


def _meta(fmt: str, mode: str, array: np.ndarray, rescaled: bool, wide: list[bool]) -> dict:
    return {
        "format": fmt,
        "mode": mode,
        "width": int(array.shape[2]),
        "height": int(array.shape[1]),
        "n_slices": int(array.shape[0]),
        "bit_depth": (32 if any(m in {"I", "F"} for m in mode.split("/")) else 16) if any(wide) else 8,
        "rescaled": rescaled,
    }
