"""Side-by-side comparison of several models on one slice: verdicts, calibrated probabilities,
CAMs on the slice, CAM mass inside the lungs, CAM agreement, and reasons to refer.

Each model's lock is held while it predicts and explains, so browser sessions sharing cached
models never see each other's hooks or gradients.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np

from .explain import DEFAULT_METHOD, agreement, cam_batch, mass_inside, target_layer_name, to_slice
from .imaging import Volume
from .inference import LoadedModel, calibrated, prepare_input

LOW_CONFIDENCE = (0.35, 0.65)
MIN_LUNG_ML = 300.0  # a chest CT shows litres of lung; less means not a chest CT (or not the lungs)


@dataclass
class SliceResult:
    model: str
    key: str
    p_severe: float
    verdict: str
    seconds: float
    cam: np.ndarray  # (H, W) on the slice, [0, 1]
    cam_in_lung: float | None
    cam_layer: str
    explained: str  # which class the CAM explains


@dataclass
class Comparison:
    slice_index: int
    results: list[SliceResult]
    agreement: dict[tuple[str, str], tuple[float | None, float | None]] = field(default_factory=dict)
    seconds: float = 0.0


def compare_slice(
    models: list[LoadedModel], vol: Volume, index: int, lung_mask: np.ndarray | None,
    method: str = DEFAULT_METHOD, explain: str = "predicted",
) -> Comparison:
    """Predict and explain slice ``index`` with every model; CAMs are mapped back to the slice."""
    t0 = time.perf_counter()
    shape = vol.shape[1:]
    results = []
    for lm in models:
        ts = time.perf_counter()
        with lm.lock:
            inp = prepare_input(lm, vol, [index], lung_mask)
            classes = None if explain == "predicted" else [list(lm.card.class_names).index(explain)]
            maps, logits = cam_batch(lm, inp.tensor, classes, method)
            p = float(calibrated(lm, logits)[0])
            verdict = "severe" if p >= 0.5 else "mild"
            target = verdict if explain == "predicted" else explain
            cam_small = maps[0]
        cam = to_slice(cam_small, inp.boxes[0], shape)
        in_lung = mass_inside(cam, lung_mask[index]) if lung_mask is not None and lung_mask[index].any() else None
        results.append(SliceResult(lm.name, lm.key, p, verdict, time.perf_counter() - ts, cam, in_lung,
                                   target_layer_name(lm.model, lm.pre.size), target))
    agree = {}
    within = lung_mask[index] if lung_mask is not None and lung_mask[index].any() else None
    for a, b in combinations(results, 2):
        g = agreement(a.cam, b.cam, within)
        agree[(a.model, b.model)] = (g.pearson, g.top20_iou)
    return Comparison(index, results, agree, time.perf_counter() - t0)


def refer_reasons(
    vol: Volume,
    lung_mask: np.ndarray | None,
    slice_results: list[SliceResult],
    patient_verdicts: list[str] | None = None,
    patient_p: list[float] | None = None,
    models_know_8bit: bool = False,
    outside_scope: list[str] | None = None,
) -> list[str]:
    """Why a reader should not rely on these outputs ("refer / out of scope"); empty when none.

    ``models_know_8bit``: every model learned from 8-bit (pre-windowed) slices, so an 8-bit image is
    in scope for them (only the HU involvement % is missing, which the page says).
    ``outside_scope``: models for which this slice lies outside the slices they learned from.
    """
    out = []
    if outside_scope:
        out.append("This slice is outside what " + ", ".join(outside_scope) + " learned from: its lung section is "
                   "small (apex or base) and they were trained on mid-chest slices only; their slice verdicts here "
                   "are not evidence, and their patient-level verdicts leave such slices out.")
    if not vol.is_hu:
        if not models_know_8bit:
            out.append("8-bit image without Hounsfield units: the lung window and involvement % are unavailable, "
                       "and models trained on CT values see a different input.")
        if lung_mask is None or not lung_mask.any():
            out.append("No lung field found in this 8-bit image: it may not be an axial chest CT slice.")
    elif lung_mask is None or not lung_mask.any():
        out.append("No lungs found: this does not look like a chest CT (or the lungs are out of the field of view).")
    elif vol.spacing is not None and vol.n_slices > 1:
        ml = float(lung_mask.sum() * np.prod(vol.spacing) / 1000.0)
        if ml < MIN_LUNG_ML:
            out.append(f"Only {ml:.0f} mL of lung found: the scan may not cover the chest.")
    verdicts = {r.verdict for r in slice_results}
    if len(verdicts) > 1:
        out.append("The models disagree on this slice (" + ", ".join(f"{r.model}: {r.verdict}" for r in slice_results) + ").")
    if patient_verdicts and len(set(patient_verdicts)) > 1:
        out.append("The models disagree on the patient-level verdict.")
    lo, hi = LOW_CONFIDENCE
    unsure = [r.model for r in slice_results if lo <= r.p_severe <= hi]
    unsure += [f"{r.model} (patient)" for r, p in zip(slice_results, patient_p or []) if lo <= p <= hi]
    if unsure:
        out.append(f"Low confidence (P(severe) between {lo:.0%} and {hi:.0%}): " + ", ".join(unsure) + ".")
    return out

