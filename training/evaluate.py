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
from sklearn.metrics import roc_auc_score, roc_curve
from torch.utils.data import DataLoader

from ctmodels.inference import patient_score
from ctmodels.preprocess import Preprocessing, network_logits

from .data import Prepared, SliceDataset

SPLITS = {"train": 0, "val": 1, "test": 2}


@torch.no_grad()
def predict_logits(
    model: torch.nn.Module, data: Prepared, indices: np.ndarray, pre: Preprocessing, device: torch.device,
    batch_size: int = 64, channels_last: bool = False,
) -> np.ndarray:
    model.eval()
    loader = DataLoader(SliceDataset(data, indices, pre, None), batch_size=batch_size, shuffle=False)
    out = []
    for x, *_ in loader:
        x = x.to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out.append(network_logits(model, x, pre).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 2), np.float32)


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
    auc = float(roc_auc_score(labels, p_severe)) if len(set(labels.tolist())) == 2 else None
    return {
        "n": n,
        "accuracy": ratio(tp + tn, n),
        "precision": precision,
        "recall": recall,
        "specificity": ratio(tn, tn + fp),
        "f1": f1,
        "roc_auc": auc,
        "ece": expected_calibration_error(np.asarray(p_severe), labels) if n else None,
        "confusion": {"tp": tp, "tn": tn, "fp": fp, "fn": fn},
    }


def patient_scores(p_severe: np.ndarray, patients: np.ndarray, lung_area: np.ndarray) -> dict[str, float]:
    """Each patient's P(severe), aggregated as the app aggregates a scan (``ctmodels.inference.patient_score``)."""
    return {str(p): patient_score(p_severe[patients == p], lung_area[patients == p]) for p in np.unique(patients)}


def evaluate(
    model: torch.nn.Module, data: Prepared, pre: Preprocessing, device: torch.device, temperature: float,
    split: str = "test", channels_last: bool = False,
) -> dict[str, Any]:
    """Slice- and patient-level metrics on one split ('all' = every labelled slice)."""
    idx = np.nonzero(data.labels >= 0)[0] if split == "all" else data.subset(SPLITS[split])
    logits = predict_logits(model, data, idx, pre, device, channels_last=channels_last)
    p = softmax_severe(logits, temperature)
    y = data.labels[idx]
    res: dict[str, Any] = {"split": split, "temperature": temperature, "slice": binary_metrics(p, y)}
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
    res["patient"] = binary_metrics(ps, pl)
    if len(set(pl.tolist())) == 2:
        fpr, tpr, _ = roc_curve(pl, ps)
        res["patient"]["roc"] = {"fpr": _thin(fpr), "tpr": _thin(tpr)}
    res["patients"] = [{"patient": i, "label": int(lab), "p_severe": round(float(s), 4)}
                       for i, lab, s in zip(pids, pl, ps)]
    res["aggregation"] = "lung-area-weighted mean of calibrated P(severe) over lung slices; severe if >= 0.5"
    inv = data.involvement[idx]
    res["predictions"] = {  # per slice, for pooling out-of-fold scores across cross-validation folds
        "case": data.cases[idx].tolist(), "patient": data.patients[idx].tolist(), "label": y.tolist(),
        "involvement": [None if np.isnan(v) else round(float(v), 3) for v in inv],
        "p_severe": [round(float(v), 6) for v in p],
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
        "slice_f1": r(s["f1"]), "patient_accuracy": r(p["accuracy"]), "patient_auc": r(p["roc_auc"]),
        "ece": r(s["ece"]), "n_slices": s["n"], "n_patients": p["n"],
    }
