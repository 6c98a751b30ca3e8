"""Does a model look at the infection? Grad-CAM on severe slices against their infection masks.

For each slice: the CAM explaining 'severe', as the Compare page shows it (``ctmodels.assessment``).
Two numbers, each beside what a uniform map would score (the floor to beat): how often the CAM's
peak falls inside the infection mask, and the share of the CAM's mass inside it. A uniform map on
the network input covers the lung boxes evenly, so its peak lands in the infection with
probability (infected share of the boxes), and that share is also its mass inside the infection.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ctmodels.assessment import assess
from ctmodels.datasets import Case
from ctmodels.imaging import ImageReadError, Volume, read_any
from ctmodels.inference import load_model


def case_lesion(case: Case, shape: tuple[int, int]) -> np.ndarray | None:
    """A 2-D case's infection mask (bool, the slice's shape), or None without a usable one."""
    if case.lesion_mask is None:
        return None
    try:
        arr = read_any(case.lesion_mask).array[0]
    except ImageReadError:
        return None
    return arr > (127 if arr.max() > 1 else 0) if arr.shape == shape else None


def slices_with_lesions(cases: list[Case]) -> Iterator[tuple[Case, Volume, np.ndarray]]:
    """Each readable 2-D case with a non-empty infection mask: (case, its slice, the mask)."""
    for case in cases:
        try:
            vol = read_any(case.image)
        except ImageReadError:
            continue
        lesion = case_lesion(case, vol.shape[1:])
        if lesion is not None and lesion.any():
            yield case, vol, lesion


def cam_in_lesions(model_dir: Path, cases: list[Case], method: str = "GradCAM") -> dict[str, Any]:
    """Peak-in-infection rate and CAM mass in the infection over ``cases`` (2-D slices with masks)."""
    lm = load_model(model_dir)
    hits, floors, masses, n = 0, [], [], 0
    for _, vol, lesion in slices_with_lesions(cases):
        view = assess(vol, [lm]).at(0, method, explain="severe").results[0]
        cam, support = view.cam, view.seen
        if cam.max() <= 0 or support is None or not support.any():
            continue
        n += 1
        hits += bool(lesion.flat[int(np.argmax(cam))])
        floors.append(float(lesion[support].mean()))
        masses.append(float(cam[lesion].sum() / cam.sum()))
    if n == 0:
        return {"n": 0}
    return {"n": n, "peak_in_infection": hits / n, "uniform_peak": float(np.mean(floors)),
            "mass_in_infection": float(np.mean(masses)), "uniform_mass": float(np.mean(floors)), "method": method}
