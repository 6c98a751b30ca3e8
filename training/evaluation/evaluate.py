"""Evaluation at slice and patient level, temperature scaling, and the eval.json a run writes.

Patient-level verdict: the lung-area-weighted mean of calibrated P(severe) over the patient's lung
slices, severe when ≥ 0.5. Weighting by lung area makes it estimate the share of lung *volume* in
severe slices, which is what the mild/severe rule (% of lung involved) is about.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score, roc_curve
from torch.utils.data import DataLoader

from ctmodels.inference import patient_score
from ctmodels.preprocess import Preprocessing, lesion_areas, network_outputs
from ctmodels.verdict import VerdictRule, involvement_logit, sigmoid

from ..data.prepare import Prepared, SliceDataset

SPLITS = {"train": 0, "val": 1, "test": 2}


@torch.no_grad()
def predict_outputs(
    model: torch.nn.Module, data: Prepared, indices: np.ndarray, pre: Preprocessing, device: torch.device,
    batch_size: int = 64, channels_last: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Class logits (n, 2) and, for a net with a lesion head, lesion probabilities (n, S, S) in the network's
    frame, scored as the app scores (flips averaged when the preprocessing says so)."""
    model.eval()
    loader = DataLoader(SliceDataset(data, indices, pre, None), batch_size=batch_size, shuffle=False)
    logits, maps = [], []
    for x, *_ in loader:
        x = x.to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        lg, les = network_outputs(model, x, pre)
        logits.append(lg.float().cpu())
        if les is not None:
            maps.append(les.float().cpu().numpy())
    head = torch.cat(logits).numpy() if logits else np.zeros((0, 2), np.float32)
    return head, (np.concatenate(maps) if maps else None)


def predict_logits(
    model: torch.nn.Module, data: Prepared, indices: np.ndarray, pre: Preprocessing, device: torch.device,
    batch_size: int = 64, channels_last: bool = False,
) -> np.ndarray:
    return predict_outputs(model, data, indices, pre, device, batch_size, channels_last)[0]


def learned_involvement(data: Prepared, indices: np.ndarray, lesion: np.ndarray | None) -> np.ndarray | None:
    """Learned involvement % per slice: lesion area over lung, in slice pixels (``ctmodels.preprocess.lesion_areas``)."""
    if lesion is None or data.fields is None or data.areas is None:
        return None
    les, lung = lesion_areas(lesion, data.fields[indices].astype(np.float32) / 255.0,
                             data.areas[indices].astype(np.float32))
    return 100.0 * les / np.maximum(lung, 1e-6)


def lesion_dice(data: Prepared, indices: np.ndarray, lesion: np.ndarray | None, cut: float = 0.5) -> np.ndarray | None:
    """Per-slice Dice of the lesion map thresholded at ``cut`` against the mask, in the network's frame (NaN
    without a mask or where neither has a lesion). The slice-grid Dice of held-out doctor masks is
    ``training.recipes.cv``'s."""
    if lesion is None or data.lesions is None:
        return None
    pred = lesion >= cut
    truth = data.lesions[indices] >= 128
    inter = (pred & truth).sum(axis=(1, 2))
    total = pred.sum(axis=(1, 2)) + truth.sum(axis=(1, 2))
    out = np.where(total > 0, 2.0 * inter / np.maximum(total, 1), np.nan)
    out[~data.has_lesion[indices]] = np.nan
    return out


#: Where the map's cut is looked for (``fit_map_cut``).
MAP_CUTS = np.round(np.arange(0.05, 0.951, 0.05), 2)


def fit_map_cut(lesion: np.ndarray, truth: np.ndarray, area: np.ndarray) -> dict[str, Any]:
    """The lesion probability at which the map best outlines the masks (Dice over all ``lesion``/``truth`` pixels
    at once, each weighted by the slice pixels it stands for), and how it did; {} without a lesion in ``truth``.

    The learned area is calibrated as a sum of probabilities (``lesion_bias``); thresholded at 0.5 that map
    marks too little (the patient folds of the real-CT recipe: validation Dice peaked at 0.1–0.2). One
    overlap for all slices, as the Dice loss takes it, so slices with a few lesion pixels do not each swing it."""
    t = truth >= 0.5
    if not t.any():
        return {}
    w = area.astype(np.float64)
    mass = float((w * t).sum())

    def dice(cut: float) -> float:
        p = lesion >= cut
        return 2.0 * float((w * (p & t)).sum()) / (float((w * p).sum()) + mass)

    scores = {float(c): dice(float(c)) for c in MAP_CUTS}
    best = max(scores, key=scores.__getitem__)
    return {"cut": best, "validation_dice": round(scores[best], 4), "validation_dice_at_0.5": round(dice(0.5), 4),
            "chosen_by": "the best Dice against the validation split's masks (network frame)"}


def fit_temperature(logits: np.ndarray, targets: np.ndarray) -> float:
    """Temperature scaling (Guo et al. 2017) on validation logits: one scalar, NLL minimised.

    ``targets``: P(severe) the model was trained towards (the 0/1 labels, or soft involvement
    targets). Fitting soft-target models against hard labels would sharpen them until every mild
    slice reads 0 % and the involvement they learned is lost.
    """
    hard = np.round(targets)
    if len(targets) < 4 or len(set(hard.tolist())) < 2 and np.allclose(targets, hard):
        return 1.0
    z = torch.tensor(logits, dtype=torch.float64)
    t = torch.tensor(np.asarray(targets, dtype=np.float64))
    y = torch.stack([1 - t, t], dim=1)
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=100)

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(log_t.exp().item())
    return float(min(max(t, 0.05), 20.0))


#: A calibration or a cut is fitted only on a validation split with at least this many slices of each class;
#: otherwise the identity and P = 0.5 stay (a fit to two severe slices moved every verdict of a fold).
MIN_PER_CLASS = 5


def lesion_bias(lesion: np.ndarray, truth: np.ndarray, area: np.ndarray | None = None) -> float:
    """The logit shift that makes the learned lesion area equal the masks' area over validation slices.

    A segmentation trained with BCE + Dice on small, mostly mild lesions under-segments (measured: 30-40 %
    less area than the masks), which biases the learned involvement, hence every verdict, towards mild. One
    shift of the lesion logits (folded into the head's output bias) removes that bias; it is fitted on all
    validation slices with a mask, mild ones included, so it needs no severe slice."""
    w = np.ones_like(lesion) if area is None else area
    target = float((truth * w).sum())
    if target <= 0 or lesion.size == 0:
        return 0.0
    z = np.log(np.clip(lesion, 1e-6, 1 - 1e-6) / np.clip(1 - lesion, 1e-6, 1.0))
    lo, hi = -4.0, 4.0
    for _ in range(40):
        mid = (lo + hi) / 2
        if float((w / (1 + np.exp(-(z + mid)))).sum()) < target:
            lo = mid
        else:
            hi = mid
    return float((lo + hi) / 2)


def fit_platt(score: np.ndarray, targets: np.ndarray, labels: np.ndarray | None = None) -> tuple[float, float]:
    """(a, b) with P = σ(a·score + b) closest (cross-entropy) to the targets the model learned; (1, 0) when the
    validation split cannot support a fit (fewer than ``MIN_PER_CLASS`` slices of a class). For a learned
    involvement score the identity already matches the soft targets' scale."""
    hard = np.round(targets) if labels is None else np.asarray(labels)
    if min(int((hard == 1).sum()), int((hard == 0).sum())) < MIN_PER_CLASS:
        return 1.0, 0.0
    z = torch.tensor(np.asarray(score, dtype=np.float64))
    t = torch.tensor(np.asarray(targets, dtype=np.float64))
    ab = torch.tensor([1.0, 0.0], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([ab], lr=0.1, max_iter=200)

    def closure():
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits(ab[0] * z + ab[1], t)
        loss.backward()
        return loss

    opt.step(closure)
    a, b = (float(v) for v in ab.detach())
    if not (0.05 <= a <= 20.0) or not np.isfinite(b):
        return 1.0, 0.0
    return a, b


#: The verdict's cut is looked for within this range of P(severe) (an extreme cut fitted to a handful of
#: validation slices would not transfer).
CUT_RANGE = (0.1, 0.9)


def verdict_rates(severe: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Accuracy, sensitivity and specificity of per-slice verdicts (None without that class)."""
    tp, tn = int((severe & (labels == 1)).sum()), int((~severe & (labels == 0)).sum())
    npos, nneg = int((labels == 1).sum()), int((labels == 0).sum())
    return {"accuracy": (tp + tn) / max(len(labels), 1),
            "sensitivity": tp / npos if npos else None, "specificity": tn / nneg if nneg else None}


def rates_at(p_severe: np.ndarray, labels: np.ndarray, cut: float) -> dict[str, Any]:
    """How a cut does on labelled slices: n, severe, sensitivity and specificity (None without that class)."""
    p, y = np.asarray(p_severe, float), np.asarray(labels).astype(int)
    p, y = p[y >= 0], y[y >= 0]
    rates = verdict_rates(p >= cut, y)
    return {"n": int(len(y)), "severe": int((y == 1).sum()),
            "sensitivity": rates["sensitivity"], "specificity": rates["specificity"]}


def choose_cut(p_severe: np.ndarray, labels: np.ndarray) -> tuple[float, dict[str, Any]]:
    """The operating point: the cut on P(severe) that maximises Youden's J (sensitivity + specificity − 1) on
    validation slices, ties to the cut nearest 0.5; 0.5 when the split lacks one class. Returns the cut and
    how it did there."""
    p, y = np.asarray(p_severe, float), np.asarray(labels).astype(int)
    known = y >= 0
    p, y = p[known], y[known]
    npos, nneg = int((y == 1).sum()), int((y == 0).sum())
    if min(npos, nneg) < MIN_PER_CLASS:
        return 0.5, {**rates_at(p, y, 0.5), "note": f"fewer than {MIN_PER_CLASS} slices of a class: cut left at 0.5"}
    lo, hi = CUT_RANGE
    mids = (np.sort(np.unique(p))[:-1] + np.sort(np.unique(p))[1:]) / 2 if len(np.unique(p)) > 1 else np.array([])
    cands = np.unique(np.r_[0.5, mids[(mids >= lo) & (mids <= hi)]])
    sens = np.array([((p >= c) & (y == 1)).sum() / npos for c in cands])
    spec = np.array([((p < c) & (y == 0)).sum() / nneg for c in cands])
    j = sens + spec - 1.0
    best = np.nonzero(j >= j.max() - 1e-9)[0]
    k = best[np.argmin(np.abs(cands[best] - 0.5))]
    return float(cands[k]), rates_at(p, y, float(cands[k]))


def balanced_logistic_cut(score: np.ndarray, labels: np.ndarray) -> float | None:
    """The score at which a class-balanced logistic fit of the labels on the score crosses one half: what
    Youden's J aims at (each class weighs the same), fitted on every slice instead of read off the one step of
    the ROC where J peaks. With a few dozen severe slices that step jumps with whichever patients are in; a
    patient bootstrap of the recipe's out-of-fold points spreads 1.5-1.9 points of involvement this way against
    2.1-3.7 for J's peak (docs/real_ct.md, "A steadier operating point"). None when the score does not rise
    with severity."""
    fit = LogisticRegression(class_weight="balanced", C=100.0).fit(np.asarray(score, float).reshape(-1, 1), labels)
    slope, intercept = float(fit.coef_[0, 0]), float(fit.intercept_[0])
    return -intercept / slope if slope > 0 else None


def involvement_operating_point(learned_pct: np.ndarray, labels: np.ndarray,
                                threshold_pct: float) -> tuple[float, dict[str, Any]]:
    """The learned involvement (% of lung) at which a verdict should turn severe: ``balanced_logistic_cut`` on
    the lesion score's own scale (logit r − logit t), kept within ``CUT_RANGE`` of P = σ(logit r − logit t)
    (r ≈ 3.6–75 % at t = 25 %) and mapped back to a percentage; Youden's J (``choose_cut``) where the score does
    not rise with severity, and the threshold itself with under ``MIN_PER_CLASS`` slices of a class. Meant for
    out-of-fold predictions, where large lesions are as under-covered as on a new patient
    (``training.recipes.cv``)."""
    learned, y = np.asarray(learned_pct, float), np.asarray(labels).astype(int)
    score = involvement_logit(learned[y >= 0], threshold_pct)
    y = y[y >= 0]
    p = sigmoid(score)
    enough = min(int((y == 1).sum()), int((y == 0).sum())) >= MIN_PER_CLASS
    z = balanced_logistic_cut(score, y) if enough else None
    if z is None:
        cut, how = choose_cut(p, y)
    else:
        cut = float(np.clip(sigmoid(z), *CUT_RANGE))
        how = rates_at(p, y, cut)
    t = threshold_pct / 100.0
    op = 100.0 / (1.0 + np.exp(-(np.log(cut / (1 - cut)) + np.log(t / (1 - t)))))
    return float(op), how


def fit_rule(score: str, logits: np.ndarray, involvement: np.ndarray | None, targets: np.ndarray,
             labels: np.ndarray, threshold_pct: float) -> VerdictRule:
    """The card's verdict rule, fitted on validation outputs: calibration, then the cut (``ctmodels.verdict``)."""
    if score != "head" and involvement is None:
        score = "head"
    rule = VerdictRule(score=score, threshold_pct=threshold_pct)
    if score == "head":
        rule.a = 1.0 / fit_temperature(logits, targets) if len(logits) else 1.0
    else:
        rule.a, rule.b = fit_platt(rule.raw(logits, involvement), targets, labels) if len(logits) else (1.0, 0.0)
    if len(logits):
        rule.cut, rule.validation = choose_cut(rule.p_severe(logits, involvement), labels)
    return rule


def softmax_severe(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = torch.tensor(logits, dtype=torch.float64) / temperature
    return torch.softmax(z, dim=1)[:, 1].numpy()


def expected_calibration_error(p_severe: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    conf = np.maximum(p_severe, 1 - p_severe)
    pred = (p_severe >= 0.5).astype(int)
    edges = np.linspace(0.5, 1.0, bins + 1)
    ece = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi) if lo > 0.5 else (conf >= lo) & (conf <= hi)
        if m.any():
            ece += m.mean() * abs((pred[m] == labels[m]).mean() - conf[m].mean())
    return float(ece)


def auc(labels: np.ndarray | list[int], scores: np.ndarray | list[float]) -> float | None:
    """ROC AUC, or None when only one class is present (a fold, a source or a series can hold one)."""
    labels = np.asarray(labels)
    return float(roc_auc_score(labels, scores)) if len(set(labels.tolist())) == 2 else None


def binary_metrics(p_severe: np.ndarray, labels: np.ndarray, threshold: float = 0.5) -> dict[str, Any]:
    """Accuracy, precision, recall (sensitivity), specificity, F1, ROC-AUC, confusion, ECE."""
    labels = np.asarray(labels).astype(int)
    pred = (np.asarray(p_severe) >= threshold).astype(int)
    tp = int(((pred == 1) & (labels == 1)).sum())
    tn = int(((pred == 0) & (labels == 0)).sum())
    fp = int(((pred == 1) & (labels == 0)).sum())
    fn = int(((pred == 0) & (labels == 1)).sum())
    n = len(labels)

    def ratio(a: int, b: int) -> float | None:
        return None if b == 0 else a / b

    precision, recall = ratio(tp, tp + fp), ratio(tp, tp + fn)
    f1 = None if not precision or not recall else 2 * precision * recall / (precision + recall)
    return {
        "n": n,
        "accuracy": ratio(tp + tn, n),
        "precision": precision,
        "recall": recall,
        "specificity": ratio(tn, tn + fp),
        "f1": f1,
        "roc_auc": auc(labels, p_severe),
        "ece": expected_calibration_error(np.asarray(p_severe), labels) if n else None,
        "confusion": {"tp": tp, "tn": tn, "fp": fp, "fn": fn},
    }


def patient_scores(p_severe: np.ndarray, patients: np.ndarray, lung_area: np.ndarray) -> dict[str, float]:
    """Each patient's P(severe), aggregated as the app aggregates a scan (``ctmodels.inference.patient_score``)."""
    return {str(p): patient_score(p_severe[patients == p], lung_area[patients == p]) for p in np.unique(patients)}


def evaluate(
    model: torch.nn.Module, data: Prepared, pre: Preprocessing, device: torch.device, rule: VerdictRule | float,
    split: str = "test", channels_last: bool = False, map_cut: float = 0.5,
) -> dict[str, Any]:
    """Slice- and patient-level metrics on one split ('all' = every labelled slice), at the rule's cut.

    ``rule``: the model's verdict rule (a bare float is a temperature for the classification head, as
    cards without a rule have); ``map_cut``: where its lesion map marks lesion (the card's ``lesion_map``)."""
    if not isinstance(rule, VerdictRule):
        rule = VerdictRule("head", 1.0 / float(rule), 0.0, 0.5)
    idx = np.nonzero(data.labels >= 0)[0] if split == "all" else data.subset(SPLITS[split])
    logits, lesion = predict_outputs(model, data, idx, pre, device, channels_last=channels_last)
    learned = learned_involvement(data, idx, lesion)
    p = rule.p_severe(logits, learned) if len(idx) else np.zeros(0)
    y = data.labels[idx]
    res: dict[str, Any] = {"split": split, "temperature": 1.0 / rule.a if rule.score == "head" else None,
                           "rule": rule.to_dict(), "slice": binary_metrics(p, y, rule.cut)}
    if len(set(y.tolist())) == 2:
        fpr, tpr, _ = roc_curve(y, p)
        res["slice"]["roc"] = {"fpr": _thin(fpr), "tpr": _thin(tpr)}
    scores = patient_scores(p, data.patients[idx], data.lung_area[idx])
    plabels, pscores, pids = [], [], []
    for pid, s in scores.items():
        cases = set(data.cases[idx][data.patients[idx] == pid].tolist())
        lab = max((data.case_labels.get(c, -1) for c in cases), default=-1)
        if lab < 0:  # no patient label (slice-level datasets): majority of its slice labels
            sl = y[data.patients[idx] == pid]
            lab = int(round(sl.mean()))
        plabels.append(lab)
        pscores.append(s)
        pids.append(pid)
    pl, ps = np.array(plabels), np.array(pscores)
    res["patient"] = binary_metrics(ps, pl, rule.cut)
    if len(set(pl.tolist())) == 2:
        fpr, tpr, _ = roc_curve(pl, ps)
        res["patient"]["roc"] = {"fpr": _thin(fpr), "tpr": _thin(tpr)}
    res["patients"] = [{"patient": i, "label": int(lab), "p_severe": round(float(s), 4)}
                       for i, lab, s in zip(pids, pl, ps)]
    res["aggregation"] = (f"lung-area-weighted mean of calibrated P(severe) over lung slices; severe if >= "
                          f"{rule.cut:.3f} (the card's cut)")
    inv = data.involvement[idx]
    dice = lesion_dice(data, idx, lesion, map_cut)
    if dice is not None and np.isfinite(dice).any():
        res["lesion_dice"] = {"mean": float(np.nanmean(dice)), "n": int(np.isfinite(dice).sum()),
                              "frame": "network input", "cut": map_cut}
    res["predictions"] = {  # per slice, for pooling out-of-fold scores across cross-validation folds
        "case": data.cases[idx].tolist(), "patient": data.patients[idx].tolist(), "label": y.tolist(),
        "involvement": [None if np.isnan(v) else round(float(v), 3) for v in inv],
        "p_severe": [float(f"{v:.6g}") for v in p], "cut": rule.cut,  # significant digits: tiny P keep their order
        **({"learned_involvement": [round(float(v), 4) for v in learned]} if learned is not None else {}),
        **({"lesion_dice": [None if np.isnan(v) else round(float(v), 4) for v in dice]} if dice is not None else {}),
    }
    return res


def _thin(a: np.ndarray, n: int = 200) -> list[float]:
    if len(a) <= n:
        return [round(float(v), 5) for v in a]
    idx = np.unique(np.linspace(0, len(a) - 1, n).round().astype(int))
    return [round(float(a[i]), 5) for i in idx]


def headline(res: dict[str, Any]) -> dict[str, Any]:
    """The few numbers a run summary and a model card carry."""
    s, p = res["slice"], res["patient"]
    def r(v):
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else round(float(v), 4)
    return {
        "split": res["split"], "slice_accuracy": r(s["accuracy"]), "slice_auc": r(s["roc_auc"]),
        "slice_f1": r(s["f1"]), "slice_sensitivity": r(s["recall"]), "slice_specificity": r(s["specificity"]),
        "patient_accuracy": r(p["accuracy"]), "patient_auc": r(p["roc_auc"]),
        "ece": r(s["ece"]), "n_slices": s["n"], "n_patients": p["n"],
        **({"lesion_dice": r(res["lesion_dice"]["mean"])} if "lesion_dice" in res else {}),
    }
