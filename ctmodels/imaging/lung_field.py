"""The lung field of any slice: HU segmentation for CT values, an intensity estimate for 8-bit images.

Models crop, orient and normalise their input around the lungs, so every input needs a lung
field, including 8-bit PNG/JPG slices that carry no Hounsfield units. For those the field is
estimated from intensities alone: the dark (aerated) regions below an Otsu threshold, minus
outside air (components touching three image sides, or thin wedges in the corners, as tight
thorax crops such as the Inf-Net slices have), the two largest left, holes filled so vessels
and enclosed lesions count as lung. Dense consolidation touching the chest wall falls outside such a
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


def _sides_touched(comp: np.ndarray) -> int:
    return int(comp[0].any()) + int(comp[-1].any()) + int(comp[:, 0].any()) + int(comp[:, -1].any())


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
    kept: list[int] = []
    for k in np.argsort(sizes)[::-1][:6]:
        if k == 0 or sizes[k] < MIN_LUNG_SHARE * h * w:
            continue
        comp = lab == k
        if _sides_touched(comp) >= 3:
            continue  # outside air around the body
        if (comp & corners).any() and ndi.distance_transform_edt(comp).max() < 0.08 * m:
            continue  # a thin wedge of outside air in a corner of a tight crop
        kept.append(int(k))
        if len(kept) == 2:
            break
    if len(kept) == 2 and sizes[kept[1]] < MIN_SECOND_LUNG * sizes[kept[0]]:
        kept = kept[:1]
    for k in kept:
        out |= ndi.binary_fill_holes(lab == k)
    return out


def lung_field(volume: Volume) -> np.ndarray:
    """Lung field (S, H, W): the classical HU segmentation, or the 8-bit estimate slice by slice."""
    if volume.is_hu:
        return segment_lungs(volume)
    return np.stack([estimate_lung_field(volume.slice(i)) for i in range(volume.n_slices)])
