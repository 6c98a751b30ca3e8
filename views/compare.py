"""Compare: one scan, the ghost / pruned / kd models and the baseline side by side, with Grad-CAM."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from ctmodels.assessment import assess, first_look, largest_lung_slice
from ctmodels.explain import METHODS
from ctmodels.imaging.window import LUNG
from ctmodels.verdict import DEFAULT_THRESHOLD_PCT
from ctmodels.work_slots import busy, explanation_work, whole_scan_work
from training.jobs.runner import demo_status, launch_demo, launch_real, real_status
from training.recipes.real import have_real_data
from ui import export, figures, render
from ui.compare_view import (
    agreement_table,
    demo_builder,
    dicom_downloads,
    pick_scan,
    result_grid,
    runtimes_text,
    set_builder,
    verdict_row,
)
from ui.models import (
    PHANTOM,
    REAL,
    SET_TITLES,
    available_models,
    default_selection,
    loaded,
    set_for_scan,
    sets_present,
    warm,
)
from ui.widgets import burned_in, burned_in_warning

st.title("Compare models")
st.caption("Research software — not for diagnostic use. Verdicts: mild vs severe "
           f"(≥ {DEFAULT_THRESHOLD_PCT:g} % of lung involved).")

choices = available_models()
if not choices:
    demo_builder(launch_demo, demo_status)
    st.stop()

warm(choices)  # while a scan is picked
picked = pick_scan("cmp")
if picked is None:
    st.stop()
vol, lung, analysis = picked.volume, picked.lung, picked.analysis
matching = set_for_scan(choices, picked.synthetic)

with st.expander("Models and explanation", expanded=False):
    present = sets_present(choices)
    options = ["Match the scan"] + [SET_TITLES[s] for s in present] + ["Custom"]
    set_choice = st.segmented_control("Model set", options, default="Match the scan", key="cmp_set") or "Match the scan"
    if set_choice == "Custom":
        selected = st.multiselect("Models", [c.name for c in choices], default=default_selection(choices, matching),
                                  key="cmp_models")
    else:
        model_set = matching if set_choice == "Match the scan" else next(s for s in present if SET_TITLES[s] == set_choice)
        selected = default_selection(choices, model_set)
        st.caption(f"{SET_TITLES[model_set]}: " + ", ".join(selected) + ". Trained on: "
                   + next(c.trained_on for c in choices if c.name == selected[0]) + ".")
    c1, c2 = st.columns(2)
    method = c1.selectbox("Explanation method", list(METHODS), key="cmp_method")
    explain = c2.segmented_control("CAM explains", ["predicted", "severe", "mild"], default="predicted",
                                   key="cmp_explain") or "predicted"
if not selected:
    st.warning("Pick at least one model.")
    st.stop()

by_name = {c.name: c for c in choices}
chosen = [by_name[n] for n in selected]
for c in (c for c in chosen if c.outdated):
    fix = {REAL: "rebuild the set with `make real-models`", PHANTOM: "rebuild the set with `make demo-models`"}
    st.warning(f"**{c.name}**: {c.outdated}, so its verdicts may differ from those it was validated with: "
               f"{fix.get(c.set, 'retrain it on the Training page')}.", icon=":material/update:")
models = [loaded(c) for c in chosen]

cache = st.session_state.setdefault("cmp_assessment", {})
assessment_key = (picked.key, tuple(m.ckpt_id for m in models))
fresh = assessment_key not in cache  # scored in this run: its verdicts show before the Grad-CAMs are drawn
if fresh:
    first = st.empty()  # the opening slice's verdicts while the rest of the scan is scored
    if vol.n_slices > 1:
        at = largest_lung_slice(vol, lung)
        first.info(f"Slice {at} (largest lung section), while the whole scan is scored: "
                   + "; ".join(f"**{n}** {v} (P(severe) {p:.0%})" for n, p, v in first_look(vol, models, lung, at)),
                   icon=":material/hourglass_top:")
    bar = st.progress(0.0, text="Waiting for a free slot to score this scan…")
    with whole_scan_work():
        cache.clear()
        cache[assessment_key] = assess(vol, models, lung, analysis.result if analysis is not None else None,
                                       progress=lambda done, text: bar.progress(done, text=text))
    bar.empty()
    first.empty()
assessment = cache[assessment_key]

if assessment.is_volume:
    if st.button("Jump to most severe slice", key="cmp_jump"):
        st.session_state["cmp_slice"] = assessment.most_severe_slice()
    if st.session_state.get("cmp_slice_for") != picked.key or st.session_state.get("cmp_slice", 0) >= vol.n_slices:
        st.session_state["cmp_slice"] = assessment.largest_lung_slice()  # open on the largest lung section
        st.session_state["cmp_slice_for"] = picked.key
    idx = st.slider("Slice (0 = most superior)", 0, vol.n_slices - 1, key="cmp_slice")
else:
    idx = 0

# A new scan, or other sessions' scans under way: the verdicts now, Grad-CAM once the server is free. Otherwise
# (moving through slices) the slice is scored and explained at once, not twice.
waiting = busy()
early = fresh or waiting
view = assessment.at(idx, method, explain, cams=not early)
if view.reasons:
    st.error("**Refer / out of scope** — do not rely on these outputs:\n\n" + "\n".join(f"- {r}" for r in view.reasons),
             icon=":material/report:")
else:
    st.success(f"All {len(models)} models agree: **{view.results[0].verdict}** on this slice.", icon=":material/check:")
burned_in_warning(vol.meta)
if not vol.is_hu and all(c.eight_bit for c in chosen):
    st.caption("8-bit image (display intensities, not HU): the lung field is estimated from intensities and the "
               "classical HU involvement % is unavailable.")
if any(c.synthetic for c in chosen) and not picked.synthetic:
    st.warning("These models were trained on synthetic phantoms; on real scans they are a demonstration, "
               "not a validated classifier.", icon=":material/science:")
    if REAL not in sets_present(choices):
        if have_real_data():
            set_builder("real-CT model set", "Real CT deserves models trained on real CT: build the real-CT set "
                        "(the same six models, trained on the real 8-bit slices in ../shared/data/real).",
                        "30 minutes", launch_real, real_status, "cmp_build_real", "Build the real-CT model set")
        else:
            st.caption("Real-CT models come from `make real-models`, which trains on the real sample data in "
                       "`../shared/data/real` (absent on this machine).")
if picked.synthetic and all(c.set == REAL for c in chosen):
    st.warning("These models learned from real 8-bit CT slices; this scan is a synthetic phantom. Pick the "
               f"{SET_TITLES[PHANTOM].lower()} to compare like with like.", icon=":material/science:")

inv_txt = None
if assessment.classical is not None:
    ps = assessment.classical.per_slice[idx]
    inv_txt = (f"Classical involvement: **{assessment.classical.percent:.1f} %** of lung volume"
               + (f", **{ps:.1f} %** on this slice" if not np.isnan(ps) else ""))
grid, done = st.empty(), st.empty()
if early:
    with grid.container():
        verdict_row(view)
    done.caption(f"All {len(models)} verdicts computed; Grad-CAM and the lesion maps follow"
                 + (" once the server has scored the scans other sessions uploaded." if waiting else "."))
if assessment.is_volume:
    st.subheader("Patient level")
    st.caption(assessment.models[0].prediction.aggregation + ". The scan's learned involvement is its learned "
               "lesion volume over its lung volume, over the slices each model scores.")
    st.dataframe(pd.DataFrame(assessment.table(view))[["model", "patient verdict", "patient P(severe)", "cut",
                                                       "scan learned involvement %"]], hide_index=True, width="stretch")
if early:
    with explanation_work():
        view = assessment.at(idx, method, explain)
with grid.container():
    panels = result_grid(vol, view, lung, inv_txt)
done.caption(f"All {len(models)} verdicts, CAMs and lesion maps computed in {view.seconds:.2f} s. "
             + " ".join(f"{m.name}: {m.model.rule.describe()}." for m in assessment.models)
             + f" Scores from {runtimes_text(models)}; Grad-CAM from eager PyTorch.")

rows = assessment.table(view)
if assessment.is_volume:
    series = {name: [None if v is None else 100 * v for v in curve] for name, curve in assessment.curves().items()}
    st.plotly_chart(figures.slice_curve(series, current=idx,
                                        title="Per-slice evidence: P(severe) % by model", ytitle="P(severe) %"),
                    key="cmp_curve")
    involvement = {f"{name} (learned)": curve for name, curve in assessment.involvement_curves().items()}
    if assessment.classical is not None:
        involvement["classical (HU)"] = list(assessment.classical.per_slice)
    if involvement:
        st.plotly_chart(figures.slice_curve(involvement, current=idx, threshold_pct=DEFAULT_THRESHOLD_PCT,
                                            title="Involvement by slice: learned lesion area and classical HU band",
                                            ytitle="% of the slice's lung"),
                        key="cmp_involvement_curve")
if len(view.results) > 1:
    st.subheader("Where the models look")
    st.caption("CAM agreement inside the lungs: do compressed models look where the baseline looks?")
    st.dataframe(agreement_table(view), hide_index=True, width="stretch")

st.subheader("Export")
e1, e2 = st.columns(2)
if burned_in(vol.meta):  # the pixels may show names or IDs: no image of them is made, so none can leave
    e1.caption("No comparison image: the scan flags burned-in annotations (its pixels may identify the patient).")
else:
    def comparison_png() -> bytes:  # drawn on click, not on every rerun (a matplotlib figure: ~0.3 s of CPU)
        return export.comparison_png(
            render.slice_rgb(vol.slice(idx), LUNG if vol.is_hu else None),
            [(r.model, panels[r.model], f"{r.verdict} · P(severe) {r.p_severe:.0%}") for r in view.results],
            "Model comparison", f"slice {idx + 1}/{vol.n_slices} · {vol.describe()}",
            [f"Refer: {x}" for x in view.reasons[:2]],
        )

    e1.download_button("Download comparison (PNG)", comparison_png, "comparison.png", "image/png", key="cmp_png")
e2.download_button("Download numbers (CSV)", export.numbers_csv(rows), "comparison.csv", "text/csv", key="cmp_csv")
if picked.dicom_sources is not None and assessment.lung is not None and assessment.is_volume:
    dicom_downloads(assessment, picked.dicom_sources, picked.pacs_url)
