"""Home: what the product does, what is in the workspace, where to start."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from ctmodels.workspace import workspace_dir
from ui.training_view import measured_cv_reports
from ui.workspace_summary import data_summaries, evaluated_on, model_cards, trained_on

st.title("CT Severity Studio")
st.markdown(
    "CT Severity Studio grades COVID-19 chest CT as **mild** or **severe** (share of lung involved, "
    "25 % by default) with a ResNet50 baseline and three compressed models: Ghost modules, structured "
    "pruning and knowledge distillation. It shows each model's evidence with Grad-CAM beside a classical, "
    "non-learned lung-involvement measure, so a reader sees whether compression changed what the model looks at. "
    "It measures what each compression really buys (size, parameters, latency) on this machine, next to the "
    "numbers the source paper reports."
)
st.caption("Research software — not for diagnostic use.")

st.subheader("In this workspace")
st.caption(f"Workspace folder: `{workspace_dir()}`")
summaries = data_summaries()
if summaries:
    df = pd.DataFrame(
        [{"dataset": s.title, "cases": s.cases, "mild": s.mild, "severe": s.severe,
          "kind": "synthetic" if s.synthetic else "real"} for s in summaries]
    )
    st.dataframe(df, hide_index=True, width="stretch")
else:
    st.info("No datasets yet: `make run` builds the demo phantoms.", icon=":material/info:")
cards = model_cards()
c1, c2, c3 = st.columns(3)
c1.metric("Datasets", len(summaries))
c2.metric("Trained models", len(cards))
c3.metric("Model sets", len({c["_set"] for c in cards}))
if cards:
    measured = measured_cv_reports()

    def cv(c: dict, split: str, metric: str) -> float | None:
        if c["_set"] != "real CT":
            return None
        row = (measured.get(split) or {}).get("rows", {}).get(c["_folder"]) or {}
        return (row.get(metric) or {}).get("mean")

    table = pd.DataFrame([{"set": c["_set"], "model": c["_folder"], "kind": c.get("model_key"),
                           "input": c.get("input_size"), "trained on": trained_on(c),
                           "slice AUC": (c.get("metrics") or {}).get("slice_auc"), "measured on": evaluated_on(c),
                           "CV ρ": cv(c, "patients", "spearman_involvement"), "CV AUC": cv(c, "patients", "roc_auc"),
                           "ρ, source held out": cv(c, "sources", "spearman_involvement")} for c in cards])
    number = st.column_config.NumberColumn
    folds = (measured.get("patients") or {}).get("folds", "k")
    st.dataframe(table.dropna(axis="columns", how="all"), hide_index=True, width="stretch",
                 column_config={"slice AUC": number(format="%.3f"),
                                "CV ρ": number(format="%.3f", help="Spearman ρ with the involvement, pooled "
                                               f"out-of-fold, patient-grouped {folds}-fold "
                                               "(docs/measurements/real_cv.md)"),
                                "CV AUC": number(format="%.3f", help="pooled out-of-fold ROC-AUC, the same folds"),
                                "ρ, source held out": number(format="%.3f", help="Spearman ρ pooled over the "
                                                             "leave-one-source-out folds (real_loso.md)")})
else:
    st.caption("No trained models yet.")
if not any(c["_set"] == "real CT" for c in cards):
    st.caption("No real-CT model set yet: `make real-models` (or the Compare page's button, when the real sample "
               "data is in `../shared/data/real`) trains the six models on real CT slices.")

st.subheader("Where to start")
left, right = st.columns(2)
with left:
    st.markdown("**Radiologist**")
    st.markdown("Open **Compare**: upload a scan (DICOM file, zipped DICOM series, NIfTI, PNG/JPG) or pick a sample "
                "case, and see what the ghost, pruned and KD models and the baseline say, how sure they are, where "
                "they look (Grad-CAM), and the classical lung-involvement measure beside them. The **Data Browser** "
                "shows datasets, labels and masks on a proper lung window.")
    st.page_link("views/compare.py", label="Compare models on a scan", icon=":material/compare:")
    st.page_link("views/data_browser.py", label="Open the Data Browser", icon=":material/folder_open:")
with right:
    st.markdown("**Researcher**")
    st.markdown("Retrain from **Training** (paper recipes as presets, live curves, cancel/resume, run comparison), "
                "and measure size, parameters and latency on this machine in **Efficiency**, next to paper 000's "
                "Table I. Everything also runs headless: `python -m training --help`, `make bench`.")
    st.page_link("views/training.py", label="Train and compare runs", icon=":material/model_training:")
    st.page_link("views/efficiency.py", label="Measure efficiency", icon=":material/speed:")
