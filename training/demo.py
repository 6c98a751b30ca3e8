"""``python -m training demo``: build the demo model set on the demo phantoms, end to end.

baseline → ghost (from scratch) → pruned (structured L1 of the baseline) → kd (ResNet18 student of
the baseline) → sparse (unstructured magnitude pruning of the baseline) → ghost_kd (Ghost-ResNet18
student). Each finished model is published to ``workspace/models/<key>`` (what the app's pages
offer by default); existing ones are kept unless ``--force``. A report lands in
``workspace/models/demo_report.{json,md}``.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from ctmodels.checkpoint import read_card
from ctmodels.imaging.phantom import build_dataset
from ctmodels.workspace import demo_data_dir, models_dir

from .config import RunConfig, merge
from .fsutil import write_json_atomic, write_text_atomic
from .pipeline import execute
from .runs import RunStore

log = logging.getLogger(__name__)
DEMO_PATIENTS = 60

# Demo recipe: small inputs (64 px: each lung's box, side by side, outside-lung pixels neutralised)
# so six models train on a 2-core CPU in ≤ 15 min. Slices within 20–30 % involvement carry no label (the rule's excluded band): their
# label is a coin toss at the 25 % cut, and they are left out of training and slice-level metrics.
COMMON: dict[str, Any] = {
    "data": {"source": "demo", "split": [0.5, 0.2, 0.3], "excluded_band": [20.0, 30.0]},
    "optim": {"optimizer": "adamw", "lr": 2e-3, "batch_size": 32, "epochs": 10},
    "preprocessing": {"size": 64, "roi_crop": True, "roi_mode": "bilateral", "roi_pad": 0.02, "lung_mask_input": True},
    "seed": 0,
}
STEPS: list[tuple[str, dict[str, Any]]] = [
    ("baseline", {"command": "train", "model": "baseline"}),
    ("ghost", {"command": "train", "model": "ghost", "optim": {"epochs": 14}}),  # from scratch: 10 epochs left its CAMs diffuse
    ("pruned", {"command": "prune", "model": "baseline",
                "prune": {"target_ratio": 0.6, "min_ratio": 0.45, "steps": 3, "finetune_epochs": 1},
                "optim": {"lr": 3e-4}}),
    ("kd", {"command": "distill", "model": "kd", "distill": {"temperature": 4.0, "alpha": 0.5},
            "optim": {"epochs": 8}}),
    ("sparse", {"command": "prune", "model": "baseline",
                "prune": {"unstructured": True, "sparsity": 0.5, "finetune_epochs": 3},
                "optim": {"optimizer": "rmsprop", "lr": 1e-4}}),
    ("ghost_kd", {"command": "distill", "model": "ghost_kd", "distill": {"temperature": 4.0, "alpha": 0.5},
                  "optim": {"epochs": 8}}),
]
QUICK: dict[str, Any] = {
    "data": {"max_slices_per_case": 3}, "optim": {"epochs": 1, "batch_size": 8},
    "preprocessing": {"size": 32}, "augment": {"enabled": False},
}


def publish(run_model_dir: Path, key: str) -> Path:
    """Copy a run's final checkpoint to ``workspace/models/<key>`` atomically."""
    dest = models_dir() / key
    tmp = dest.with_name(f".{key}.publishing")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(run_model_dir, tmp)
    old = dest.with_name(f".{key}.old")
    if dest.exists():
        shutil.rmtree(old, ignore_errors=True)
        dest.rename(old)
    tmp.rename(dest)
    shutil.rmtree(old, ignore_errors=True)
    return dest


def config_for(key: str, step: dict[str, Any], quick: bool) -> RunConfig:
    d = merge(RunConfig().to_dict(), COMMON)
    d = merge(d, step)
    if quick:
        d = merge(d, QUICK)
    baseline = str(models_dir() / "baseline")
    if d["command"] == "distill":
        d["distill"]["teacher"] = baseline
    if d["command"] == "prune":
        d["prune"]["checkpoint"] = baseline
        if quick:
            d["prune"].update({"steps": 1, "finetune_epochs": 1, "sensitivity": False})
    d["name"] = f"demo-{key}"
    return RunConfig.from_dict(d)


def _bar(done: int, total: int, width: int = 24) -> str:
    return "[" + "#" * int(width * done / total) + "-" * (width - int(width * done / total)) + "]"


def main(force: bool = False, quick: bool = False) -> int:
    t0 = time.time()
    if not (demo_data_dir() / "manifest.json").is_file():
        print(f"building {DEMO_PATIENTS} demo phantoms into {demo_data_dir()} …", file=sys.stderr)
        build_dataset(demo_data_dir(), n_patients=DEMO_PATIENTS, seed=0,
                      progress=lambda d, n: print(f"\r  {_bar(d, n)} {d}/{n} patients", end="", file=sys.stderr))
        print(file=sys.stderr)
    store = RunStore()
    rows = []
    for i, (key, step) in enumerate(STEPS, 1):
        dest = models_dir() / key
        head = f"{_bar(i - 1, len(STEPS))} step {i}/{len(STEPS)}: {key}"
        if (dest / "card.json").is_file() and not force:
            print(f"{head} — already built, kept (use --force to retrain)", file=sys.stderr)
            rows.append(_row(key, dest, None))
            continue
        print(f"{head} — {time.time() - t0:.0f}s elapsed", file=sys.stderr, flush=True)
        ts = time.time()
        run = execute(config_for(key, step, quick), store=store)
        publish(run.model_dir, key)
        rows.append(_row(key, dest, time.time() - ts, run.id))
    total = time.time() - t0
    report = {"total_seconds": round(total, 1), "quick": quick, "models": rows}
    write_json_atomic(models_dir() / "demo_report.json", report)
    write_text_atomic(models_dir() / "demo_report.md", _markdown(report))
    print(f"{_bar(1, 1)} demo model set ready in {total / 60:.1f} min\n" + _markdown(report), file=sys.stderr)
    print(json.dumps(report))
    return 0


def _row(key: str, folder: Path, seconds: float | None, run_id: str | None = None) -> dict[str, Any]:
    card = read_card(folder)
    m = card.metrics or {}
    return {"model": key, "run": run_id or card.parent_run, "seconds": None if seconds is None else round(seconds, 1),
            "slice_accuracy": m.get("slice_accuracy"), "patient_accuracy": m.get("patient_accuracy"),
            "slice_auc": m.get("slice_auc"), "n_test_slices": m.get("n_slices"), "n_test_patients": m.get("n_patients")}


def _markdown(report: dict[str, Any]) -> str:
    lines = ["| model | slice acc | patient acc | slice AUC | train time (s) |", "|---|---|---|---|---|"]
    for r in report["models"]:
        lines.append(f"| {r['model']} | {r['slice_accuracy']} | {r['patient_accuracy']} | {r['slice_auc']} | "
                     f"{r['seconds'] if r['seconds'] is not None else 'kept'} |")
    lines.append(f"\nTotal: {report['total_seconds'] / 60:.1f} min (held-out test split: patients never seen in training).")
    return "\n".join(lines) + "\n"
