"""Training page pieces that only *read* runs: tables, live progress, curves, evaluations."""

from __future__ import annotations

import json
import time

import pandas as pd
import streamlit as st

from ctmodels.verdict import VerdictRule
from ctmodels.workspace import REPO_ROOT
from training.jobs.registry import Run

from . import figures
from .progress import progress_bar

STATUS_COLOR = {"queued": "gray", "running": "blue", "completed": "green", "failed": "red", "cancelled": "orange"}


def runs_table(runs: list[Run]) -> pd.DataFrame:
    rows = []
    for r in runs:
        test = r.summary.get("test", {})
        rows.append({
            "run": r.id, "name": r.name or "", "status": r.status, "command": r.command, "model": r.model_key,
            "processes": r.nprocs, "created": time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created)),
            "minutes": None if not (r.started and r.finished) else round((r.finished - r.started) / 60, 1),
            "slice acc": test.get("slice_accuracy"), "patient acc": test.get("patient_accuracy"),
            "AUC": test.get("slice_auc"),
        })
    return pd.DataFrame(rows)


def progress_block(run: Run) -> None:
    p = run.progress()
    if run.status == "queued":
        st.progress(0.0, text="Queued: waits for the running job to finish")
        return
    progress_bar(p, "Starting (preparing data)…")


def curves(run_histories: dict[str, list[dict]], key: str) -> None:
    if not any(run_histories.values()):
        st.caption("No finished epoch yet: curves appear after the first epoch.")
        return
    a, b = st.columns(2)
    a.plotly_chart(figures.run_curves(run_histories, "loss", "Loss"), config=figures.PLOTLY_CONFIG, key=f"{key}_loss")
    b.plotly_chart(figures.run_curves(run_histories, "acc", "Accuracy"), config=figures.PLOTLY_CONFIG, key=f"{key}_acc")


def evaluation_block(run: Run, key: str) -> None:
    ev = run.evaluation()
    if not ev:
        return
    rows = []
    for level in ("slice", "patient"):
        m = ev[level]
        rows.append({"level": level, **{k: (round(v, 4) if isinstance(v, float) else v)
                                        for k, v in m.items() if k not in ("confusion", "roc")}})
    df = pd.DataFrame(rows)
    st.dataframe(df, hide_index=True, width="stretch")
    rule = VerdictRule(**{k: v for k, v in (ev.get("rule") or {}).items() if k in VerdictRule.__dataclass_fields__})
    chosen = rule.validation or {}
    picked = (f"chosen on the validation split ({chosen.get('n')} slices, {chosen.get('severe')} severe: "
              f"sensitivity {chosen['sensitivity']:.2f}, specificity {chosen['specificity']:.2f})"
              if chosen.get("sensitivity") is not None and chosen.get("specificity") is not None
              else chosen.get("note", "P = 0.5"))
    st.caption(f"Split: {ev['split']} · {rule.describe()} — cut {picked} · ECE {ev['slice'].get('ece') or 0:.3f} · "
               f"patient verdict: {ev.get('aggregation', '')}"
               + (f" · lesion Dice {ev['lesion_dice']['mean']:.3f} ({ev['lesion_dice']['n']} slices)"
                  if ev.get("lesion_dice") else ""))
    a, b, c, d = st.columns(4)
    a.plotly_chart(figures.confusion(ev["slice"]["confusion"], "Confusion (slices)"), config=figures.PLOTLY_CONFIG,
                   key=f"{key}_cm_s")
    b.plotly_chart(figures.confusion(ev["patient"]["confusion"], "Confusion (patients)"), config=figures.PLOTLY_CONFIG,
                   key=f"{key}_cm_p")
    c.plotly_chart(figures.roc({"slices": ev["slice"].get("roc"), "patients": ev["patient"].get("roc")}, "ROC"),
                   config=figures.PLOTLY_CONFIG, key=f"{key}_roc")
    preds = ev.get("predictions") or {}
    if preds.get("p_severe"):
        d.plotly_chart(figures.reliability(preds["p_severe"], preds["label"], "Reliability (slices)"),
                       config=figures.PLOTLY_CONFIG, key=f"{key}_rel")
    st.download_button("Metrics (CSV)", df.to_csv(index=False).encode(), f"{run.id}-metrics.csv", "text/csv",
                       key=f"{key}_csv")


def history_csv(run: Run) -> bytes:
    return pd.DataFrame(run.metrics()).to_csv(index=False).encode()


MEASURED_CV = {"patients": REPO_ROOT / "docs" / "measurements" / "real_cv.json",
               "sources": REPO_ROOT / "docs" / "measurements" / "real_loso.json"}


def measured_cv_reports() -> dict[str, dict]:
    """The real-CT cross-validations the developers ran (``python -m training cv --out docs/measurements``):
    by patient and by source, where present."""
    out = {}
    for split, path in MEASURED_CV.items():
        try:
            out[split] = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
    return out


def cv_table(report: dict) -> pd.DataFrame:
    """One row per learned model, then the classical references: pooled out-of-fold metrics, and Spearman ρ
    per fold and per held-out source (and against the involvement without the model-made masks' artefacts, where
    measured)."""
    def ms(d):
        if not d or d.get("mean") is None:
            return None
        return round(d["mean"], 3)

    by_fold = report.get("split") != "sources"  # leaving a source out, the folds are the sources' columns
    rows = []
    for name in report["models"] + report["classical"]:
        row = report["rows"].get(name)
        if not row:
            continue
        cam, dice = row.get("cam") or {}, row.get("dice") or {}
        rows.append({
            "model": name if row["kind"] == "learned" else f"classical: {name}",
            "Spearman ρ": ms(row.get("spearman_involvement")),
            **({"ρ per fold": row["fold_spearman"]["text"]} if by_fold and "fold_spearman" in row else {}),
            **({"ρ without mask artefacts": ms(row["spearman_artefact_free"])} if "spearman_artefact_free" in row else {}),
            "ROC-AUC": ms(row["roc_auc"]), "± sd": None if row["roc_auc"].get("sd") is None else round(row["roc_auc"]["sd"], 3),
            "Δ vs baseline": None if "delta_vs_baseline" not in row else round(row["delta_vs_baseline"], 3),
            "sensitivity": ms(row.get("sensitivity")), "specificity": ms(row.get("specificity")),
            "accuracy": ms(row.get("accuracy")),
            "lesion Dice": None if not dice else round(dice["mean"], 3),
            **{f"ρ {src}": ms(v.get("spearman_involvement")) for src, v in (row.get("by_source") or {}).items()},
            "CAM peak in infection": None if not cam else round(cam["peak_in_infection"], 2),
            "uniform map": None if not cam else round(cam["uniform_peak"], 2),
        })
    return pd.DataFrame(rows)


def cv_report_view(report: dict, key: str) -> None:
    """A cross-validation report: the table, AUCs as bars against the best classical reference, CSV."""
    if report.get("repeats_done", 0) == 0:
        st.info("No repeat has finished all its folds yet.")
        return
    what = ("Leave-one-source-out (" + ", ".join(report.get("fold_names", [])) + ")"
            if report.get("split") == "sources" else f"Patient-grouped {report['folds']}-fold CV")
    st.caption(f"{what}, {report['repeats_done']} repeat(s), recipe '{report['recipe']}'"
               + (f", measured {report['measured']}" if report.get("measured") else "")
               + ". Sensitivity and specificity at each fold model's own cut (its card's). " + report.get("definition", ""))
    df = cv_table(report)
    if "ρ per fold" in df.columns:
        st.caption("**ρ per fold**: each fold's held-out patients ranked by that fold's own model; the pooled ρ also "
                   "mixes the fold models' scales, so it can sit below every fold's.")
    if "ρ without mask artefacts" in df.columns:
        st.caption("**ρ without mask artefacts**: Spearman ρ against the involvement once blobs on the image's edge "
                   "outside the lung are dropped from the model-made (pseudo-label) masks; doctors' masks are left as "
                   "they are. The goals are on the stated involvement (docs/real_ct.md, \"Mask artefacts\").")
    st.dataframe(df, hide_index=True, width="stretch")
    st.plotly_chart(figures.cv_bars(df, report.get("best_classical_auc")), config=figures.PLOTLY_CONFIG, key=f"{key}_bars")
    st.download_button("Cross-validation (CSV)", df.to_csv(index=False).encode(), "cross_validation.csv", "text/csv",
                       key=f"{key}_csv")
