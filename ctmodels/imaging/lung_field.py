"""The lung field of any slice: HU segmentation for CT values, an intensity estimate for 8-bit images.

Models crop, orient and normalise their input around the lungs, so every input needs a lung
field, including 8-bit PNG/JPG slices that carry no Hounsfield units. For those the field is
estimated from intensities alone: the dark (aerated) regions below an Otsu threshold, minus
outside air (components touching three image sides and spanning the image both ways, as the air
around a body does; or thin wedges in the corners, as tight thorax crops such as the Inf-Net slices
have; a spanning region full of vessels is both lungs joined along a border, and is split), the two
largest left, holes filled so vessels and enclosed lesions count as lung. A lung of
a tight crop touches three sides too, but spans only its half of the image: treating every
three-side component as outside air dropped one lung on 9 of the 50 Inf-Net slices, and with it the
lesions a model could be shown (their share inside the network's input fell from 0.93 to 0.83). Dense consolidation touching the chest wall falls outside such a
field (it is as bright as the wall), which is why models do not mask 8-bit inputs with it
(``Preprocessing.mask_8bit``): it drives their crop, orientation and intensity landmarks only.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage import filters, morphology

from .lung import segment_lungs
from .volume import Volume

#: Components smaller than this share of the image are not a lung.
MIN_LUNG_SHARE = 0.02
#: The second lung must be at least this share of the first (else it is a bronchus or bowel gas).
MIN_SECOND_LUNG = 0.15
#: Outside air spans (nearly) the whole image both ways; a lung touching three sides of a tight crop does not.
OUTSIDE_AIR_SPAN = 0.9
#: A dark region reaching the border with fewer holes (vessels) than this is air, not lung.
MIN_VESSELS = 5


def _sides_touched(comp: np.ndarray) -> int:
    return int(comp[0].any()) + int(comp[-1].any()) + int(comp[:, 0].any()) + int(comp[:, -1].any())


def _has_vessels(comp: np.ndarray, filled: np.ndarray) -> bool:
    """Lung holds vessels (many small holes); air around a body holds almost none, or encloses the body."""
    holes = filled & ~comp
    return ndi.label(holes)[1] >= MIN_VESSELS and holes.sum() <= comp.sum()


def _spans_image(comp: np.ndarray) -> bool:
    """Touches three sides and spans the image both ways, as the air around a body does."""
    rows, cols = np.nonzero(comp.any(axis=1))[0], np.nonzero(comp.any(axis=0))[0]
    h, w = comp.shape
    return (_sides_touched(comp) >= 3 and rows[-1] - rows[0] + 1 >= OUTSIDE_AIR_SPAN * h
            and cols[-1] - cols[0] + 1 >= OUTSIDE_AIR_SPAN * w)


def _is_outside_air(comp: np.ndarray, filled: np.ndarray) -> bool:
    """Air around the body (module doc): it reaches the border and holds almost no vessels, or it
    encloses the body (its holes outweigh it), or it touches three sides and spans the image both ways."""
    if _sides_touched(comp) == 0:
        return False
    return not _has_vessels(comp, filled) or _spans_image(comp)


def _split_joined_lungs(comp: np.ndarray, m: int) -> list[np.ndarray]:
    """Both lungs of a tight crop joined along a border into one vessel-filled region that spans the image
    (3 of the 50 Inf-Net slices): opened until it falls apart, the two largest pieces grown back over it.
    Empty when it does not split into two lung-sized pieces."""
    h, w = comp.shape
    for radius in (m // 60, m // 40, m // 25, m // 15):
        lab, n = ndi.label(ndi.binary_opening(comp, morphology.disk(max(1, radius))))
        if n < 2:
            continue
        sizes = np.bincount(lab.ravel())
        sizes[0] = 0
        first, second = np.argsort(sizes)[::-1][:2]
        if sizes[second] < max(MIN_LUNG_SHARE * h * w, MIN_SECOND_LUNG * sizes[first]):
            continue
        seeds = np.where(np.isin(lab, (first, second)), lab, 0)
        nearest = ndi.distance_transform_edt(seeds == 0, return_distances=False, return_indices=True)
        owner = seeds[tuple(nearest)]
        return [comp & (owner == k) for k in (first, second)]
    return []


def estimate_lung_field(image: np.ndarray) -> np.ndarray:
    """Boolean lung field of one 8-bit slice (values 0–255); all False when no lung is found."""
    img = np.asarray(image, dtype=np.float32)
    h, w = img.shape
    m = min(h, w)
    smooth = ndi.gaussian_filter(img, max(1.0, m / 300.0))
    if float(smooth.max() - smooth.min()) < 1.0:
        return np.zeros((h, w), bool)
    dark = smooth < filters.threshold_otsu(smooth)
    dark = ndi.binary_opening(dark, morphology.disk(max(1, m // 150)))
    lab, n = ndi.label(dark)
    out = np.zeros((h, w), bool)
    if n == 0:
        return out
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    c = max(2, int(0.05 * m))
    corners = np.zeros((h, w), bool)
    corners[:c, :c] = corners[:c, -c:] = corners[-c:, :c] = corners[-c:, -c:] = True
    candidates: list[tuple[np.ndarray, np.ndarray]] = []  # (region, region with its holes filled)
    for k in np.argsort(sizes)[::-1][:6]:
        if k == 0 or sizes[k] < MIN_LUNG_SHARE * h * w:
            continue
        comp = lab == k
        filled = ndi.binary_fill_holes(comp)
        if _spans_image(comp) and _has_vessels(comp, filled):
            candidates += [(piece, ndi.binary_fill_holes(piece)) for piece in _split_joined_lungs(comp, m)]
        else:
            candidates.append((comp, filled))
    kept: list[np.ndarray] = []
    for comp, filled in candidates:
        if _is_outside_air(comp, filled):
            continue
        if (comp & corners).any() and ndi.distance_transform_edt(comp).max() < 0.08 * m:
            continue  # a thin wedge of outside air in a corner of a tight crop
        kept.append(filled)
        if len(kept) == 2:
            break
    if len(kept) == 2 and kept[1].sum() < MIN_SECOND_LUNG * kept[0].sum():
        kept = kept[:1]
    for filled in kept:
        out |= filled
    return out


def lung_field(volume: Volume) -> np.ndarray:
    """Lung field (S, H, W): the classical HU segmentation, or the 8-bit estimate slice by slice."""
    if volume.is_hu:
        return segment_lungs(volume)
    return np.stack([estimate_lung_field(volume.slice(i)) for i in range(volume.n_slices)])
