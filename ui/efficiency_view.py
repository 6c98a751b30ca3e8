"""Efficiency page pieces: run the engine with a progress bar, tabulate, compare with Table I."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict

import numpy as np
import pandas as pd
import streamlit as st

from ctmodels.efficiency import Measurement, measure, save_latest
from ctmodels.inference import LoadedModel
from ctmodels.nets import GHOST_DEFAULTS
from ctmodels.workspace import REPO_ROOT

TABLE1 = REPO_ROOT / "assets" / "paper000_table1.csv"


def measure_with_progress(
    models: Sequence[LoadedModel], runtimes: Sequence[str], size: int, batches: Sequence[int], repeats: int,
    calibration: Callable[[LoadedModel], np.ndarray],
) -> Measurement:
    """The engine, with a progress bar; the result becomes this host's latest measurement."""
    bar = st.progress(0.0, text="Preparing…")
    m = measure(models, runtimes, size, batches, repeats, calibration=calibration,
                progress=lambda frac, text: bar.progress(frac, text=text), source="Efficiency page")
    save_latest(m)
    return m


def ghost_design_note() -> str:
    """Why the default Ghost differs from paper 000's placement (the issue asks the page to say so)."""
    d = GHOST_DEFAULTS
    ratios = ", ".join(f"stage {s}: {r}" for s, r in zip(d["stages"], d["ratio"]))
    return (
        f"The default **ResNet50 + Ghost** puts Ghost modules on all three convs of every bottleneck "
        f"(placement `{d['placement']}`), ratio per stage ({ratios}), in the **`{d['design']}`** design: each "
        "ghost group comes from its own depthwise 3×3 conv (channel multiplier 1), every conv has its own "
        "BatchNorm (which replaces the block's), and no channels are sliced off. That keeps 0.43× the "
        "baseline's parameters, and every layer has a fast kernel: BatchNorm folds into its conv, depthwise "
        "convs run on oneDNN's channels-last and ONNX Runtime's int8 depthwise kernels.\n\n"
        "The first design (`v1`, ratio 3: one depthwise conv making two ghosts per map, sliced to width, then "
        "the block's BatchNorm) had 0.42× the parameters but ran int8 at 2.7× the baseline's eager time: a "
        "grouped conv with channel multiplier 2 has no fast int8 kernel, and BatchNorm after a concat and a "
        "slice cannot fold. Paper 000's own placement (only the last 1×1 conv of stages 3–4, ratio 2) keeps "
        "0.90× the parameters; it stays available as the Training page's preset *Paper 000 · Ghost, the "
        "paper's placement* (`model_kwargs: {placement: paper, stages: [3, 4], ratio: 2, design: v1}`)."
    )


def tables(res: Measurement) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per model static table, timing table with ratios to the baseline's eager CPU latency)."""
    st_df = pd.DataFrame([asdict(s) for s in res.statics.values()])
    t = pd.DataFrame([asdict(x) for x in res.timings])
    t["× baseline eager"] = [res.ratio(r.model, r.runtime, r.batch) for r in res.timings]
    return st_df, t


def lesion_head_costs(res: Measurement) -> pd.DataFrame:
    """For each model with a lesion head: what the head adds in parameters, MACs and eager latency (measured
    with and without the lesion map in this same run)."""
    rows = []
    for name, s in res.statics.items():
        if not s.head_params:
            continue
        plain, both = res.p50(name, "eager_cpu"), res.p50(name, "eager_cpu_lesion")
        rows.append({"model": name, "head params (M)": round(s.head_params / 1e6, 3),
                     "head share of params": round(s.head_params / s.params, 4),
                     "verdict MACs (G)": round(s.macs / 1e9, 3), "head MACs (G)": round(s.head_macs / 1e9, 3),
                     "eager ms, verdict only": plain, "eager ms, with lesion map": both,
                     "× with the map": None if not plain or not both else round(both / plain, 3)})
    return pd.DataFrame(rows)


def table1(res: Measurement) -> pd.DataFrame:
    """Paper 000's Table I as reported, beside the same rows as measured here."""
    rep = pd.read_csv(TABLE1)
    st_df, t = tables(res)
    st_df["key"] = st_df["model"].map(res.keys)
    eager = t[(t["runtime"] == "eager_cpu") & (t["batch"] == 1)].set_index("model")["p50_ms"]
    rows = []
    base = st_df[st_df["key"] == "baseline"]
    for _, r in rep.iterrows():
        mine = st_df[st_df["key"] == r["key"]]
        row = {"model": r["model"], "reported params (M)": r["params_m"], "reported size (MB)": r["size_mb"],
               "reported latency (ms)": r["inference_ms"], "reported accuracy (%)": r["accuracy_pct"],
               "reported latency × ResNet50": round(r["inference_ms"] / rep.iloc[0]["inference_ms"], 2)}
        if len(mine):
            m = mine.iloc[0]
            row.update({"measured params (M)": round(m["params"] / 1e6, 2), "measured size (MB)": m["size_mb"],
                        "measured latency (ms)": eager.get(m["model"]),
                        "measured accuracy (%)": None if res.accuracy.get(m["model"]) is None
                        else round(100 * res.accuracy[m["model"]], 1)})
            if len(base) and eager.get(base.iloc[0]["model"]):
                lat = eager.get(m["model"])
                row["measured latency × baseline"] = None if lat is None else round(lat / eager.get(base.iloc[0]["model"]), 2)
        rows.append(row)
    return pd.DataFrame(rows)


def as_served_section(measure: Callable[..., dict], latest: dict | None) -> None:
    """What Compare serves, as a radiologist waits for it: time to verdict by stage, slices/s per runtime,
    five sessions at once (``training.evaluation.as_served``)."""
    st.subheader("As served: what a radiologist waits for")
    if st.button("Measure as served (about a minute)", key="eff_served"):
        bar = st.progress(0.0, text="Preparing…")
        latest = measure(progress=lambda frac, text: bar.progress(frac, text=text))
        bar.empty()
    if latest is None:
        st.info("Not measured yet on this host: press the button, or run `make bench`.")
        return
    t, f = latest["time_to_verdict"], latest["five_sessions"]
    st.caption(f"{latest['set']} ({', '.join(latest['models'])}) at its own {latest['input_size']} px"
               + (", four flips per slice" if latest["flip_average"] else "") + f"; measured {latest['measured']}.")
    a, b, c = st.columns(3)
    a.metric(f"Upload to verdicts ({t['upload']}, {t['slices']} slices)", f"{t['time_to_verdict_s']:.2f} s",
             help=f"Median of {t['repeats']} after a warm-up: read, lungs, involvement, every model's patient verdict.")
    b.metric(f"{f['sessions']} sessions at once: last done", f"{f['last_done_s']:.1f} s",
             help=f"Whole-scan slots: {f['slots']}; threads of one process, as Streamlit serves sessions.")
    c.metric("Peak memory, five sessions", f"{f['peak_rss_gb']:.2f} GB",
             help=f"The measuring process's resident memory (it held {f['rss_before_gb']:.2f} GB before the sessions).")
    stages = pd.DataFrame([
        {"stage": "read (decode the upload)", "seconds": t["read_s"]},
        {"stage": "lung segmentation (HU)", "seconds": t["lung_s"]},
        {"stage": "classical involvement", "seconds": t["involvement_s"]},
        {"stage": f"score every lung slice ({len(t['scoring_by_model_s'])} models side by side, input prepared once)",
         "seconds": t["scoring_s"]},
        *({"stage": f"  of which {k} on {t['runtimes'][k]}", "seconds": v} for k, v in t["scoring_by_model_s"].items()),
        {"stage": "then: CAMs and lesion maps of the viewed slice", "seconds": t["viewed_slice_cams_s"]},
    ])
    rates = pd.DataFrame([{"model": k, **v} for k, v in latest["slices_per_s"].items()])
    left, right = st.columns(2)
    left.dataframe(stages, hide_index=True, width="stretch")
    right.dataframe(rates.rename(columns={"served": "served with"}), hide_index=True, width="stretch")
    right.caption("Whole-scan slices/s per runtime on the upload's lung slices; each model is served with the "
                  "fastest runtime whose verdicts agree with eager on ≥ 99.5 % of its validation slices.")
