"""Efficiency: parameters, size and latency measured live on this host, beside paper 000's Table I."""

from __future__ import annotations

import streamlit as st

from ctmodels.efficiency import RUNTIME_TITLES, available_runtimes, host_info, latest
from training.evaluation import as_served
from training.evaluation.heldout import calibration_slices
from ui import figures
from ui.efficiency_view import (
    as_served_section,
    ghost_design_note,
    lesion_head_costs,
    measure_with_progress,
    table1,
    tables,
)
from ui.models import available_models, loaded

st.title("Efficiency")
st.caption("Measured on this machine (the latest measurement, from this page or `make bench`). Speeds are ratios to "
           "the ResNet50 baseline measured in the same run; the paper's numbers are shown *as reported*.")

with st.expander("This host", expanded=False):
    st.json(host_info())

choices = available_models()
if not choices:
    st.info("No trained models yet: build the demo model set from the Compare page (or `make demo-models`).")
    st.stop()

as_served_section(as_served.measure, as_served.latest())
st.subheader("The models at a chosen size (paper 000's Table I)")

names = [c.name for c in choices]
c1, c2 = st.columns(2)
first_set = [c.name for c in choices if c.set == choices[0].set]  # one set by default (phantom, else real CT)
selected = c1.multiselect("Models", names, default=first_set, key="eff_models")
runtimes = c2.multiselect("Runtimes", available_runtimes(), default=available_runtimes(),
                          format_func=lambda r: RUNTIME_TITLES[r], key="eff_runtimes")
c3, c4, c5 = st.columns(3)
size = c3.select_slider("Input size (px)", [64, 96, 128, 160, 224, 256, 320], value=224, key="eff_size")
repeats = c4.slider("Timed repeats per model", 5, 60, 20, key="eff_repeats")
batches = c5.multiselect("Batch sweep", [1, 2, 4, 8, 16, 32], default=[1, 8], key="eff_batches")
if not selected or not runtimes:
    st.warning("Pick at least one model and one runtime.")
    st.stop()
models = [loaded(c) for c in choices if c.name in selected]

if st.button("Measure now", type="primary", key="eff_measure"):
    measure_with_progress(models, runtimes, size, batches, repeats, calibration_slices)
res = latest()
if res is None:
    st.info("Not measured yet on this host: press **Measure now** (about a minute per model on 2 cores at 224 px), "
            "or run `make bench`.")
    st.stop()
stale = [n for n, ck in res.checkpoints.items() if any(m.name == n and m.ckpt_id != ck for m in models)]
st.caption(f"Latest measurement on this host: **{res.measured}**, from {res.source or 'an earlier run'} "
           f"({res.size}×{res.size} px, median of {res.repeats}); models: {', '.join(res.keys)}. "
           "**Measure now** measures the selection above and replaces it."
           + (f" Retrained since: {', '.join(stale)}." if stale else ""))
for err in res.errors:
    st.error(err)
with st.expander("How each runtime ran", expanded=False):
    st.markdown("\n".join(f"- **{RUNTIME_TITLES[rt]}**: {text}" for rt, text in res.settings.items()))
size = res.size

statics, timings = tables(res)
t1 = timings[timings["batch"] == 1]
tabs = st.tabs(["Latency", "Size and parameters", "Accuracy trade-off", "Table I", "Tables"])
with tabs[0]:
    st.plotly_chart(figures.grouped_bars(t1, "model", "p50_ms", "runtime", f"Latency at batch 1, {size}×{size} (p50, bar to p90)",
                                         "ms", error="p90_ms", colors=figures.RUNTIME_COLORS),
                    config=figures.PLOTLY_CONFIG, key="eff_lat")
    if timings["batch"].nunique() > 1:
        st.plotly_chart(figures.sweep_lines(timings, "Throughput over the batch sweep"), config=figures.PLOTLY_CONFIG,
                        key="eff_sweep")
    eager = t1[t1["runtime"] == "eager_cpu"].set_index("model")["p50_ms"]
    ghost = [n for n, k in res.keys.items() if k == "ghost" and n in eager.index]
    if ghost and res.ratio(ghost[0], "eager_cpu") is not None:
        ratios = {rt: res.ratio(ghost[0], rt) for rt in res.runtimes if res.ratio(ghost[0], rt) is not None}
        st.info(f"**{ghost[0]}** runs at " + ", ".join(f"{r:.2f}× ({RUNTIME_TITLES[rt]})" for rt, r in ratios.items())
                + " the baseline's eager CPU latency on this host.", icon=":material/speed:")
    heads = lesion_head_costs(res)
    if len(heads):
        st.markdown("**What the lesion head costs.** Every real-CT model also predicts where the infection is "
                    "(the learned lesion map on Compare); the verdict's pass and the pass that also gives the map, "
                    "timed in this same run:")
        st.dataframe(heads, hide_index=True, width="stretch")
    with st.expander("Which Ghost design this is, and why", expanded=False):
        st.markdown(ghost_design_note())
    q8 = t1[t1["runtime"] == "ort_int8"].set_index("model")["p50_ms"]
    f32 = t1[t1["runtime"] == "ort_fp32"].set_index("model")["p50_ms"]
    slower = [m for m in q8.index if m in f32.index and q8[m] > f32[m]]
    if slower:
        st.warning(f"int8 is slower than fp32 for {', '.join(slower)}: some layer of it has no int8 kernel in ONNX "
                   "Runtime (it runs dequantise → float op → quantise), e.g. a grouped conv that is not depthwise or "
                   "a BatchNorm that did not fold. The default Ghost design avoids both.", icon=":material/info:")
with tabs[1]:
    sizes = statics.melt(id_vars=["model"], value_vars=["size_mb", "onnx_fp32_mb", "onnx_int8_mb"],
                         var_name="format", value_name="MB").dropna()
    st.plotly_chart(figures.grouped_bars(sizes, "model", "MB", "format", "Size on disk", "MB"),
                    config=figures.PLOTLY_CONFIG, key="eff_size_bar")
    params = statics.assign(dense=statics["params"] / 1e6, nonzero=statics["nonzero_params"] / 1e6).melt(
        id_vars=["model"], value_vars=["dense", "nonzero"], var_name="count", value_name="M")
    st.plotly_chart(figures.grouped_bars(params, "model", "M", "count", "Parameters (dense and non-zero)", "millions"),
                    config=figures.PLOTLY_CONFIG, key="eff_params")
with tabs[2]:
    acc = statics.assign(accuracy=statics["model"].map(res.accuracy),
                         latency=statics["model"].map(eager)).dropna(subset=["accuracy"])
    if len(acc):
        a, b = st.columns(2)
        a.plotly_chart(figures.pareto(acc.dropna(subset=["latency"]), "latency", "accuracy", "model",
                                      "Accuracy vs latency (eager CPU)", "ms at batch 1"),
                       config=figures.PLOTLY_CONFIG, key="eff_pareto_lat")
        b.plotly_chart(figures.pareto(acc, "size_mb", "accuracy", "model", "Accuracy vs size", "MB (safetensors)"),
                       config=figures.PLOTLY_CONFIG, key="eff_pareto_size")
        st.caption("Accuracy: each model's held-out test slices (from its card).")
    else:
        st.caption("No accuracy recorded in these models' cards.")
with tabs[3]:
    tab = table1(res)
    st.dataframe(tab, hide_index=True, width="stretch")
    st.caption("Reported: paper 000, Table I (their data, their hardware). Measured: this host, this run, "
               f"{size}×{size}, batch 1, PyTorch eager CPU.")
    st.download_button("Table I comparison (CSV)", tab.to_csv(index=False).encode(), "table1_comparison.csv",
                       "text/csv", key="eff_t1_csv")
with tabs[4]:
    st.dataframe(statics, hide_index=True, width="stretch")
    st.download_button("Models (CSV)", statics.to_csv(index=False).encode(), "efficiency_models.csv", "text/csv",
                       key="eff_models_csv")
    st.dataframe(timings, hide_index=True, width="stretch")
    st.download_button("Timings (CSV)", timings.to_csv(index=False).encode(), "efficiency_timings.csv", "text/csv",
                       key="eff_timings_csv")
st.caption("Every chart's camera icon (top right) saves it as PNG.")
