"""The one place a scan is assessed: ``assess(volume, models) -> Assessment``.

An assessment decides, once: the lung field (the HU segmentation, or the 8-bit estimate), the classical
HU involvement, which slices each model may score (its card's ``min_lung_share``), every model's per-slice
and patient P(severe) and verdict at its own card's cut (``ctmodels.verdict``), the learned involvement
of models with a lesion head, and why a reader should not rely on it. Per slice, on demand
(``Assessment.at``): each model's verdict, Grad-CAM and learned lesion map on the slice's own grid, and
how the models' CAMs agree. The Compare page renders an ``Assessment``; the COVID-CT-MD evaluation, the
CAM evaluation, the benchmark's Compare timing and every exporter (CSV, PNG) read the same object, so a
new per-slice output is added here and in its renderer only.

Each model's lock is held while it explains, and while it predicts in PyTorch, so browser sessions sharing
cached models never see each other's hooks or gradients (a served model predicts without it).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np

from .explain import DEFAULT_METHOD, agreement, cam_batch, mass_inside, target_layer_name
from .imaging import Volume
from .imaging.lung import Involvement, involvement
from .imaging.lung_field import lung_field
from .imaging.packed import PackedMask
from .inference import (
    LoadedModel,
    VolumePrediction,
    in_scope,
    predict_volume,
    prepare_input,
    prepare_scan,
    score,
    score_side_by_side,
    volume_prediction,
)
from .preprocess import to_slice

#: P(severe) this close to a model's cut (either side) is low confidence.
UNSURE_MARGIN = 0.15
MIN_LUNG_ML = 300.0  # a chest CT shows litres of lung; less means not a chest CT (or not the lungs)
#: "Most severe slice" looks at representative slices only: apex and base crescents below this share of the
#: largest lung section are noisy.
REPRESENTATIVE_SHARE = 0.25


@dataclass
class ModelResult:
    """One model over the whole scan."""

    model: LoadedModel = field(repr=False)
    prediction: VolumePrediction

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def key(self) -> str:
        return self.model.key

    @property
    def cut(self) -> float:
        return self.prediction.cut

    @property
    def learned_8bit(self) -> bool:
        """Whether it learned from 8-bit (pre-windowed) slices, so 8-bit inputs are in its scope."""
        return str((self.model.card.trained_on or {}).get("values", "")).startswith("8-bit")


@dataclass
class SliceResult:
    """One model on one slice."""

    model: str
    key: str
    p_severe: float
    verdict: str  # at the model's cut
    cut: float
    seconds: float
    cam: np.ndarray | None  # (H, W) on the slice, [0, 1]; None when the view was asked without CAMs
    cam_in_lung: float | None
    cam_layer: str
    explained: str  # which class the CAM explains
    in_scope: bool
    lesion: np.ndarray | None = None  # (H, W) learned lesion map on the slice, as drawn (lesion-head models)
    involvement: float | None = None  # learned involvement of this slice, % of its lung
    seen: np.ndarray | None = None  # (H, W) bool: the slice pixels the network's input covers (its lung boxes)
    map_cut: float = 0.5  # the lesion probability its map marks lesion at (drawn at 0.5; ``ModelCard.lesion_map``)


@dataclass
class SliceAssessment:
    index: int
    results: list[SliceResult]
    agreement: dict[tuple[str, str], tuple[float | None, float | None]] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)  # refer / out of scope; empty when none
    seconds: float = 0.0


@dataclass
class Assessment:
    """A scan assessed by several models (module docstring)."""

    volume: Volume = field(repr=False)
    lung: np.ndarray | PackedMask | None = field(repr=False)  # bool (S, H, W), or as bits
    classical: Involvement | None
    models: list[ModelResult]
    seconds: float = 0.0

    @property
    def n_slices(self) -> int:
        return self.volume.n_slices

    @property
    def is_volume(self) -> bool:
        return self.volume.n_slices > 1

    def result(self, name: str) -> ModelResult:
        return next(m for m in self.models if m.name == name)

    def curves(self) -> dict[str, list[float | None]]:
        """Per-slice P(severe) of every model (None where a model does not score the slice)."""
        return {m.name: m.prediction.curve(self.n_slices) for m in self.models}

    def involvement_curves(self) -> dict[str, list[float | None]]:
        """Per-slice learned involvement % of every model that has a lesion head."""
        return {m.name: m.prediction.curve(self.n_slices, m.prediction.involvement)
                for m in self.models if m.prediction.involvement is not None}

    def largest_lung_slice(self) -> int:
        return largest_lung_slice(self.volume, self.lung)

    def most_severe_slice(self) -> int:
        """Where the models' mean per-slice P(severe) peaks, among representative slices."""
        curves = np.array([[np.nan if v is None else v for v in c] for c in self.curves().values()], float)
        if curves.size == 0 or not np.isfinite(curves).any():
            return self.largest_lung_slice()
        mean = np.array([np.nan if np.isnan(c).all() else np.nanmean(c) for c in curves.T])
        if self.lung is not None:
            area = self.lung.sum(axis=(1, 2))
            mean[area < REPRESENTATIVE_SHARE * max(area.max(), 1)] = np.nan
        return int(np.nanargmax(mean)) if np.isfinite(mean).any() else self.largest_lung_slice()

    def at(self, index: int, method: str = DEFAULT_METHOD, explain: str = "predicted", cams: bool = True) -> SliceAssessment:
        """Slice ``index``: every model's verdict, CAM and lesion map on the slice, their agreement, refer reasons.
        ``cams=False``: verdicts, lesion maps and reasons only (no gradients: what a page shows first under load)."""
        t0 = time.perf_counter()
        shape = self.volume.shape[1:]
        lung_i = self.lung[index] if self.lung is not None and self.lung[index].any() else None
        results = []
        for m in self.models:
            ts = time.perf_counter()
            lm = m.model
            with lm.scoring_lock():
                inp = prepare_input(lm, self.volume, [index], self.lung)
                scored = score(lm, inp)
            p = float(scored.p_severe[0])
            verdict = lm.rule.verdict(p)
            # "predicted": the class of the verdict shown (from the lesion area for lesion models), not the head's
            target = verdict if explain == "predicted" else explain
            maps = None
            if cams:
                with lm.lock:
                    maps = cam_batch(lm, inp.tensor, [list(lm.card.class_names).index(target)], method)[0]
            lesion = None if scored.lesion is None else np.clip(to_slice(scored.lesion[0], inp.boxes[0], shape), 0, 1)
            inv = None if scored.involvement is None else float(scored.involvement[0])
            cam = None if maps is None else to_slice(maps[0], inp.boxes[0], shape)
            seen = to_slice(np.ones(inp.tensor.shape[-2:], np.float32), inp.boxes[0], shape) > 0.5
            results.append(SliceResult(
                lm.name, lm.key, p, verdict, lm.rule.cut, time.perf_counter() - ts, cam,
                mass_inside(cam, lung_i) if lung_i is not None and cam is not None else None,
                target_layer_name(lm.model, lm.pre.size), target, in_scope(lm, self.lung, index), lesion, inv, seen,
                lm.card.map_cut))
        agree = {}
        for a, b in combinations(results if cams else [], 2):
            g = agreement(a.cam, b.cam, lung_i)
            agree[(a.model, b.model)] = (g.pearson, g.top20_iou)
        out = SliceAssessment(index, results, agree)
        out.reasons = self.refer_reasons(out)
        out.seconds = time.perf_counter() - t0
        return out

    def refer_reasons(self, view: SliceAssessment) -> list[str]:
        """Why a reader should not rely on these outputs ("refer / out of scope"); empty when none."""
        vol, lung = self.volume, self.lung
        out = []
        outside = [r.model for r in view.results if not r.in_scope]
        if outside:
            out.append("This slice is outside what " + ", ".join(outside) + " learned from: its lung section is "
                       "small (apex or base) and they were trained on mid-chest slices only; their slice verdicts here "
                       "are not evidence, and their patient-level verdicts leave such slices out.")
        if not vol.is_hu:
            if not all(m.learned_8bit for m in self.models):
                out.append("8-bit image without Hounsfield units: the lung window and involvement % are unavailable, "
                           "and models trained on CT values see a different input.")
            if lung is None or not lung.any():
                out.append("No lung field found in this 8-bit image: it may not be an axial chest CT slice.")
        elif lung is None or not lung.any():
            out.append("No lungs found: this does not look like a chest CT (or the lungs are out of the field of view).")
        elif vol.spacing is not None and vol.n_slices > 1:
            ml = float(lung.sum() * np.prod(vol.spacing) / 1000.0)
            if ml < MIN_LUNG_ML:
                out.append(f"Only {ml:.0f} mL of lung found: the scan may not cover the chest.")
        if len({r.verdict for r in view.results}) > 1:
            out.append("The models disagree on this slice (" + ", ".join(f"{r.model}: {r.verdict}" for r in view.results)
                       + ").")
        if self.is_volume and len({m.prediction.verdict for m in self.models}) > 1:
            out.append("The models disagree on the patient-level verdict.")
        unsure = [r.model for r in view.results if abs(r.p_severe - r.cut) < UNSURE_MARGIN]
        if self.is_volume:
            unsure += [f"{m.name} (patient)" for m in self.models if abs(m.prediction.patient_p - m.cut) < UNSURE_MARGIN]
        if unsure:
            out.append(f"Low confidence (P(severe) within {UNSURE_MARGIN:.0%} of the model's cut): "
                       + ", ".join(unsure) + ".")
        return out

    def table(self, view: SliceAssessment) -> list[dict]:
        """One row per model: the numbers the page shows and the CSV export carries."""
        rows = []
        for r in view.results:
            m = self.result(r.model)
            vp = m.prediction
            rows.append({
                "model": r.model, "kind": r.key, "slice": view.index, "slice P(severe)": round(r.p_severe, 4),
                "slice verdict": r.verdict, "cut": round(r.cut, 3),
                "slice learned involvement %": None if r.involvement is None else round(r.involvement, 2),
                "patient P(severe)": round(vp.patient_p, 4) if self.is_volume else None,
                "patient verdict": vp.verdict if self.is_volume else None,
                "scan learned involvement %": (None if vp.patient_involvement is None or not self.is_volume
                                               else round(vp.patient_involvement, 2)),
                "CAM mass in lungs": None if r.cam_in_lung is None else round(r.cam_in_lung, 3),
                "inference ms": round(r.seconds * 1000, 1),
                "trained on": (m.model.card.trained_on or {}).get("title", ""),
            })
        return rows


def largest_lung_slice(volume: Volume, lung: np.ndarray | None) -> int:
    """Where the viewer opens: the slice with the largest lung section (the middle one without a lung field)."""
    if lung is None:
        return volume.n_slices // 2
    return int(np.argmax(lung.sum(axis=(1, 2))))


def first_look(volume: Volume, models: list[LoadedModel], lung: np.ndarray | None, index: int) -> list[tuple[str, float, str]]:
    """(model, P(severe), verdict at its cut) on one slice, before the whole scan is scored: what the page shows
    first. The same inputs and runtime as the assessment's, so the values equal its per-slice ones."""
    out = []
    for lm in models:
        with lm.scoring_lock():
            p = float(score(lm, prepare_input(lm, volume, [index], lung)).p_severe[0])
        out.append((lm.name, p, lm.rule.verdict(p)))
    return out


def assess(volume: Volume, models: list[LoadedModel], lung: np.ndarray | None = None,
           classical: Involvement | None = None, progress: Callable[[float, str], None] | None = None) -> Assessment:
    """Assess ``volume`` with ``models`` (module docstring). ``lung``/``classical``: pass them when already
    computed (the app caches both per scan); otherwise they are computed here, the classical involvement
    for HU scans only. ``progress(fraction, text)`` hears before each model scores the scan."""
    t0 = time.perf_counter()
    if lung is None:
        lung = lung_field(volume)
    if classical is None and volume.is_hu and lung is not None and lung.any():
        classical = involvement(volume, np.asarray(lung, bool))
    say = progress or (lambda fraction, text: None)
    say(0.0, "Preparing every lung slice…")
    prepared: dict = {}  # models that prepare their input alike prepare the scan once
    inputs = [prepare_scan(lm, volume, lung, prepared) for lm in models]
    done: dict[int, ModelResult] = {}

    def finished(k: int, result: ModelResult) -> None:  # progress from this thread: a page's widgets live here
        done[k] = result
        say(0.1 + 0.9 * len(done) / len(models), f"Scored with {len(done)} of {len(models)} models "
            f"({result.name}: {result.prediction.seconds:.1f} s on {result.model.runtime})")

    say(0.1, f"Scoring every lung slice with {len(models)} models…")
    # Served (ONNX Runtime) models score side by side, a share of every model on every core: each session runs
    # one intra-op thread (``ctmodels.serving``), and one-thread runs side by side beat two-thread ones in turn.
    # Eager models score in turn: each PyTorch pass already uses every core, and two at once make their OpenMP
    # threads spin against each other (measured: the test suite, all eager, 8 -> 16 min).
    if all(lm.served is not None for lm in models):
        for k, scores, seconds in score_side_by_side(models, inputs, os.cpu_count() or 1):
            finished(k, ModelResult(models[k], volume_prediction(models[k], inputs[k], scores, lung, seconds)))
    else:
        for k, lm in enumerate(models):
            with lm.scoring_lock():
                finished(k, ModelResult(lm, predict_volume(lm, volume, lung, prepared)))
    results = [done[k] for k in range(len(models))]
    return Assessment(volume, lung, classical, results, time.perf_counter() - t0)

