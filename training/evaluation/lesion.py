"""Lesion Dice of a model's learned lesion map on held-out slices, on each slice's own pixel grid.

The map comes from ``ctmodels.inference.lesion_map`` (the API the app and any external evaluation call),
thresholded at 0.5 (where it is drawn: the card's map cut), against the slice's infection mask; the mean over
slices with a lesion is what Inf-Net reports for its 48-slice test split (Dice 0.682 Inf-Net, 0.739 Semi-Inf-Net).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ctmodels.datasets import Case
from ctmodels.imaging.lung_field import lung_field
from ctmodels.inference import lesion_map, load_model

from .cam import slices_with_lesions


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    total = int(pred.sum()) + int(truth.sum())
    return 1.0 if total == 0 else 2.0 * float((pred & truth).sum()) / total


def lesion_dice_on_cases(model_dir: Path, cases: list[Case]) -> dict[str, Any]:
    """Mean Dice over ``cases`` (2-D slices with a non-empty mask); ``{"n": 0}`` for a model without a head."""
    lm = load_model(model_dir)
    if not lm.has_lesion_map:
        return {"n": 0}
    scores: dict[str, float] = {}
    for case, vol, truth in slices_with_lesions(cases):
        scores[case.case_id] = dice(lesion_map(lm, vol, lung_field(vol), 0) >= 0.5, truth)
    if not scores:
        return {"n": 0}
    return {"n": len(scores), "mean": float(np.mean(list(scores.values()))), "per_case": scores}
