"""Classical lung segmentation and lung involvement: the dashboard's non-learned severity check.

Pipeline (scikit-image / scipy, no learning): threshold air inside the body, drop outside air,
keep the large air components that start above the biggest one's centre (lungs, not bowel or
stomach gas), remove the trachea and main bronchi, fill small holes slice by slice (vessels)
and large ones only in 3-D (consolidation enclosed by lung, but not the liver dome, which opens
downwards into the abdomen: the pitfall of plain 2-D hole filling), then a gentle closing.

Involvement is the share of lung voxels in the ground-glass/consolidation band (-700…+100 HU)
after a morphological opening that removes thin bright structures (vessels, fissures, the pleural
rim). On real scans the absolute value depends on the opening radius: show it as a relative index.

Speed (a radiologist waits for this on every upload): 2-D labelling, hole filling and morphology run in
OpenCV on each slice's region of interest (the body, the lung's bounding box plus the structuring
element's reach), slices in parallel threads (OpenCV releases the GIL); the masks are
the same as whole-image scipy.ndimage gives (``tests/reference/lung_scipy.py``; equal on P002, normal001
and the phantoms).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterable, TypeVar

import cv2
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from skimage import morphology

from .volume import Volume

AIR_THRESHOLD_HU = -320.0
BODY_THRESHOLD_HU = -500.0
AIRWAY_LUMEN_HU = -880.0  # median HU of a tracheal lumen; lung parenchyma sits near -850
BAND_LOW_HU = -700.0
BAND_HIGH_HU = 100.0
DEFAULT_OPENING_MM = 3.0
SEGMENT_SIGMA = 0.5  # in-plane Gaussian smoothing (pixels) before the segmentation's thresholds
INVOLVEMENT_SIGMA = 0.7  # and before the involvement band


class NotHUError(ValueError):
    """Lung analysis needs Hounsfield units; 8-bit PNG/JPG intensities are not HU."""


@dataclass(frozen=True)
class Involvement:
    """Lung involvement measured on a volume."""

    percent: float  # % of lung volume in the lesion band after opening
    per_slice: np.ndarray  # % per slice, NaN where the slice has no lung
    lesion_bits: np.ndarray  # bool (S, H, W) lesion mask packed along columns: a session keeps 1/8 the bytes
    columns: int  # W, to unpack
    lung_voxels: int
    opening_mm: float

    def lesion_slice(self, index: int) -> np.ndarray:
        """The bool (H, W) lesion mask of one slice (for overlays)."""
        return np.unpackbits(self.lesion_bits[index], axis=-1, count=self.columns).view(bool)


def _require_hu(volume: Volume) -> None:
    if not volume.is_hu:
        raise NotHUError(
            "Lung segmentation and involvement need CT values in Hounsfield units; "
            "this image holds 8-bit display intensities (PNG/JPG)."
        )


def _pixel_mm(volume: Volume) -> float:
    if volume.spacing is None:
        return 0.7  # typical chest CT pixel; used only to size structuring elements
    return float(np.sqrt(volume.spacing[1] * volume.spacing[2]))


T = TypeVar("T")


def _per_slice(work: Callable[[int], T], indices: Iterable[int]) -> list[T]:
    """``work`` on each slice index, in threads (its OpenCV/scipy calls release the GIL)."""
    indices = list(indices)
    workers = min(len(indices), os.cpu_count() or 1, 4)
    if workers <= 1:
        return [work(i) for i in indices]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(work, indices))


def _box(mask2d: np.ndarray, pad: int) -> tuple[slice, slice] | None:
    """The bounding box of ``mask2d`` grown by ``pad`` pixels (clipped to the image); None when empty."""
    rows, cols = np.flatnonzero(mask2d.any(axis=1)), np.flatnonzero(mask2d.any(axis=0))
    if rows.size == 0:
        return None
    h, w = mask2d.shape
    return (slice(max(0, rows[0] - pad), min(h, rows[-1] + pad + 1)),
            slice(max(0, cols[0] - pad), min(w, cols[-1] + pad + 1)))


def _smoothed(values: np.ndarray, sigma: float) -> np.ndarray:
    """HU Gaussian-smoothed in-plane, float32: ``ndi.gaussian_filter`` (truncated at 4 sigma, mirrored edges)
    as OpenCV computes it, 6x faster on a 512² slice (the same values to ~1e-4 HU). On a crop the values more
    than 4 sigma from its cut edges equal those of the whole slice (the kernel's reach), so callers crop with a
    pad of at least that."""
    k = 2 * int(4.0 * sigma + 0.5) + 1
    return cv2.GaussianBlur(np.asarray(values, np.float32), (k, k), sigma, borderType=cv2.BORDER_REFLECT)


def _u8(mask: np.ndarray) -> np.ndarray:
    return mask.astype(np.uint8)


def _flood_from_border(mask2d: np.ndarray, value: int) -> np.ndarray:
    """Pixels equal to ``value`` 4-connected to the image border (through a one-pixel frame of ``value``)."""
    h, w = mask2d.shape
    img = np.full((h + 2, w + 2), value, np.uint8)
    img[1:-1, 1:-1] = mask2d
    cv2.floodFill(img, None, (0, 0), 2, flags=4)
    return img[1:-1, 1:-1] == 2


def _fill_holes(mask2d: np.ndarray) -> np.ndarray:
    """``ndi.binary_fill_holes`` (4-connected background) on the mask's bounding box."""
    box = _box(mask2d, 1)
    out = mask2d.copy()
    if box is not None:
        out[box] = ~_flood_from_border(_u8(mask2d[box]), 0)
    return out


def _without_border_components(mask2d: np.ndarray) -> np.ndarray:
    """The mask minus its 4-connected components that touch the image border."""
    return mask2d & ~_flood_from_border(_u8(mask2d), 1)


def _morphology(mask2d: np.ndarray, disk: np.ndarray, closing: bool) -> np.ndarray:
    """``ndi.binary_closing(mask2d, disk, border_value=0)`` or ``ndi.binary_opening(mask2d, disk)``: zero outside
    the image for both passes, on the mask's bounding box padded by twice the radius (which sees the same
    zeros)."""
    r = disk.shape[0] // 2
    box = _box(mask2d, 2 * r + 2)
    out = np.zeros_like(mask2d)
    if box is not None:
        kw = {"borderType": cv2.BORDER_CONSTANT, "borderValue": 0}
        first, second = (cv2.dilate, cv2.erode) if closing else (cv2.erode, cv2.dilate)
        out[box] = second(first(_u8(mask2d[box]), disk, **kw), disk, **kw).astype(bool)
    return out


def _body_and_air(hu_slice: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One slice: the body (largest non-air component, holes filled) and the air inside it that does not
    reach the image border."""
    hu = _smoothed(hu_slice, SEGMENT_SIGMA)
    n, lab, stats, _ = cv2.connectedComponentsWithStats(_u8(hu > BODY_THRESHOLD_HU), connectivity=4)
    if n <= 1:
        body = np.zeros(hu.shape, dtype=bool)
    else:
        body = _fill_holes(lab == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA])))
    return body, _without_border_components((hu < AIR_THRESHOLD_HU) & body)


@dataclass
class _Components3D:
    """6-connected 3-D components of a mask (``ndi.label``'s default), from OpenCV's 2-D labels joined
    where they overlap in adjacent slices: labelling slice by slice in threads is ~10x faster than
    scipy's 3-D pass on a CT volume and gives the same components.

    Every slice's 2-D labels (0 = background) index its own run of nodes, ``offsets[z]`` onwards, so a
    per-node table is read per slice through a view (``of_slice``), without renumbering any label image."""

    labels: list[np.ndarray]  # per slice: OpenCV's 2-D labels
    offsets: np.ndarray  # per slice: its first node (its background)
    component: np.ndarray  # per node: its 3-D component (1…n; 0 for every background)
    area: np.ndarray  # per node: pixels
    z: np.ndarray  # per node: slice index
    n: int

    def of_slice(self, table: np.ndarray, z: int) -> np.ndarray:
        """``table`` (one value per node) read at every pixel of slice ``z``."""
        return table[self.offsets[z] : self.offsets[z + 1]][self.labels[z]]


def _components_3d(mask: np.ndarray) -> _Components3D:
    def label(i: int) -> tuple[np.ndarray, np.ndarray]:
        _, lab, stats, _ = cv2.connectedComponentsWithStats(_u8(mask[i]), connectivity=4, ltype=cv2.CV_32S)
        return lab, stats[:, cv2.CC_STAT_AREA]

    parts = _per_slice(label, range(len(mask)))
    labels = [lab for lab, _ in parts]
    offsets = np.concatenate([[0], np.cumsum([len(a) for _, a in parts])]).astype(np.int64)
    total = int(offsets[-1])
    area = np.concatenate([a for _, a in parts]).astype(np.int64)
    z = np.repeat(np.arange(len(parts)), [len(a) for _, a in parts])
    foreground = np.ones(total, bool)
    foreground[offsets[:-1]] = False
    area[~foreground] = 0
    pairs = []
    for i in range(len(labels) - 1):
        here, below = labels[i], labels[i + 1]
        both = (here > 0) & (below > 0)
        if both.any():
            key = np.unique((here[both].astype(np.int64) + offsets[i]) * total + below[both] + offsets[i + 1])
            pairs.append(np.stack([key // total, key % total]))
    edges = np.concatenate(pairs, axis=1) if pairs else np.zeros((2, 0), np.int64)
    graph = coo_matrix((np.ones(edges.shape[1]), (edges[0], edges[1])), shape=(total, total))
    _, root = connected_components(graph, directed=False)
    # number the components 1…n in the order of their first node; every background node keeps 0
    _, first, inverse = np.unique(root[foreground], return_index=True, return_inverse=True)
    component = np.zeros(total, np.int32)
    component[foreground] = np.argsort(np.argsort(first))[inverse] + 1
    return _Components3D(labels, offsets, component, area, z, len(first))


def _keep_lung_components(air: np.ndarray) -> np.ndarray:
    """3-D components large enough to be a lung that begin above the largest one's centre."""
    box = _box(air.any(axis=0), 0)
    if box is None:
        return air
    cc = _components_3d(air[:, box[0], box[1]])
    sizes = np.bincount(cc.component, weights=cc.area, minlength=cc.n + 1)
    sizes[0] = 0
    biggest = int(sizes.argmax())
    of_biggest = cc.component == biggest
    zc = float((cc.area[of_biggest] * cc.z[of_biggest]).sum() / cc.area[of_biggest].sum())
    start = np.full(cc.n + 1, np.iinfo(np.int64).max)
    np.minimum.at(start, cc.component, cc.z)
    keep = (sizes >= 0.08 * sizes[biggest]) & (start <= zc)
    keep[0] = False
    kept = keep[cc.component]
    out = np.zeros_like(air)
    for i in range(len(air)):
        out[i, box[0], box[1]] = cc.of_slice(kept, i)
    return out


def _without_airways(mask2d: np.ndarray, body2d: np.ndarray, hu_slice: np.ndarray, max_area: float) -> np.ndarray:
    """One slice minus components that look like trachea or main bronchi.

    Airway lumen is air (-1000 HU, nearer -900 at the thoracic inlet on real scanners), lung
    parenchyma ≈ -850: a small, near-midline component whose median is below -880 HU is airway.
    """
    cols = np.flatnonzero(body2d.any(axis=0))
    if cols.size == 0 or not mask2d.any():
        return mask2d
    n, lab, stats, centroids = cv2.connectedComponentsWithStats(_u8(mask2d), connectivity=4)
    mid, half_width = (cols[0] + cols[-1]) / 2.0, max(1.0, (cols[-1] - cols[0]) / 2.0)
    out = mask2d
    for k in range(1, n):
        if stats[k, cv2.CC_STAT_AREA] >= max_area or abs(centroids[k, 0] - mid) >= 0.25 * half_width:
            continue
        x, y, w, h = stats[k, :4]
        pad = 4  # > the smoothing kernel's reach (4 sigma)
        r0, c0 = max(0, y - pad), max(0, x - pad)
        crop = (slice(r0, y + h + pad), slice(c0, x + w + pad))
        hu = _smoothed(hu_slice[crop], SEGMENT_SIGMA)
        region = lab[crop] == k
        if np.median(hu[region]) < AIRWAY_LUMEN_HU:
            out = out.copy() if out is mask2d else out
            out[crop][region] = False
    return out


def _fill_enclosed_holes(mask: np.ndarray) -> np.ndarray:
    """Fill 2-D holes (vessels, consolidation) except those that open downwards out of the lung.

    Holes are grouped in 3-D. A group whose inferior neighbours are mostly lung is disease or
    vessel inside the lung; a group resting on non-lung tissue is the liver or splenic dome
    rising into the lung base, which plain 2-D filling would wrongly add to the lung.
    """
    box = _box(mask.any(axis=0), 1)
    if box is None:
        return mask
    m = mask[:, box[0], box[1]]
    holes = np.stack(_per_slice(lambda i: _fill_holes(m[i]) & ~m[i], range(len(m))))
    cc = _components_3d(holes)
    if cc.n == 0:
        return mask
    n_below = np.zeros(cc.n + 1)
    n_lung_below = np.zeros(cc.n + 1)
    here = cc.of_slice(cc.component, 0)
    for i in range(len(m) - 1):
        below = cc.of_slice(cc.component, i + 1)
        edge = (here > 0) & (below != here)
        if edge.any():
            n_below += np.bincount(here[edge], minlength=cc.n + 1)
            n_lung_below += np.bincount(here[edge], weights=m[i + 1][edge], minlength=cc.n + 1)
        here = below
    accept = (n_below == 0) | (n_lung_below >= 0.5 * np.maximum(n_below, 1))
    accept[0] = False
    accepted = accept[cc.component]
    out = mask.copy()
    for i in range(len(m)):
        out[i, box[0], box[1]] |= cc.of_slice(accepted, i)
    return out


def segment_lungs(volume: Volume) -> np.ndarray:
    """Boolean lung mask (S, H, W) for a CT volume in HU."""
    _require_hu(volume)
    px = _pixel_mm(volume)
    arr = volume.array
    parts = _per_slice(lambda i: _body_and_air(arr[i]), range(volume.n_slices))
    body = np.stack([b for b, _ in parts])
    mask = _keep_lung_components(np.stack([a for _, a in parts]))
    del parts
    mask = _cleaned(mask, body, arr, px)
    del body
    return _fill_enclosed_holes(mask)


def _cleaned(mask: np.ndarray, body: np.ndarray, hu: np.ndarray, px: float) -> np.ndarray:
    """Airways removed, then thin channels (vessels running to the hilum) sealed so that enclosed
    consolidation becomes a hole, slice by slice."""
    max_area = 900.0 / (px**2)
    disk = _u8(morphology.disk(max(1, int(round(2.5 / px)))))

    def clean(i: int) -> np.ndarray:
        m = _without_airways(mask[i], body[i], hu[i], max_area)
        return _morphology(m, disk, closing=True) | m if m.any() else m

    return np.stack(_per_slice(clean, range(len(mask))))


def involvement(
    volume: Volume, lung_mask: np.ndarray, opening_mm: float = DEFAULT_OPENING_MM
) -> Involvement:
    """% of the lung in the ground-glass/consolidation HU band, thin structures removed first."""
    _require_hu(volume)
    if lung_mask.shape != volume.shape:
        raise ValueError(f"lung mask shape {lung_mask.shape} does not match volume {volume.shape}")
    r = max(1, int(round(opening_mm / _pixel_mm(volume))))
    disk = _u8(morphology.disk(r))
    reach = int(4.0 * INVOLVEMENT_SIGMA + 0.5) + 1
    lesion = np.zeros(volume.shape, dtype=bool)

    def band_of(i: int) -> None:
        lung = lung_mask[i]
        box = _box(lung, reach)
        if box is None:
            return
        hu = _smoothed(volume.array[i][box], INVOLVEMENT_SIGMA)
        band = np.zeros_like(lung)
        band[box] = (hu >= BAND_LOW_HU) & (hu <= BAND_HIGH_HU) & lung[box]
        lesion[i] = _morphology(band, disk, closing=False) & lung

    _per_slice(band_of, range(volume.n_slices))
    lung_per_slice = lung_mask.sum(axis=(1, 2)).astype(float)
    les_per_slice = lesion.sum(axis=(1, 2)).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_slice = np.where(lung_per_slice > 0, 100.0 * les_per_slice / lung_per_slice, np.nan)
    total = float(lung_per_slice.sum())
    pct = 100.0 * float(les_per_slice.sum()) / total if total else 0.0
    return Involvement(percent=pct, per_slice=per_slice, lesion_bits=np.packbits(lesion, axis=-1),
                       columns=lesion.shape[-1], lung_voxels=int(total), opening_mm=opening_mm)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two boolean masks (1.0 when both are empty)."""
    a, b = a.astype(bool), b.astype(bool)
    denom = a.sum() + b.sum()
    return 1.0 if denom == 0 else float(2.0 * np.logical_and(a, b).sum() / denom)
