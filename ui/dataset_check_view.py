"""The Data Browser's "Models on this data": which models to check a labelled dataset with, and what came out.

The scoring itself is ``training.evaluation.on_dataset`` (the page runs it); this module picks the models the
way Compare would serve them for such a scan, and shows the result: a column per model, the slices against
their stated involvement, the per-scan verdicts, the per-slice table to download.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import streamlit as st

from ctmodels.datasets import Dataset

from . import figures
from .models import SET_TITLES, ModelChoice, available_models, default_selection, set_for_scan, sets_present

RATIO_COLUMNS = ("AUC", "Spearman ρ (involvement)", "AUC (infection)")
SHORT = {"slices scored": "slices", "Spearman ρ (involvement)": "ρ (involvement)"}
#: Pairs shown as one "sens / spec" column, and what it is called on the page.
PAIRS = {("sensitivity", "specificity"): "sens / spec at the card's point",
         ("sensitivity there", "specificity there"): "sens / spec there"}


def pick_models(ds: Dataset, key: str) -> list[ModelChoice]:
    """The set and models to check ``ds`` with: by default the set and the four models Compare serves for it
    (chosen only: the page loads them when it scores, so browsing a dataset never waits for models)."""
    choices = available_models()
    if not choices:
        st.info("No trained models in this workspace yet: `make run` builds the phantom set, `make real-models` "
                "the real-CT set.", icon=":material/info:")
        return []
    present = sets_present(choices)
    default = set_for_scan(choices, ds.synthetic)
    kind = "synthetic" if ds.synthetic else "real"  # one choice per kind of data: the matching set is the default
    model_set = st.selectbox("Model set", present, index=present.index(default), key=f"{key}_set_{kind}",
                             format_func=lambda s: SET_TITLES.get(s, s))
    pool = [c for c in choices if c.set == model_set]
    names = st.multiselect("Models", [c.name for c in pool], default=default_selection(choices, model_set),
                           key=f"{key}_models_{model_set}")
    picked = [c for name in names for c in pool if c.name == name]
    unlike = [c.name for c in picked if c.synthetic != ds.synthetic]
    if unlike:
        st.warning(f"{', '.join(unlike)} learned from {'real CT' if ds.synthetic else 'synthetic phantoms'} and this "
                   f"dataset is {'synthetic' if ds.synthetic else 'real'}: the check measures them on data unlike "
                   "what they learned from (Compare serves the other set for such scans).", icon=":material/science:")
    trained = sorted({c.trained_on for c in picked})
    if trained:
        st.caption("These models learned from: " + "; ".join(trained) + ". On data they learned from, the check "
                   "says how well they fit it, not how they do on scans they never saw.")
    return picked


def _shown(summary: pd.DataFrame) -> pd.DataFrame:
    """The summary as a reader wants it: a column per model and a row per measure (four models side by side fit the
    page; fourteen measures across did not), measures with something in them, rates as percentages, each
    sensitivity beside its specificity."""
    out = summary.drop(columns=["this data's cut"], errors="ignore").copy()
    for (sens, spec), title in PAIRS.items():
        if sens in out:
            out[sens] = [None if _missing(a) and _missing(b) else f"{_pct(a)} / {_pct(b)}"
                         for a, b in zip(out[sens], out[spec])]
            out = out.drop(columns=[spec]).rename(columns={sens: title})
    for col in RATIO_COLUMNS:
        if col in out:
            out[col] = out[col].map(lambda v: None if _missing(v) else round(float(v), 3))
    if "scan accuracy" in out:
        out["scan accuracy"] = out["scan accuracy"].map(_pct)
    out = out.dropna(axis=1, how="all").rename(columns=SHORT).set_index("model")
    return out.T.map(lambda v: "–" if _missing(v) else str(v)).rename_axis(index="per labelled slice", columns=None)


def _pct(v: Any) -> str:
    return "–" if _missing(v) else f"{100 * v:.0f} %"


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def render(check: Any, names: list[str], threshold_pct: float, key: str) -> None:
    """A ``DatasetCheck`` on the page (``training.evaluation.on_dataset``)."""
    if check.skipped:
        st.warning(f"{len(check.skipped)} case(s) could not be read and were left out: "
                   + "; ".join(f"{c} ({why})" for c, why in list(check.skipped.items())[:5]),
                   icon=":material/warning:")
    if check.slices.empty and check.scans.empty:
        st.error("None of the labelled cases could be scored.", icon=":material/error:")
        return
    table = _shown(check.summary)
    st.dataframe(table, width="stretch", height=35 * (len(table) + 1) + 3,  # every measure without scrolling
                 column_config={"_index": st.column_config.Column(width="medium")})
    st.caption(
        "Per labelled slice, each model as Compare scores it (lung field, scope, served runtime). **AUC**: how well "
        "P(severe) ranks severe above mild slices; **ρ**: Spearman rank correlation of the learned involvement (or "
        "P(severe)) with the stated involvement; **sens / spec** at the **card's point**, the one the verdicts use "
        "(\"learned ≥ x %\": severe from x % of the lung in the learned lesion map; \"P ≥ c\": from P(severe) c). "
        "**This data's point** is the cut these slices choose, as the recipe chose the card's (a class-balanced "
        "logistic fit of the labels on P(severe); offered from 5 slices of each "
        "class), and **its 95 % range**, where that point lands when the patients are drawn again (200 draws; wide: "
        "too few patients to choose a point on; none when the severe slices come from under 3 patients: such a "
        "point is worth little). If the point sits far from the card's, this data reads on another scale than the "
        "data the point was chosen on, and the verdicts' sensitivity and specificity will differ here. Slices a "
        "model does not score (a lung section under its scope) are left out of its column."
        + (" **AUC (infection)**: how well P(severe) ranks the slices marked infected (a finding per slice, not a "
           "severity grade, so no point applies) above the others." if "AUC (infection)" in check.summary else ""))
    slices = check.slices
    if not slices.empty and slices["involvement %"].notna().any():
        name = st.selectbox("Slices as a model scored them", names, key=f"{key}_plot_model")
        learned = f"learned % · {name}"
        use_learned = learned in slices and slices[learned].notna().any()
        col = learned if use_learned else f"P(severe) · {name}"
        st.plotly_chart(figures.scored_against_truth(
            pd.to_numeric(slices["involvement %"], errors="coerce"), pd.to_numeric(slices[col], errors="coerce"),
            slices["label"], "learned involvement (%)" if use_learned else "P(severe)", threshold_pct,
            f"{name}: each labelled slice"), key=f"{key}_plot")
    if not check.scans.empty:
        st.markdown("**Per scan** (the patient verdict at the card's point against the scan's label)")
        st.dataframe(check.scans, hide_index=True, width="stretch")
    if not slices.empty:
        st.download_button("Download every slice's scores (CSV)", slices.to_csv(index=False).encode(),
                           "models_on_dataset.csv", "text/csv", key=f"{key}_csv")
