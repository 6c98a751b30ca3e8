"""Training page pieces that only *read* runs: tables, live progress, curves, evaluations."""

from __future__ import annotations

import time

import pandas as pd
import streamlit as st

from training.runs import Run

from . import figures

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
    if not p:
        st.progress(0.0, text="Starting (preparing data)…")
        return
    frac = ((p["epoch"] - 1) + p["batch"] / max(p["batches"], 1)) / max(p["epochs"], 1)
    eta = f", ETA {p['eta_s'] / 60:.1f} min" if p.get("eta_s") else ""
    st.progress(min(max(frac, 0.0), 1.0),
                text=f"{p['stage']}: epoch {p['epoch']}/{p['epochs']}, batch {p['batch']}/{p['batches']}, "
                     f"{p['images_per_s']:.1f} img/s{eta}")


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
