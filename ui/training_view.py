"""Training page pieces that only *read* runs: tables, live progress, curves, evaluations."""

from __future__ import annotations

import json
import time

import pandas as pd
import streamlit as st

from ctmodels.workspace import REPO_ROOT
from training.runs import Run

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
    st.caption(f"Split: {ev['split']} · temperature {ev['temperature']:.3f} · patient verdict: {ev.get('aggregation', '')}")
    a, b, c = st.columns(3)
    a.plotly_chart(figures.confusion(ev["slice"]["confusion"], "Confusion (slices)"), config=figures.PLOTLY_CONFIG,
                   key=f"{key}_cm_s")
    b.plotly_chart(figures.confusion(ev["patient"]["confusion"], "Confusion (patients)"), config=figures.PLOTLY_CONFIG,
                   key=f"{key}_cm_p")
    c.plotly_chart(figures.roc({"slices": ev["slice"].get("roc"), "patients": ev["patient"].get("roc")}, "ROC"),
                   config=figures.PLOTLY_CONFIG, key=f"{key}_roc")
    st.download_button("Metrics (CSV)", df.to_csv(index=False).encode(), f"{run.id}-metrics.csv", "text/csv",
                       key=f"{key}_csv")


def history_csv(run: Run) -> bytes:
    return pd.DataFrame(run.metrics()).to_csv(index=False).encode()


MEASURED_CV = REPO_ROOT / "docs" / "measurements" / "real_cv.json"


def measured_cv_report() -> dict | None:
    """The real-CT cross-validation the developers ran (``python -m training cv --out docs/measurements``)."""
    try:
        return json.loads(MEASURED_CV.read_text())
    except (OSError, ValueError):
        return None


def cv_table(report: dict) -> pd.DataFrame:
    """One row per learned model, then the classical references: pooled out-of-fold metrics."""
    def ms(d):
        if not d or d.get("mean") is None:
            return None
        return round(d["mean"], 3)

    rows = []
    for name in report["models"] + report["classical"]:
        row = report["rows"].get(name)
        if not row:
            continue
        cam = row.get("cam") or {}
        rows.append({
            "model": name if row["kind"] == "learned" else f"classical: {name}",
            "ROC-AUC": ms(row["roc_auc"]), "± sd": None if row["roc_auc"].get("sd") is None else round(row["roc_auc"]["sd"], 3),
            "Δ vs baseline": None if "delta_vs_baseline" not in row else round(row["delta_vs_baseline"], 3),
            "accuracy": ms(row.get("accuracy")), "sensitivity": ms(row.get("sensitivity")),
            "specificity": ms(row.get("specificity")), "Spearman ρ": ms(row.get("spearman_involvement")),
            "CAM peak in infection": None if not cam else round(cam["peak_in_infection"], 2),
            "uniform map": None if not cam else round(cam["uniform_peak"], 2),
        })
    return pd.DataFrame(rows)


def cv_report_view(report: dict, key: str) -> None:
    """A cross-validation report: the table, AUCs as bars against the best classical reference, CSV."""
    if report.get("repeats_done", 0) == 0:
        st.info("No repeat has finished all its folds yet.")
        return
    st.caption(f"Patient-grouped {report['folds']}-fold CV, {report['repeats_done']} repeat(s), recipe "
               f"'{report['recipe']}'" + (f", measured {report['measured']}" if report.get("measured") else "")
               + ". " + report.get("definition", ""))
    df = cv_table(report)
    st.dataframe(df, hide_index=True, width="stretch")
    st.plotly_chart(figures.cv_bars(df, report.get("best_classical_auc")), config=figures.PLOTLY_CONFIG, key=f"{key}_bars")
    st.download_button("Cross-validation (CSV)", df.to_csv(index=False).encode(), "cross_validation.csv", "text/csv",
                       key=f"{key}_csv")
