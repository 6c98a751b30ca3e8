"""Build a whole phantom dataset: many patients, every layout, one manifest, atomically."""

from __future__ import annotations

import json
import logging
import math
import multiprocessing as mp
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ...atomic import recover_dir, replace_dir
from .generate import DEFAULT_THRESHOLD_PCT, PhantomConfig, generate_patient, sample_severities
from .writers import (
    LAYOUTS,
    lung_slices,
    mosmed_category,
    write_csv,
    write_dicom_series,
    write_kaggle,
    write_mosmed,
    write_png,
)

log = logging.getLogger(__name__)
MANIFEST = "manifest.json"
FORMAT_VERSION = 1


def patient_seed(seed: int, index: int) -> int:
    """Independent, reproducible seed per patient (same patient whatever the worker count)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def _build_one(args: tuple) -> dict:
    index, pid, target, seed, cfg, layouts, threshold, root = args
    root = Path(root)
    p = generate_patient(pid, target, patient_seed(seed, index), cfg)
    row: dict = {
        "patient_id": pid,
        "target_pct": round(target, 3),
        "involvement_pct": round(p.involvement_pct, 3),
        "label": p.label(threshold),
        "n_slices": int(p.hu.shape[0]),
        "lung_slices": lung_slices(p),
        "slice_involvement": [None if math.isnan(v) else round(float(v), 3) for v in p.slice_involvement()],
        "mosmed_category": mosmed_category(p.involvement_pct),
    }
    if "dicom" in layouts:
        write_dicom_series(p, root / "dicom" / pid, seed)
    if "kaggle" in layouts:
        row["kaggle"] = write_kaggle(p, root / "kaggle")
    if "mosmed" in layouts:
        write_mosmed(p, root / "mosmed", index + 1)
        row["mosmed_study"] = f"study_{index + 1:04d}"
    if "png" in layouts:
        row["png_slices"] = write_png(p, root / "png", threshold)
    return row


def build_dataset(
    out: Path | str,
    n_patients: int = 80,
    seed: int = 0,
    cfg: PhantomConfig = PhantomConfig(),
    layouts: Sequence[str] = LAYOUTS,
    threshold_pct: float = DEFAULT_THRESHOLD_PCT,
    gap_pct: float = 14.0,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Generate ``n_patients`` into ``out`` (created atomically: a crash leaves no half dataset).

    Returns the manifest path. Deterministic for a given seed and settings.
    """
    out = Path(out)
    unknown = set(layouts) - set(LAYOUTS)
    if unknown:
        raise ValueError(f"unknown layout(s) {sorted(unknown)}; choose from {list(LAYOUTS)}")
    if n_patients < 1:
        raise ValueError("need at least one patient")
    t0 = time.time()
    recover_dir(out)  # clears what a killed earlier build left beside ``out``

    def fill(tmp: Path) -> None:
        rng = np.random.default_rng(seed)
        targets = sample_severities(n_patients, rng, threshold_pct, gap_pct)
        jobs = [
            (i, f"PH{i + 1:04d}", targets[i], seed, cfg, tuple(layouts), threshold_pct, str(tmp))
            for i in range(n_patients)
        ]
        n_workers = workers or min(len(jobs), os.cpu_count() or 1)
        rows: list[dict] = [None] * n_patients  # type: ignore[list-item]
        if n_workers > 1:
            with ProcessPoolExecutor(n_workers, mp_context=mp.get_context("spawn")) as pool:
                for done, (i, row) in enumerate(zip(range(n_patients), pool.map(_build_one, jobs)), 1):
                    rows[i] = row
                    if progress:
                        progress(done, n_patients)
        else:
            for done, job in enumerate(jobs, 1):
                rows[job[0]] = _build_one(job)
                if progress:
                    progress(done, n_patients)
        _write_indexes(tmp, rows, layouts)
        manifest = {
            "format_version": FORMAT_VERSION,
            "generator": "ctmodels.imaging.phantom",
            "synthetic": True,
            "seed": seed,
            "n_patients": n_patients,
            "config": asdict(cfg),
            "threshold_pct": threshold_pct,
            "gap_pct": gap_pct,
            "layouts": list(layouts),
            "build_seconds": round(time.time() - t0, 2),
            "patients": rows,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))

    replace_dir(out, fill)
    log.info("phantom dataset with %d patients written to %s in %.1f s", n_patients, out, time.time() - t0)
    return out / MANIFEST


def _write_indexes(root: Path, rows: list[dict], layouts: Sequence[str]) -> None:
    summary = [
        {k: r[k] for k in ("patient_id", "label", "involvement_pct", "mosmed_category", "n_slices")} for r in rows
    ]
    write_csv(root / "patients.csv", summary, list(summary[0]))
    if "dicom" in layouts:
        labels = [
            {"patient_id": r["patient_id"], "series_folder": r["patient_id"], "label": r["label"],
             "involvement_pct": r["involvement_pct"], "synthetic": "yes"}
            for r in rows
        ]
        write_csv(root / "dicom" / "labels.csv", labels, list(labels[0]))
    if "kaggle" in layouts:
        meta = [r["kaggle"] for r in rows]
        write_csv(root / "kaggle" / "metadata.csv", meta, list(meta[0]))


def read_manifest(root: Path | str) -> dict | None:
    """The manifest of a phantom dataset folder, or None when the folder is not one."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if data.get("generator") == "ctmodels.imaging.phantom" else None
