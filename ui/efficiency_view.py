"""Efficiency page pieces: run the measurement with a progress bar, tabulate, compare with Table I."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import streamlit as st

from ctmodels.efficiency import (
    RUNTIME_TITLES, ResultCache, interleaved, make_runner, onnx_paths, peak_memory_mb, static_stats,
)
from ctmodels.inference import LoadedModel
from ctmodels.workspace import REPO_ROOT, workspace_dir

TABLE1 = REPO_ROOT / "assets" / "paper000_table1.csv"


def artifacts_root() -> Path:
    return workspace_dir() / "cache" / "onnx"


def measure(
    models: list[LoadedModel], runtimes: list[str], size: int, batches: list[int], repeats: int,
    calibration: Callable[[LoadedModel], np.ndarray | None],
) -> dict:
    """Static stats, ONNX export/quantisation, interleaved timing and a batch sweep, with progress."""
    bar = st.progress(0.0, text="Preparing…")
    statics, runners, errors = {}, {}, []
    n_prep = len(models) * len(runtimes)
    k = 0
    for lm in models:
        statics[lm.name] = static_stats(lm, size)
        for rt in runtimes:
            k += 1
            bar.progress(0.3 * k / n_prep, text=f"Preparing {lm.name} · {RUNTIME_TITLES[rt]}"
                         + (" (export/quantise, once per checkpoint)" if rt.startswith("ort") else ""))
            try:
                calib = calibration(lm) if rt == "ort_int8" else None
                runners[(lm.name, rt)] = make_runner(lm, rt, artifacts_root(), calib, threads=None or 0)
            except Exception as exc:  # one runtime failing must not lose the others
                errors.append(f"{lm.name} · {rt}: {exc}")
    timings = []
    batches = sorted(set(batches) | {1})
    for j, b in enumerate(batches):
        def cb(frac: float, what: str, j=j) -> None:
            bar.progress(0.3 + 0.7 * (j + frac) / len(batches), text=f"Timing {what}")
        res = interleaved(runners, size, b, warmup=2 if b > 1 else 3, repeats=repeats if b == 1 else max(3, repeats // 4),
                          progress=cb)
        timings += list(res.values())
    cache = ResultCache(workspace_dir() / "cache" / "efficiency")
    by_name = {lm.name: lm for lm in models}
    for t in timings:
        t.peak_mem_mb = peak_memory_mb(by_name[t.model], t.runtime, size, t.batch) if t.batch == 1 else None
        cache.put(by_name[t.model].ckpt_id, t)
    for lm in models:
        fp32, q8 = onnx_paths(artifacts_root(), lm)
        s = statics[lm.name]
        s.onnx_fp32_mb = round(fp32.stat().st_size / 2**20, 2) if fp32.is_file() else None
        s.onnx_int8_mb = round(q8.stat().st_size / 2**20, 2) if q8.is_file() else None
    bar.progress(1.0, text="Done")
    return {"size": size, "statics": {k: asdict(v) for k, v in statics.items()},
            "timings": [asdict(t) for t in timings], "errors": errors,
            "accuracy": {lm.name: (lm.card.metrics or {}).get("slice_accuracy") for lm in models},
            "keys": {lm.name: lm.key for lm in models}}


def cached(models: list[LoadedModel], runtimes: list[str], size: int) -> dict | None:
    """Earlier measurements of these checkpoints on this host (batch 1), if all are cached."""
    cache = ResultCache(workspace_dir() / "cache" / "efficiency")
    timings = []
    for lm in models:
        for rt in runtimes:
            t = cache.get(lm.ckpt_id, rt, size, 1)
            if t is None:
                return None
            t.model = lm.name
            timings.append(asdict(t))
    return {"size": size, "statics": {lm.name: asdict(static_stats(lm, size)) for lm in models}, "timings": timings,
            "errors": [], "accuracy": {lm.name: (lm.card.metrics or {}).get("slice_accuracy") for lm in models},
            "keys": {lm.name: lm.key for lm in models}, "from_cache": True}


def tables(res: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per model static table, timing table with ratios to the baseline's eager CPU latency)."""
    st_df = pd.DataFrame(res["statics"].values())
    t = pd.DataFrame(res["timings"])
    base = t[(t["runtime"] == "eager_cpu") & (t["batch"] == 1) & (t["model"].map(res["keys"]) == "baseline")]
    base_ms = float(base["p50_ms"].iloc[0]) if len(base) else None
    t["× baseline eager"] = (t["p50_ms"] / base_ms).round(3) if base_ms else None
    return st_df, t


def table1(res: dict) -> pd.DataFrame:
    """Paper 000's Table I as reported, beside the same rows as measured here."""
    rep = pd.read_csv(TABLE1)
    st_df, t = tables(res)
    st_df["key"] = st_df["model"].map(res["keys"])
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
                        "measured accuracy (%)": None if res["accuracy"].get(m["model"]) is None
                        else round(100 * res["accuracy"][m["model"]], 1)})
            if len(base) and eager.get(base.iloc[0]["model"]):
                lat = eager.get(m["model"])
                row["measured latency × baseline"] = None if lat is None else round(lat / eager.get(base.iloc[0]["model"]), 2)
        rows.append(row)
    return pd.DataFrame(rows)
