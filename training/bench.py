"""``make bench``: measure the demo model set headless; write reports/bench.json and bench.md.

Per model: params, non-zero params, size, MACs (224×224), latency at batch 1 for PyTorch eager CPU,
ONNX Runtime fp32 and int8 (and CUDA when present), ratios to the baseline's eager latency measured
in the same run, throughput over a batch sweep, ONNX parity, accuracy per runtime on held-out demo
patients; plus the warm Compare-page latency (4 models + Grad-CAM on one slice).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ctmodels.compare import compare_slice
from ctmodels.datasets import open_dataset
from ctmodels.efficiency import (
    ResultCache, available_runtimes, host_info, interleaved, make_runner, peak_memory_mb, static_stats,
)
from ctmodels.export import OrtPredictor, parity
from ctmodels.imaging import read_any
from ctmodels.imaging.lung import segment_lungs
from ctmodels.inference import LoadedModel, load_model
from ctmodels.nets import MODEL_KEYS, compare_defaults
from ctmodels.preprocess import normalize
from ctmodels.workspace import REPO_ROOT, demo_data_dir, models_dir, workspace_dir

from .config import DataConfig
from .data import Prepared, prepare
from .fsutil import write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)
REPORTS_DIR = REPO_ROOT / "reports"


def _normalised(data: Prepared, idx: np.ndarray, lm: LoadedModel) -> np.ndarray:
    x = torch.from_numpy(data.images[idx]).float().div(255.0)[:, None]
    return normalize(x, lm.pre).numpy().astype(np.float32)


def held_out(lm: LoadedModel) -> Prepared:
    """The model's own dataset, label rule and split (from its card), preprocessed its way."""
    training = lm.card.training or {}
    d = training.get("data") or {}
    cfg = DataConfig(**{k: v for k, v in d.items() if k in DataConfig.__dataclass_fields__})
    return prepare(cfg, lm.pre, int(training.get("seed", 0)))


def accuracy(fn, x: np.ndarray, y: np.ndarray, batch: int = 64) -> float:
    preds = []
    for k in range(0, len(x), batch):
        out = fn(x[k : k + batch])
        out = out.detach().float().cpu().numpy() if torch.is_tensor(out) else np.asarray(out)
        preds.append(out.argmax(1))
    return float((np.concatenate(preds) == y).mean())


def app_latency(models: list[LoadedModel], repeats: int = 5) -> dict[str, Any]:
    """Warm time from 'slice chosen' to all verdicts + GradCAM maps on the slice (Compare page)."""
    ds = open_dataset(demo_data_dir() / "kaggle")
    case = next(c for c in ds.cases if c.label == "severe")
    vol = read_any(case.image)
    lung = segment_lungs(vol)
    idx = int(np.argmax(lung.sum(axis=(1, 2))))
    compare_slice(models, vol, idx, lung)  # warm-up
    times = []
    for k in range(repeats):
        t0 = time.perf_counter()
        compare_slice(models, vol, idx - 2 + (k % 5), lung)
        times.append(time.perf_counter() - t0)
    return {"models": [m.name for m in models], "method": "GradCAM", "input_size": models[0].pre.size,
            "p50_s": round(statistics.median(times), 3), "max_s": round(max(times), 3), "n": repeats}


def model_folders() -> dict[str, Path]:
    """The demo set's checkpoints, every registered kind that has one, in the registry's order."""
    return {k: models_dir() / k for k in MODEL_KEYS if (models_dir() / k / "card.json").is_file()}


def run(size: int = 224, repeats: int = 20, sweep: tuple[int, ...] = (1, 8), out_dir: Path | None = None) -> dict:
    t0 = time.time()
    torch.set_num_threads(host_info()["cores"])  # type: ignore[arg-type]
    folders = model_folders()
    if "baseline" not in folders:
        raise SystemExit("no demo models: run `python -m training demo` first (make bench does it for you)")
    models = {k: load_model(f, k) for k, f in folders.items()}
    artifacts = workspace_dir() / "cache" / "onnx"
    data = held_out(models["baseline"])
    train_idx, test_idx = data.subset(0), data.subset(2)
    rng = np.random.default_rng(0)
    calib_idx = rng.choice(train_idx, size=min(64, len(train_idx)), replace=False)
    runtimes = available_runtimes()
    report: dict[str, Any] = {"host": host_info(), "input_size": size, "repeats": repeats, "models": {}}
    runners, statics = {}, {}
    for k, lm in models.items():
        log.info("preparing %s", k)
        calib = _normalised(data, calib_idx, lm)
        for rt in runtimes:
            runners[(k, rt)] = make_runner(lm, rt, artifacts, calib, threads=host_info()["cores"])  # type: ignore[arg-type]
        statics[k] = static_stats(lm, size)
    log.info("timing %d model/runtime pairs at batch 1, %d px", len(runners), size)
    timings = interleaved(runners, size, 1, warmup=3, repeats=repeats)
    sweeps = {b: interleaved(runners, size, b, warmup=1, repeats=max(3, repeats // 4)) for b in sweep if b != 1}
    base = timings[("baseline", "eager_cpu")].p50_ms
    cache = ResultCache(workspace_dir() / "cache" / "efficiency")
    for k, lm in models.items():
        x_test, y_test = _normalised(data, test_idx, lm), data.labels[test_idx]
        fp32, q8 = artifacts / lm.ckpt_id / "model.fp32.onnx", artifacts / lm.ckpt_id / "model.int8.onnx"
        par32 = parity(lm.model, OrtPredictor(fp32), x_test)
        par8 = parity(lm.model, OrtPredictor(q8), x_test)
        acc = {rt: round(accuracy(runners[(k, rt)], x_test, y_test), 4) for rt in runtimes}
        st = statics[k]
        for rt in runtimes:
            cache.put(lm.ckpt_id, timings[(k, rt)])
        report["models"][k] = {
            "params": st.params, "nonzero_params": st.nonzero_params, "macs": st.macs, "size_mb": st.size_mb,
            "onnx_fp32_mb": round(fp32.stat().st_size / 2**20, 2), "onnx_int8_mb": round(q8.stat().st_size / 2**20, 2),
            "latency_ms": {rt: timings[(k, rt)].p50_ms for rt in runtimes},
            "latency_p90_ms": {rt: timings[(k, rt)].p90_ms for rt in runtimes},
            "ratio_to_baseline_eager": {rt: round(timings[(k, rt)].p50_ms / base, 4) for rt in runtimes},
            "throughput_ips": {f"{rt}@b{b}": sw[(k, rt)].images_per_s for b, sw in sweeps.items() for rt in runtimes},
            "peak_mem_mb": {rt: peak_memory_mb(lm, rt, size) for rt in runtimes if rt != "ort_fp32" and rt != "ort_int8"},
            "accuracy": acc,
            "onnx_parity": {"fp32_max_abs_logit_diff": round(par32.max_abs_logit_diff, 6), "fp32_agreement": par32.agreement,
                            "int8_max_abs_logit_diff": round(par8.max_abs_logit_diff, 4), "int8_agreement": par8.agreement,
                            "n": par32.n},
            "params_ratio_to_baseline": round(st.params / statics["baseline"].params, 4),
            "test_slices": int(len(test_idx)),
        }
    app = [models[k] for k in compare_defaults() if k in models]  # what the Compare page loads
    report["app"] = app_latency(app)
    report["seconds"] = round(time.time() - t0, 1)
    report["goals"] = goals(report)
    write_report(report, out_dir)
    return report


def write_report(report: dict, out_dir: Path | None = None) -> None:
    """``bench.json`` and ``bench.md`` in ``out_dir`` (default ``reports/``), each written atomically."""
    out_dir = out_dir or REPORTS_DIR
    write_json_atomic(out_dir / "bench.json", report)
    write_text_atomic(out_dir / "bench.md", markdown(report))


def goals(r: dict) -> dict[str, Any]:
    """The Efficiency issue's targets, evaluated on this run (ratios to the same run's baseline)."""
    m = r["models"]
    g: dict[str, Any] = {}
    if "pruned" in m:
        g["pruned_eager_le_0.45"] = m["pruned"]["ratio_to_baseline_eager"]["eager_cpu"] <= 0.45
    if "kd" in m:
        g["kd_eager_le_0.45"] = m["kd"]["ratio_to_baseline_eager"]["eager_cpu"] <= 0.45
    if "ghost" in m:
        g["ghost_params_le_0.45"] = m["ghost"]["params_ratio_to_baseline"] <= 0.45
        g["ghost_faster_than_baseline_eager"] = m["ghost"]["ratio_to_baseline_eager"]["eager_cpu"] < 1.0
    def int8_row(k: str) -> dict[str, Any]:
        b = m[k]
        return {"model": k, "ratio": b["ratio_to_baseline_eager"]["ort_int8"],
                "accuracy_drop_vs_fp32": round(b["accuracy"]["ort_fp32"] - b["accuracy"]["ort_int8"], 4),
                "agreement": b["onnx_parity"]["int8_agreement"]}

    rows = [int8_row(k) for k in m]
    # deployable: int8 keeps accuracy within 1 point of fp32 and agrees with it on ≥ 99 % of held-out slices
    deployable = [r for r in rows if r["accuracy_drop_vs_fp32"] <= 0.01 and r["agreement"] >= 0.99]
    g["fastest_int8"] = min(rows, key=lambda r: r["ratio"])
    g["best_int8"] = min(deployable, key=lambda r: r["ratio"]) if deployable else None
    g["best_int8_le_0.10"] = bool(deployable) and g["best_int8"]["ratio"] <= 0.10
    g["baseline_ort_fp32_le_0.70"] = m["baseline"]["ratio_to_baseline_eager"]["ort_fp32"] <= 0.70
    g["app_le_2s"] = r["app"]["p50_s"] <= 2.0
    return g


def markdown(r: dict) -> str:
    rts = list(next(iter(r["models"].values()))["latency_ms"])
    h = r["host"]
    lines = [f"# Benchmark ({r['input_size']}×{r['input_size']}, batch 1, median of {r['repeats']})", "",
             f"Host: {h['cpu']}, {h['cores']} cores, GPU {h['gpu']}; torch {h['torch']}, onnxruntime {h['onnxruntime']}.", "",
             "| model | params (M) | non-zero (M) | GMACs | size MB | " + " | ".join(f"{rt} ms (× base)" for rt in rts)
             + " | acc eager | acc int8 |",
             "|---" * (6 + len(rts) + 1) + "|"]
    for k, m in r["models"].items():
        cells = " | ".join(f"{m['latency_ms'][rt]:.1f} ({m['ratio_to_baseline_eager'][rt]:.2f})" for rt in rts)
        lines.append(f"| {k} | {m['params'] / 1e6:.2f} | {m['nonzero_params'] / 1e6:.2f} | {m['macs'] / 1e9:.2f} | "
                     f"{m['size_mb']:.1f} | {cells} | {m['accuracy']['eager_cpu']:.3f} | {m['accuracy']['ort_int8']:.3f} |")
    a = r["app"]
    lines += ["", f"Compare page, warm, {len(a['models'])} models + GradCAM on one {a['input_size']}-px slice: "
              f"**{a['p50_s']:.2f} s** median (max {a['max_s']:.2f} s).", "", "Goals:", ""]
    lines += [f"- {k}: {v}" for k, v in r["goals"].items()]
    lines += ["", f"Benchmark took {r['seconds']:.0f} s."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.bench")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--out", default=None)
    ap.add_argument("--rerender", action="store_true", help="recompute goals and bench.md from bench.json")
    a = ap.parse_args(argv)
    out = Path(a.out) if a.out else None
    if a.rerender:
        rep = json.loads(((out or REPORTS_DIR) / "bench.json").read_text())
        rep["goals"] = goals(rep)
        write_report(rep, out)
        print(markdown(rep))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    rep = run(a.size, a.repeats, out_dir=out)
    print(markdown(rep))
    return 0


if __name__ == "__main__":
    sys.exit(main())
