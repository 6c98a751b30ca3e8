"""Efficiency: parameters, size and latency measured live on this host, beside paper 000's Table I."""

from __future__ import annotations

import numpy as np
import streamlit as st

from ctmodels.efficiency import RUNTIME_TITLES, available_runtimes, host_info
from ui import figures
from ui.efficiency_view import cached, measure, table1, tables
from ui.models import available_models, loaded

st.title("Efficiency")
st.caption("Measured on this machine, now. Speeds are ratios to the ResNet50 baseline measured in the same run; "
           "the paper's numbers are shown *as reported*.")

with st.expander("This host", expanded=False):
    st.json(host_info())

choices = available_models()
if not choices:
    st.info("No trained models yet: build the demo model set from the Compare page (or `make demo-models`).")
    st.stop()

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


def calibration(lm):
    """Real training slices of the model's own dataset, normalised as in training (int8 calibration)."""
    import torch

    from ctmodels.preprocess import normalize
    from training.bench import held_out

    data = held_out(lm)
    idx = np.random.default_rng(0).choice(data.subset(0), size=min(64, len(data.subset(0))), replace=False)
    return normalize(torch.from_numpy(data.images[idx]).float().div(255)[:, None], lm.pre).numpy()


key = (tuple(m.ckpt_id for m in models), tuple(runtimes), size)
if st.button("Measure now", type="primary", key="eff_measure"):
    st.session_state["eff_result"] = (key, measure(models, runtimes, size, batches, repeats, calibration))
res = None
if "eff_result" in st.session_state and st.session_state["eff_result"][0] == key:
    res = st.session_state["eff_result"][1]
else:
    res = cached(models, runtimes, size)
    if res:
        st.caption("Showing earlier measurements of these checkpoints on this host; **Measure now** to refresh.")
if res is None:
    st.info("Not measured yet on this host: press **Measure now** (about a minute per model on 2 cores at 224 px).")
    st.stop()
for err in res["errors"]:
    st.error(err)

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
    ghost = [n for n, k in res["keys"].items() if k == "ghost" and n in eager.index]
    base = [n for n, k in res["keys"].items() if k == "baseline" and n in eager.index]
    if ghost and base:
        r = eager[ghost[0]] / eager[base[0]]
        if r >= 1.0:
            st.warning(f"**Ghost is not faster here:** {r:.2f}× the baseline's CPU latency. Ghost modules cut parameters "
                       "and MACs, not necessarily CPU time: their depthwise 'cheap operations' run poorly on CPU kernels. "
                       "Paper 000 reports 62 ms vs 120 ms; this host does not reproduce that.", icon=":material/info:")
        else:
            st.success(f"Ghost runs at {r:.2f}× the baseline's CPU latency on this host.")
    q8 = t1[t1["runtime"] == "ort_int8"].set_index("model")["p50_ms"]
    f32 = t1[t1["runtime"] == "ort_fp32"].set_index("model")["p50_ms"]
    slower = [m for m in q8.index if m in f32.index and q8[m] > f32[m]]
    if slower:
        st.info(f"int8 is slower than fp32 for {', '.join(slower)}: ONNX Runtime has no fast int8 kernels for "
                "depthwise convolutions (Ghost's cheap operations) on this CPU, so it falls back to slow paths.",
                icon=":material/info:")
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
    acc = statics.assign(accuracy=statics["model"].map(res["accuracy"]),
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
