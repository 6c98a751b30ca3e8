"""Does a model look at the infection? Grad-CAM on severe slices against their infection masks.

For each slice: the CAM explaining 'severe', mapped back onto the slice as the Compare page does.
Two numbers, each beside what a uniform map would score (the floor to beat): how often the CAM's
peak falls inside the infection mask, and the share of the CAM's mass inside it. A uniform map on
the network input covers the lung boxes evenly, so its peak lands in the infection with
probability (infected share of the boxes), and that share is also its mass inside the infection.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ctmodels.datasets import Case
from ctmodels.explain import cam_batch
from ctmodels.imaging import ImageReadError, read_any
from ctmodels.imaging.lung_field import lung_field
from ctmodels.inference import load_model, prepare_input
from ctmodels.preprocess import to_slice


def case_lesion(case: Case, shape: tuple[int, int]) -> np.ndarray | None:
    """A 2-D case's infection mask (bool, the slice's shape), or None without a usable one."""
    if case.lesion_mask is None:
        return None
    try:
        arr = read_any(case.lesion_mask).array[0]
    except ImageReadError:
        return None
    return arr > (127 if arr.max() > 1 else 0) if arr.shape == shape else None


def cam_in_lesions(model_dir: Path, cases: list[Case], method: str = "GradCAM") -> dict[str, Any]:
    """Peak-in-infection rate and CAM mass in the infection over ``cases`` (2-D slices with masks)."""
    lm = load_model(model_dir)
    hits, floors, masses, n = 0, [], [], 0
    for case in cases:
        try:
            vol = read_any(case.image)
        except ImageReadError:
            continue
        lesion = case_lesion(case, vol.shape[1:])
        if lesion is None or not lesion.any():
            continue
        field = lung_field(vol)
        inp = prepare_input(lm, vol, [0], field)
        maps, _ = cam_batch(lm, inp.tensor, [lm.severe_index], method)
        cam = to_slice(maps[0], inp.boxes[0], vol.shape[1:])
        support = to_slice(np.ones_like(maps[0]), inp.boxes[0], vol.shape[1:]) > 0.5
        if cam.max() <= 0 or not support.any():
            continue
        n += 1
        hits += bool(lesion.flat[int(np.argmax(cam))])
        floors.append(float(lesion[support].mean()))
        masses.append(float(cam[lesion].sum() / cam.sum()))
    if n == 0:
        return {"n": 0}
    return {"n": n, "peak_in_infection": hits / n, "uniform_peak": float(np.mean(floors)),
            "mass_in_infection": float(np.mean(masses)), "uniform_mass": float(np.mean(floors)), "method": method}
