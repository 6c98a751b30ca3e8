"""Artefacts in model-made infection masks: blobs on the image's edge, outside the lung.

Why: the COVID-19-CT-Seg masks were drawn by a model (Semi-Inf-Net pseudo-labels), and on some patients it
marked the crop's edge: on radiopaedia.org patient 10 (226 slices) most of the mask area of 88 slices is a
blob on the image border, in the chest wall or outside the body. The involvement derived from those masks
counts it as lesion, so a model that marks only the lung's lesions is scored as reading that patient too low
(docs/real_ct.md, "Mask artefacts"). Doctor-made masks (MedSeg) are left as they are: their lesions may touch
a tight crop's edge where the 8-bit lung field misses consolidated lung.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from skimage.measure import label
from skimage.morphology import convex_hull_image, dilation, disk

from ctmodels.datasets import Case
from ctmodels.datasets.loading import load_case, load_masks
from ctmodels.imaging import ImageReadError
from ctmodels.imaging.lung_field import lung_field

#: How far outside the lung field (pixels, on top of its convex hull) a mask component may lie and still be lung.
MARGIN_PX = 8


def edge_artefacts(mask: np.ndarray, field: np.ndarray, margin: int = MARGIN_PX) -> np.ndarray:
    """The components of ``mask`` (2-D bool) that touch the image border and lie mostly (over half their area)
    outside the lung: the convex hull of ``field`` grown by ``margin`` pixels. No field: nothing can be told."""
    out = np.zeros(mask.shape, bool)
    if not mask.any() or not field.any():
        return out
    lung = convex_hull_image(field) | dilation(field.astype(bool), disk(margin))
    parts = label(mask)
    for k in set(np.unique(np.concatenate([parts[0], parts[-1], parts[:, 0], parts[:, -1]]).tolist())) - {0}:
        comp = parts == k
        if (comp & lung).sum() * 2 < comp.sum():
            out |= comp
    return out


def artefact_free(involvement_pct: float, share: float) -> float:
    """The involvement once a ``share`` of the mask's area is dropped: the derived labels' lung estimate holds the
    whole mask (infected lung is bright, so the mask is added to the dark field), so it loses that area too."""
    t = involvement_pct / 100.0
    return 100.0 * t * (1.0 - share) / max(1.0 - t * share, 1e-9)


def artefact_shares(cases: Iterable[Case]) -> dict[str, float]:
    """case id → the share of its mask's area in edge artefacts, for single slices with a model-made mask."""
    out: dict[str, float] = {}
    for case in cases:
        if case.n_slices != 1 or case.lesion_mask is None or not case.lesion_mask_model_made:
            continue
        try:
            vol = load_case(case)
            lesion = load_masks(case, vol).lesion
        except ImageReadError:
            continue
        if lesion is None or not (mask := lesion[0] > 0).any():
            continue
        out[case.case_id] = float(edge_artefacts(mask, lung_field(vol)[0]).sum() / mask.sum())
    return out
