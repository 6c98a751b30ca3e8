"""How a model set does on a labelled dataset, every scan scored the way the Compare page scores it.

Why: a site's own scans are a source the set never saw, and a new source moves where the learned involvement
should turn a verdict severe (leaving a source out, the other sources' point sits at 7–10 % against 12–18 % by
patient; ``docs/real_ct.md``). Before relying on the verdicts, a site checks them on scans it has labelled:
how the models rank its slices, their sensitivity and specificity at the cards' point, and the point its own
data would choose. Every scan goes through ``ctmodels.assessment.assess`` (lung field, scope, served runtime),
so what is measured is what Compare shows.

Truth per slice, whatever the dataset holds: a mild/severe label and the involvement (2-D slices; volumes with
per-slice masks), or the radiologists' per-slice infection label (COVID-CT-MD); per scan, a volume's own label.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from sklearn.metrics import roc_curve

from ctmodels.assessment import assess
from ctmodels.datasets import Case, Dataset
from ctmodels.imaging import ImageReadError, read_any
from ctmodels.inference import LoadedModel
from ctmodels.verdict import sigmoid

from .evaluate import auc, balanced_logistic_cut, verdict_rates

TRUTH = ("case", "patient", "slice", "label", "involvement %", "infection")
#: Fewer labelled slices of a class than this and the data's own point is not offered (it would be noise).
MIN_PER_CLASS = 5
#: Redrawing patients says nothing when the severe slices come from fewer patients than this (every draw that holds
#: them puts the point at the same slice): no range is given, and the "severe patients" column says why.
MIN_SEVERE_PATIENTS = 3


class NothingToCheckError(ValueError):
    """The dataset holds no labelled slice or scan to check the models against."""


@dataclass
class CaseScores:
    """One case scored: a row per labelled slice, and the scan's own row (volumes with a scan label)."""

    slices: list[dict[str, Any]]
    scan: dict[str, Any] | None = None


@dataclass
class DatasetCheck:
    slices: pd.DataFrame  # one row per labelled slice: the truth, then each model's P(severe), learned %, verdict
    scans: pd.DataFrame  # one row per labelled volume: its label, each model's patient P(severe) and verdict
    summary: pd.DataFrame  # one row per model
    skipped: dict[str, str] = field(default_factory=dict)  # case → why it could not be scored


def p_col(name: str) -> str:
    return f"P(severe) · {name}"


def learned_col(name: str) -> str:
    return f"learned % · {name}"


def verdict_col(name: str) -> str:
    return f"verdict · {name}"


def slice_truth(case: Case) -> list[tuple[int, str | None, float | None, int | None]]:
    """(slice, label, involvement %, infection) of every slice of ``case`` that says something."""
    if (case.n_slices or 1) == 1 and not (case.slice_labels or case.slice_involvement or case.slice_infection):
        return [(0, case.label, case.involvement_pct, None)] if case.label or case.involvement_pct is not None else []
    n = case.n_slices or 0
    out = []
    for i in range(n):
        label = case.slice_labels[i] if case.slice_labels else None
        inv = case.slice_involvement[i] if case.slice_involvement else None
        inf = case.slice_infection[i] if case.slice_infection else None
        if label is not None or inv is not None or inf is not None:
            out.append((i, label, inv, inf))
    return out


def labelled(ds: Dataset) -> list[Case]:
    """The cases with something to check against (a labelled slice, or a labelled volume)."""
    return [c for c in ds.cases if slice_truth(c) or ((c.n_slices or 1) > 1 and c.label)]


def score_case(case: Case, models: list[LoadedModel]) -> CaseScores:
    """Read ``case`` as an upload would be read and assess it with ``models`` (raises ``ImageReadError``)."""
    vol = read_any(case.image)
    a = assess(vol, models)
    n = vol.n_slices
    p = {m.name: m.prediction.curve(n) for m in a.models}  # None where a model does not score the slice
    learned = {m.name: m.prediction.curve(n, m.prediction.involvement) if m.prediction.involvement is not None
               else [None] * n for m in a.models}
    rows = []
    for i, label, inv, inf in slice_truth(case):
        row: dict[str, Any] = dict(zip(TRUTH, (case.case_id, case.patient_id, i, label, inv, inf)))
        for m in a.models:
            pi = p[m.name][i]
            row[p_col(m.name)] = pi
            row[learned_col(m.name)] = learned[m.name][i]
            row[verdict_col(m.name)] = None if pi is None else ("severe" if pi >= m.prediction.cut else "mild")
        rows.append(row)
    scan = None
    if vol.n_slices > 1 and case.label:
        scan = {"case": case.case_id, "patient": case.patient_id, "label": case.label}
        for m in a.models:
            scan[p_col(m.name)] = m.prediction.patient_p
            scan[verdict_col(m.name)] = m.prediction.verdict
    return CaseScores(rows, scan)


def check_dataset(ds: Dataset, models: list[LoadedModel], done: dict[str, CaseScores] | None = None,
                  progress: Callable[[int, int, str], None] | None = None,
                  around: Callable[[], Any] | None = None) -> DatasetCheck:
    """Score every labelled case of ``ds`` with ``models`` and summarise (module docstring).

    ``done``: cases already scored (by case id), kept and skipped, and filled as cases finish, so a run that is
    interrupted resumes where it stopped. ``progress(k, n, case_id)`` hears before each case. ``around``: a
    context manager factory held while one case is scored (the app's whole-scan slot)."""
    cases = labelled(ds)
    if not cases:
        raise NothingToCheckError(
            f"{ds.name} has no labelled slice or scan (no labels, masks or per-slice findings) to check the models "
            "against")
    done = {} if done is None else done
    skipped: dict[str, str] = {}
    for k, case in enumerate(cases):
        if case.case_id in done:
            continue
        if progress:
            progress(k, len(cases), case.case_id)
        try:
            with (around or nullcontext)():
                done[case.case_id] = score_case(case, models)
        except (ImageReadError, OSError, ValueError) as exc:
            skipped[case.case_id] = str(exc)
    scored = [done[c.case_id] for c in cases if c.case_id in done]
    slices = pd.DataFrame([r for s in scored for r in s.slices])
    scans = pd.DataFrame([s.scan for s in scored if s.scan])
    return DatasetCheck(slices, scans, summarise(slices, scans, models), skipped)


def summarise(slices: pd.DataFrame, scans: pd.DataFrame, models: list[LoadedModel]) -> pd.DataFrame:
    """One row per model: ranking, the card's point and this data's own point (``MIN_PER_CLASS``)."""
    return pd.DataFrame([_model_row(lm, slices, scans) for lm in models])


def _model_row(lm: LoadedModel, slices: pd.DataFrame, scans: pd.DataFrame) -> dict[str, Any]:
    row: dict[str, Any] = {"model": lm.name}
    if len(slices) and p_col(lm.name) in slices:
        got = slices[slices[p_col(lm.name)].notna()]
        p = got[p_col(lm.name)].to_numpy(float)
        learned = pd.to_numeric(got[learned_col(lm.name)], errors="coerce").to_numpy(float)
        row["slices scored"] = len(got)
        row["patients"] = int(got["patient"].nunique())  # what a point chosen here rests on
        known = got["label"].isin(["mild", "severe"]).to_numpy()
        y = (got["label"] == "severe").to_numpy(int)[known]
        row["severe"] = int(y.sum()) if known.any() else None  # None: no mild/severe labels (findings only)
        severe_patients = got["patient"].to_numpy()[known][y == 1]
        row["severe patients"] = int(len(set(severe_patients.tolist()))) if known.any() else None
        row["AUC"] = auc(y, p[known])
        inv = pd.to_numeric(got["involvement %"], errors="coerce").to_numpy(float)
        score = p if np.isnan(learned).any() else learned  # the learned involvement where every slice has one
        has = ~np.isnan(inv)
        row["Spearman ρ (involvement)"] = (float(spearmanr(inv[has], score[has])[0])
                                           if has.sum() > 2 and np.ptp(inv[has]) > 0 else None)
        row["sensitivity"], row["specificity"] = _rates((got[verdict_col(lm.name)] == "severe").to_numpy()[known], y)
        row["card's point"] = point_text(lm, lm.rule.cut)
        own = own_cut(p[known], y)
        row["this data's cut"] = own
        row["this data's point"] = None if own is None else point_text(lm, own)
        enough = own is not None and row["severe patients"] >= MIN_SEVERE_PATIENTS
        spread = point_range(p[known], y, got["patient"].to_numpy()[known]) if enough else None
        row["its 95 % range (patients redrawn)"] = None if spread is None else range_text(lm, *spread)
        row["sensitivity there"], row["specificity there"] = ((None, None) if own is None
                                                              else _rates(p[known] >= own, y))
        infected = pd.to_numeric(got["infection"], errors="coerce").to_numpy(float)
        if (~np.isnan(infected)).any():
            keep = ~np.isnan(infected)
            row["AUC (infection)"] = auc(infected[keep].astype(int), p[keep])
    if len(scans) and p_col(lm.name) in scans:
        row["scans"] = len(scans)
        row["scan accuracy"] = float((scans[verdict_col(lm.name)] == scans["label"]).mean())
    return row


def point_text(lm: LoadedModel, cut: float) -> str:
    """A cut on P(severe) in the reader's terms: the learned involvement (% of lung) it stands for, where the verdict
    comes from the learned lesion area, else the P cut."""
    pct = _as_learned_pct(lm, cut)
    return f"P ≥ {cut:.2f}" if pct is None else f"learned ≥ {pct:.1f} %"


def range_text(lm: LoadedModel, lo: float, hi: float) -> str:
    """Two cuts on P(severe) as a range in the same terms as ``point_text``."""
    a, b = _as_learned_pct(lm, lo), _as_learned_pct(lm, hi)
    return f"{lo:.2f}–{hi:.2f}" if a is None or b is None else f"{a:.1f}–{b:.1f} %"


def _as_learned_pct(lm: LoadedModel, cut: float) -> float | None:
    """The learned involvement at which P(severe) = ``cut`` (P = sigmoid(a (logit r - logit t) + b), solved for r);
    None where the verdict does not come from the learned lesion area alone."""
    rule = lm.rule
    if rule.score != "lesion" or not 0.0 < cut < 1.0:
        return None
    t = rule.threshold_pct / 100.0
    logit_r = (np.log(cut / (1 - cut)) - rule.b) / rule.a + np.log(t / (1 - t))
    return float(100.0 / (1.0 + np.exp(-logit_r)))


def point_range(p: np.ndarray, y: np.ndarray, groups: np.ndarray, reps: int = 200,
                seed: int = 0) -> tuple[float, float] | None:
    """The middle 95 % of the points ``own_cut`` chooses when the patients are drawn again with replacement: how
    much a point chosen on these patients is worth (a handful of patients moves it far). None when under half the
    draws hold enough slices of both classes."""
    rng = np.random.default_rng(seed)
    ids = np.unique(groups)
    rows = {g: np.flatnonzero(groups == g) for g in ids}
    cuts = []
    for _ in range(reps):
        pick = np.concatenate([rows[g] for g in rng.choice(ids, size=len(ids), replace=True)])
        cut = own_cut(p[pick], y[pick])
        if cut is not None:
            cuts.append(cut)
    if len(cuts) < reps // 2:
        return None
    lo, hi = np.percentile(cuts, [2.5, 97.5])
    return float(lo), float(hi)


def _rates(severe: np.ndarray, y: np.ndarray) -> tuple[float | None, float | None]:
    rates = verdict_rates(severe, y)
    return rates["sensitivity"], rates["specificity"]


def own_cut(p: np.ndarray, y: np.ndarray) -> float | None:
    """The cut on P(severe) these slices choose, the way the recipe chose the card's point (a class-balanced
    logistic fit on logit P, ``evaluate.balanced_logistic_cut``; where P does not rise with severity, the best
    Youden's J); None with under ``MIN_PER_CLASS`` of a class (a point chosen on a handful of slices is noise)."""
    if min(int(y.sum()), int((1 - y).sum())) < MIN_PER_CLASS:
        return None
    q = np.clip(np.asarray(p, float), 1e-6, 1 - 1e-6)
    z = balanced_logistic_cut(np.log(q / (1 - q)), y)
    if z is not None:
        return float(sigmoid(z))
    fpr, tpr, thresholds = roc_curve(y, p)
    finite = np.isfinite(thresholds)
    k = int(np.argmax(np.where(finite, tpr - fpr, -np.inf)))
    return float(thresholds[k])
