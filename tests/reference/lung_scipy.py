"""The classical lung segmentation and involvement as they were before the OpenCV rewrite (2026-12-02),
kept only so tests can show the fast version gives the same masks (scipy.ndimage throughout, slice by slice,
whole-image morphology). Not used by the product."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage import measure, morphology

from ctmodels.imaging.lung import NotHUError
from ctmodels.imaging.volume import Volume

AIR_THRESHOLD_HU = -320.0
BODY_THRESHOLD_HU = -500.0
AIRWAY_LUMEN_HU = -880.0  # median HU of a tracheal lumen; lung parenchyma sits near -850
BAND_LOW_HU = -700.0
BAND_HIGH_HU = 100.0
DEFAULT_OPENING_MM = 3.0
SEGMENT_SIGMA = 0.5  # in-plane Gaussian smoothing (pixels) before the segmentation's thresholds
INVOLVEMENT_SIGMA = 0.7  # and before the involvement band


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


def _smoothed(volume: Volume, index: int, sigma: float) -> np.ndarray:
    """One slice's HU, Gaussian-smoothed in-plane, float32. Slice by slice equals a 3-D filter with no
    smoothing across slices, without a whole float32 copy of the volume."""
    return ndi.gaussian_filter(volume.array[index], sigma, output=np.float32)


def _body_of(hu: np.ndarray) -> np.ndarray:
    """The largest non-air component of one slice, holes filled."""
    lab, n = ndi.label(hu > BODY_THRESHOLD_HU)
    if n == 0:
        return np.zeros(hu.shape, dtype=bool)
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return ndi.binary_fill_holes(lab == sizes.argmax())


def _drop_border_air(air: np.ndarray) -> np.ndarray:
    out = air.copy()
    for i, sl in enumerate(air):
        out[i] = sl & ~_touching_border(sl)
    return out


def _touching_border(mask2d: np.ndarray) -> np.ndarray:
    lab, n = ndi.label(mask2d)
    if n == 0:
        return np.zeros_like(mask2d)
    edge = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
    return np.isin(lab, edge[edge > 0])


def _keep_lung_components(air: np.ndarray) -> np.ndarray:
    """3-D components large enough to be a lung that begin above the largest one's centre."""
    lab, n = ndi.label(air)
    if n == 0:
        return air
    sizes = np.zeros(n + 1, dtype=np.int64)
    for s in lab:  # slice by slice: np.bincount casts its input to int64, a copy 2x the label volume
        sizes += np.bincount(s.ravel(), minlength=n + 1)
    sizes[0] = 0
    biggest = int(sizes.argmax())
    slices = ndi.find_objects(lab)
    # z of the biggest component's centre, slice by slice: ndi.center_of_mass would multiply the whole
    # volume by float64 coordinate grids (2x the HU volume's memory, for one number)
    counts = np.array([np.count_nonzero(s == biggest) for s in lab], dtype=np.float64)
    zc = float((counts * np.arange(len(counts))).sum() / counts.sum())
    keep = np.zeros(n + 1, dtype=bool)  # a lookup table: np.isin would build volume-sized int64 temporaries
    for k in range(1, n + 1):
        keep[k] = sizes[k] >= 0.08 * sizes[biggest] and slices[k - 1] is not None and slices[k - 1][0].start <= zc
    return keep[lab]


def _remove_airways(mask: np.ndarray, volume: Volume, body: np.ndarray, pixel_mm: float) -> np.ndarray:
    """Drop per-slice components that look like trachea or main bronchi.

    Airway lumen is air (-1000 HU, nearer -900 at the thoracic inlet on real scanners), lung
    parenchyma ≈ -850: a small, near-midline component whose median is below -880 HU is airway.
    """
    out = mask.copy()
    max_area = 900.0 / (pixel_mm**2)
    for i in range(mask.shape[0]):
        lab, n = ndi.label(mask[i])
        if n == 0:
            continue
        cols = np.nonzero(body[i].any(axis=0))[0]
        if cols.size == 0:
            continue
        mid, half_width = (cols[0] + cols[-1]) / 2.0, max(1.0, (cols[-1] - cols[0]) / 2.0)
        hu = _smoothed(volume, i, SEGMENT_SIGMA)
        for region in measure.regionprops(lab, intensity_image=hu):
            near_mid = abs(region.centroid[1] - mid) < 0.25 * half_width
            if region.area < max_area and near_mid and np.median(region.image_intensity[region.image]) < AIRWAY_LUMEN_HU:
                out[i][lab == region.label] = False
    return out


def _fill_enclosed_holes(mask: np.ndarray) -> np.ndarray:
    """Fill 2-D holes (vessels, consolidation) except those that open downwards out of the lung.

    Holes are grouped in 3-D. A group whose inferior neighbours are mostly lung is disease or
    vessel inside the lung; a group resting on non-lung tissue is the liver or splenic dome
    rising into the lung base, which plain 2-D filling would wrongly add to the lung.
    """
    holes = np.zeros_like(mask)
    for i in range(mask.shape[0]):
        if mask[i].any():
            holes[i] = ndi.binary_fill_holes(mask[i]) & ~mask[i]
    lab, n = ndi.label(holes)
    if n == 0:
        return mask
    here, below, lung_below = lab[:-1], lab[1:], mask[1:]
    edge = (here > 0) & (below != here)
    n_below = np.bincount(here[edge], minlength=n + 1)
    n_lung_below = np.bincount(here[edge], weights=lung_below[edge], minlength=n + 1)
    accept = (n_below == 0) | (n_lung_below >= 0.5 * np.maximum(n_below, 1))
    accept[0] = False
    return mask | accept[lab]


def segment_lungs(volume: Volume) -> np.ndarray:
    """Boolean lung mask (S, H, W) for a CT volume in HU."""
    _require_hu(volume)
    px = _pixel_mm(volume)
    body = np.zeros(volume.shape, dtype=bool)
    air = np.zeros(volume.shape, dtype=bool)
    for i in range(volume.n_slices):  # no whole smoothed copy (P002: 267 MB beside its 133 MB, was 373 MB)
        hu = _smoothed(volume, i, SEGMENT_SIGMA)
        body[i] = _body_of(hu)
        air[i] = (hu < AIR_THRESHOLD_HU) & body[i]
    air = _drop_border_air(air)
    mask = _keep_lung_components(air)
    del air
    mask = _remove_airways(mask, volume, body, px)
    del body
    # Seal thin channels (vessels running to the hilum) so enclosed consolidation becomes a hole.
    disk = morphology.disk(max(1, int(round(2.5 / px))))
    for i in range(mask.shape[0]):
        if mask[i].any():
            mask[i] = ndi.binary_closing(mask[i], disk, border_value=0) | mask[i]
    return _fill_enclosed_holes(mask)


def involvement(
    volume: Volume, lung_mask: np.ndarray, opening_mm: float = DEFAULT_OPENING_MM
) -> tuple[float, np.ndarray, np.ndarray]:
    """% of the lung in the ground-glass/consolidation HU band, thin structures removed first."""
    _require_hu(volume)
    if lung_mask.shape != volume.shape:
        raise ValueError(f"lung mask shape {lung_mask.shape} does not match volume {volume.shape}")
    r = max(1, int(round(opening_mm / _pixel_mm(volume))))
    disk = morphology.disk(r)
    lesion = np.zeros(volume.shape, dtype=bool)
    for i in range(volume.n_slices):
        if not lung_mask[i].any():
            continue
        hu = _smoothed(volume, i, INVOLVEMENT_SIGMA)
        band = (hu >= BAND_LOW_HU) & (hu <= BAND_HIGH_HU) & lung_mask[i]
        if band.any():
            lesion[i] = ndi.binary_opening(band, disk) & lung_mask[i]
    lung_per_slice = lung_mask.sum(axis=(1, 2)).astype(float)
    les_per_slice = lesion.sum(axis=(1, 2)).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_slice = np.where(lung_per_slice > 0, 100.0 * les_per_slice / lung_per_slice, np.nan)
    total = float(lung_per_slice.sum())
    pct = 100.0 * float(les_per_slice.sum()) / total if total else 0.0
    return pct, per_slice, lesion
