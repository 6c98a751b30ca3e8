"""Evaluate models on the COVID-CT-MD series in HU, through the app's upload path (evaluation only).

P002 (COVID-19) and cap001 (community-acquired pneumonia) carry the radiologists' per-slice infection
labels; normal001 is normal by diagnosis (all its slices count as uninfected). Each series is zipped in
memory and read like an upload, its lungs segmented, and the models assess it (``ctmodels.assessment.assess``),
exactly as on the Compare page. A slice the model does not score (outside its scope: lung section under
its card's ``min_lung_share`` of the largest) gets score 0; the AUC over the scored slices alone is
reported too. Per-slice AUC is reported for P002 and cap001 each, and for all three series pooled.
Reported beside the models: the classical HU involvement rule and the lung-area prior (mid-chest slices
hold the most lung and are most often infected), the two references in ../shared/data/real/README.md.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from ctmodels.assessment import assess
from ctmodels.datasets import open_dataset
from ctmodels.imaging import read_any
from ctmodels.inference import LoadedModel, load_model
from ctmodels.workspace import real_data_dir

from .evaluate import auc

SERIES = ("P002", "cap001", "normal001")
LABELLED = ("P002", "cap001")


def _as_upload(folder: Path):
    """The series as the browser would send it: one zip of its DICOM files, read from memory."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for f in sorted(folder.glob("*.dcm")):
            zf.write(f, f.name)
    return read_any(buf.getvalue(), name=f"{folder.name}.zip")


def evaluate_models(models: dict[str, Path], root: Path | None = None) -> dict[str, Any]:
    """Per-slice AUCs (P002 alone, and P002 + normal001 pooled) and patient scores for each model."""
    root = root or real_data_dir() / "covid-ct-md"
    ds = open_dataset(root)
    loaded: dict[str, LoadedModel] = {name: load_model(path, name) for name, path in models.items()}
    per: dict[str, dict[str, Any]] = {}
    for case in ds.cases:
        if case.case_id not in SERIES:
            continue
        vol = _as_upload(Path(case.image))
        assessment = assess(vol, list(loaded.values()))  # what the Compare page shows: lung field, classical, models
        labels = [int(v or 0) for v in case.slice_infection] if case.slice_infection else [0] * vol.n_slices
        area = assessment.lung.sum(axis=(1, 2)).astype(float)
        scores: dict[str, list[float]] = {"HU involvement rule": list(np.nan_to_num(assessment.classical.per_slice)),
                                          "lung-area prior": list(area)}
        patient: dict[str, float] = {}
        verdict: dict[str, str] = {}
        learned: dict[str, float | None] = {}
        scored: dict[str, list[int]] = {}
        for m in assessment.models:
            vp = m.prediction
            scores[m.name] = [0.0 if v is None else v for v in vp.curve(vol.n_slices)]
            patient[m.name], verdict[m.name], learned[m.name] = vp.patient_p, vp.verdict, vp.patient_involvement
            scored[m.name] = list(vp.slices)
        per[case.case_id] = {"labels": labels, "scores": scores, "patient_p": patient, "verdict": verdict,
                             "learned": learned, "scored": scored, "n_slices": vol.n_slices}
    missing = [s for s in SERIES if s not in per]
    if missing:
        raise FileNotFoundError(f"COVID-CT-MD series {', '.join(missing)} not found under {root}")
    out: dict[str, Any] = {"models": {}, "references": {}, "series": list(SERIES),
                           "definition": __doc__.split("\n\n")[1].replace("\n", " ")}
    pooled_labels = [v for sid in SERIES for v in per[sid]["labels"]]
    for name in per["P002"]["scores"]:
        row: dict[str, Any] = {f"slice_auc_{sid.lower()}": auc(per[sid]["labels"], per[sid]["scores"][name])
                               for sid in LABELLED}
        row["slice_auc_pooled"] = auc(pooled_labels, [v for sid in SERIES for v in per[sid]["scores"][name]])
        if name in loaded:
            row["slices_scored"] = sum(len(per[sid]["scored"][name]) for sid in SERIES)
            row["slice_auc_scored_only"] = auc(
                [per[sid]["labels"][i] for sid in SERIES for i in per[sid]["scored"][name]],
                [per[sid]["scores"][name][i] for sid in SERIES for i in per[sid]["scored"][name]])
            for sid in SERIES:
                p = per[sid]["patient_p"][name]
                row[f"patient_p_{sid.lower()}"] = p
                row[f"verdict_{sid.lower()}"] = per[sid]["verdict"][name]
                row[f"learned_involvement_{sid.lower()}"] = per[sid]["learned"][name]
            out["models"][name] = row
        else:
            out["references"][name] = row
    return out


def markdown(res: dict[str, Any]) -> str:
    def f(v: float | None) -> str:
        return "–" if v is None else f"{v:.3f}"

    def pct(v: float | None) -> str:
        return "–" if v is None else f"{v:.1f} %"

    lines = ["| model | per-slice AUC P002 (133) | cap001 (168) | all three pooled (455) | AUC on scored slices (n) | "
             "patient P(severe) P002 / cap001 / normal001 | verdicts | learned involvement P002 / cap001 / normal001 |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in res["models"].items():
        lines.append(f"| {name} | {f(r['slice_auc_p002'])} | {f(r['slice_auc_cap001'])} | {f(r['slice_auc_pooled'])} | "
                     f"{f(r['slice_auc_scored_only'])} ({r['slices_scored']}) | "
                     f"{f(r['patient_p_p002'])} / {f(r['patient_p_cap001'])} / {f(r['patient_p_normal001'])} | "
                     f"{r['verdict_p002']} / {r['verdict_cap001']} / {r['verdict_normal001']} | "
                     f"{pct(r['learned_involvement_p002'])} / {pct(r['learned_involvement_cap001'])} / "
                     f"{pct(r['learned_involvement_normal001'])} |")
    for name, r in res["references"].items():
        lines.append(f"| *{name}* (reference) | {f(r['slice_auc_p002'])} | {f(r['slice_auc_cap001'])} | "
                     f"{f(r['slice_auc_pooled'])} | | | | |")
    return "\n".join(lines) + "\n"
