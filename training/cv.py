"""Patient-grouped k-fold cross-validation of a model-set recipe, with the classical reference on the same folds.

With 14 patients one split is noise. Each repeat shuffles the patients into ``folds`` folds
(stratified by each patient's worst slice; a slice without a patient ID is its own patient).
For every fold the recipe's steps run exactly as ``make real-models`` runs them (the fold's own
baseline is the teacher and the pruning parent), on the other folds' patients, and score the
held-out fold. Out-of-fold scores are pooled per repeat (every slice is scored once, by models that
never saw its patient) and summarised as ROC-AUC, accuracy, sensitivity and specificity at
P(severe) ≥ 0.5, and Spearman ρ with the involvement; mean ± sd over repeats. The classical
reference (``training.classical``) is fitted and scored on the same folds. On held-out severe
slices with infection masks, Grad-CAM peaks are checked against the masks (``training.cam_eval``).

Results are written per (repeat, fold, model) as they finish, so a cancelled or killed
cross-validation resumes where it stopped; fold models are deleted once their fold is done.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from .classical import reference_scores
from .config import CVConfig
from .data import load_dataset, prepare
from .fsutil import read_json, write_json_atomic, write_text_atomic
from .model_set import Recipe, config_for
from .pipeline import execute
from .progress import Mirror, OnProgress
from .runs import RunStore

log = logging.getLogger(__name__)


def recipe_named(name: str) -> Recipe:
    if name == "demo":
        from .demo import DEMO

        return DEMO
    from .real import REAL

    return REAL


def plan_steps(recipe: Recipe, models: list[str]) -> list[str]:
    """The recipe's steps needed for ``models`` (the baseline too when a model starts from it), in order."""
    starts_from_baseline = {k for k, step in recipe.steps if step.get("command") in ("distill", "prune")}
    need = set(models) | ({"baseline"} if set(models) & starts_from_baseline else set())
    return [k for k in recipe.keys if k in need]


def _result_path(out: Path, r: int, f: int, key: str) -> Path:
    return out / "results" / f"r{r}-f{f}-{key}.json"


def run(cv: CVConfig, out: Path, progress: OnProgress | None = None) -> dict[str, Any]:
    """Cross-validate ``cv.recipe``; writes ``out/report.{json,md}`` and returns the report."""
    recipe = recipe_named(cv.recipe)
    steps = plan_steps(recipe, cv.models)
    total = cv.repeats * cv.folds * len(steps)
    mirror = Mirror(progress)
    t0 = time.time()
    try:
        for r in range(cv.repeats):
            for f in range(cv.folds):
                _fold(cv, recipe, steps, out, r, f, mirror, total, t0)
    finally:
        mirror.close()
    report = summarise(cv, out, steps)
    report["seconds"] = round(time.time() - t0, 1)
    write_json_atomic(out / "report.json", report)
    write_text_atomic(out / "report.md", markdown(report))
    return report


def _fold(cv: CVConfig, recipe: Recipe, steps: list[str], out: Path, r: int, f: int, mirror: Mirror, total: int,
          t0: float) -> None:
    seed = cv.seed + r
    fold_root = out / "folds" / f"r{r}f{f}"
    overrides = {"data": {"cv_folds": cv.folds, "cv_fold": f, "cv_seed": seed}}
    baseline: Path | None = None
    for i, key in enumerate(steps):
        path = _result_path(out, r, f, key)
        done = read_json(path)
        if done is not None:
            baseline = Path(done["model_dir"]) if key == "baseline" else baseline
            continue
        store = RunStore(fold_root)
        index = (r * cv.folds + f) * len(steps) + i
        mirror.point(store, {"stage": f"repeat {r + 1}/{cv.repeats} · fold {f + 1}/{cv.folds} · {key}",
                             "unit": "step", "epoch": index + 1, "epochs": total,
                             "elapsed_s": round(time.time() - t0, 1)})
        cfg = config_for(recipe, key, cv.quick, baseline or fold_root / "missing-baseline",
                         {**overrides, "name": f"cv-r{r}f{f}-{key}"})
        run = execute(cfg, store=store)
        if key == "baseline":
            baseline = run.model_dir
        result = {"repeat": r, "fold": f, "model": key, "model_dir": str(run.model_dir), "seed": seed,
                  "predictions": (run.evaluation() or {}).get("predictions"), "temperature": run.summary.get("temperature")}
        if cv.cam and key in cv.models:
            result["cam"] = _cam(cfg, run.model_dir)
        write_json_atomic(path, result)
    classical = _result_path(out, r, f, "classical")
    if read_json(classical) is None:
        write_json_atomic(classical, _classical(recipe, cv, overrides))
    shutil.rmtree(fold_root, ignore_errors=True)  # every result of this fold is on disk: drop its models


def _classical(recipe: Recipe, cv: CVConfig, overrides: dict[str, Any]) -> dict[str, Any]:
    cfg = config_for(recipe, "baseline", cv.quick, Path("."), overrides)
    data = prepare(cfg.data, cfg.pre, cfg.seed)
    labelled = data.labels >= 0
    train = np.nonzero(labelled & (data.split >= 0) & (data.split < 2))[0]
    test = np.nonzero(labelled & (data.split == 2))[0]
    scores = reference_scores(data.features, data.labels, data.involvement, train, test)
    inv = data.involvement[test]
    return {"predictions": {
        "case": data.cases[test].tolist(), "patient": data.patients[test].tolist(), "label": data.labels[test].tolist(),
        "involvement": [None if np.isnan(v) else float(v) for v in inv],
        "scores": {k: [float(x) for x in v] for k, v in scores.items()},
    }}


def _cam(cfg, model_dir: Path) -> dict[str, Any]:
    ds = load_dataset(cfg.data)
    data = prepare(cfg.data, cfg.pre, cfg.seed)
    test = (data.split == 2) & (data.labels == 1)
    wanted = set(data.cases[test].tolist())
    cases = [c for c in ds.cases if c.case_id in wanted and c.n_slices == 1]
    from .cam_eval import cam_in_lesions

    return cam_in_lesions(model_dir, cases)


# ------------------------------------------------------------------ summary
def _metrics(scores: np.ndarray, labels: np.ndarray, inv: np.ndarray, threshold: float | None) -> dict[str, Any]:
    out: dict[str, Any] = {"n": int(len(labels)), "severe": int(labels.sum())}
    out["roc_auc"] = float(roc_auc_score(labels, scores)) if len(set(labels.tolist())) == 2 else None
    known = ~np.isnan(inv)
    out["spearman_involvement"] = float(spearmanr(scores[known], inv[known]).statistic) if known.sum() > 2 else None
    if threshold is not None:
        pred = scores >= threshold
        tp, tn = int((pred & (labels == 1)).sum()), int((~pred & (labels == 0)).sum())
        out.update({"accuracy": (tp + tn) / len(labels),
                    "sensitivity": tp / max(int((labels == 1).sum()), 1),
                    "specificity": tn / max(int((labels == 0).sum()), 1)})
    return out


def _pooled(items: list[dict[str, Any]], score_key: str | None) -> dict[str, np.ndarray]:
    lab, inv, sc, fold = [], [], [], []
    for it in items:
        p = it["predictions"] or {}
        lab += p.get("label", [])
        inv += [np.nan if v is None else v for v in p.get("involvement", [])]
        s = p["p_severe"] if score_key is None else p["scores"].get(score_key, [])
        sc += s
        fold += [it["fold"]] * len(s)
    return {"labels": np.array(lab, int), "inv": np.array(inv, float), "scores": np.array(sc, float),
            "fold": np.array(fold, int)}


def _per_fold_auc(p: dict[str, np.ndarray]) -> list[float | None]:
    out = []
    for f in sorted(set(p["fold"].tolist())):
        m = p["fold"] == f
        out.append(float(roc_auc_score(p["labels"][m], p["scores"][m])) if len(set(p["labels"][m].tolist())) == 2 else None)
    return out


def _mean_sd(values: list[float | None]) -> dict[str, float | None]:
    v = [x for x in values if x is not None]
    return {"mean": float(np.mean(v)) if v else None, "sd": float(np.std(v)) if len(v) > 1 else (0.0 if v else None)}


def summarise(cv: CVConfig, out: Path, steps: list[str]) -> dict[str, Any]:
    """Pool every finished repeat's out-of-fold scores (a repeat counts once all its folds are done)."""
    rows: dict[str, dict[str, Any]] = {}
    repeats_done = []
    for r in range(cv.repeats):
        if all(read_json(_result_path(out, r, f, k)) for f in range(cv.folds) for k in steps + ["classical"]):
            repeats_done.append(r)
    names = [k for k in steps if k in cv.models]
    classical_names: list[str] = []
    for r in repeats_done:
        cl = [dict(read_json(_result_path(out, r, f, "classical")), fold=f) for f in range(cv.folds)]
        for name in sorted({k for c in cl for k in c["predictions"]["scores"]}):
            if name not in classical_names:
                classical_names.append(name)
            p = _pooled(cl, name)
            rows.setdefault(name, {"kind": "classical", "repeats": []})["repeats"].append(
                {**_metrics(p["scores"], p["labels"], p["inv"], None), "fold_auc": _per_fold_auc(p)})
        for key in names:
            items = [read_json(_result_path(out, r, f, key)) for f in range(cv.folds)]
            p = _pooled(items, None)
            cams = [it.get("cam") for it in items if it.get("cam") and it["cam"].get("n")]
            row = {**_metrics(p["scores"], p["labels"], p["inv"], 0.5), "fold_auc": _per_fold_auc(p)}
            if cams:
                n = sum(c["n"] for c in cams)
                row["cam"] = {"n": n, **{k: sum(c[k] * c["n"] for c in cams) / n for k in
                                         ("peak_in_infection", "uniform_peak", "mass_in_infection", "uniform_mass")}}
            rows.setdefault(key, {"kind": "learned", "repeats": []})["repeats"].append(row)
    for name, row in rows.items():
        reps = row["repeats"]
        row["roc_auc"] = _mean_sd([x["roc_auc"] for x in reps])
        for k in ("accuracy", "sensitivity", "specificity", "spearman_involvement"):
            if reps and k in reps[0]:
                row[k] = _mean_sd([x.get(k) for x in reps])
        cams = [x["cam"] for x in reps if "cam" in x]
        if cams:
            row["cam"] = {k: float(np.mean([c[k] for c in cams])) for k in cams[0]}
    base = rows.get("baseline", {}).get("roc_auc", {}).get("mean")
    for key in names:
        if key in rows and base is not None and rows[key]["roc_auc"]["mean"] is not None:
            rows[key]["delta_vs_baseline"] = rows[key]["roc_auc"]["mean"] - base
    best_ref = max((rows[n]["roc_auc"]["mean"] or 0.0 for n in classical_names if n in rows), default=None)
    return {"recipe": cv.recipe, "folds": cv.folds, "repeats_planned": cv.repeats, "repeats_done": len(repeats_done),
            "seed": cv.seed, "models": names, "classical": classical_names, "rows": rows,
            "best_classical_auc": best_ref, "definition": __doc__.split("\n\n")[1].replace("\n", " ")}


def markdown(report: dict[str, Any]) -> str:
    def ms(d: dict | None, digits: int = 3) -> str:
        if not d or d.get("mean") is None:
            return "–"
        return f"{d['mean']:.{digits}f} ± {d['sd']:.{digits}f}" if report["repeats_done"] > 1 else f"{d['mean']:.{digits}f}"

    lines = [
        f"Patient-grouped {report['folds']}-fold cross-validation, {report['repeats_done']} repeat(s) "
        f"(seed {report['seed']}{'…' + str(report['seed'] + report['repeats_done'] - 1) if report['repeats_done'] > 1 else ''}), "
        f"recipe '{report['recipe']}'. Pooled out-of-fold scores; accuracy, sensitivity and specificity at "
        "P(severe) ≥ 0.5.", "",
        "| model | ROC-AUC | Δ vs baseline | accuracy | sensitivity | specificity | Spearman ρ (involvement) | "
        "CAM peak in infection (uniform map) | per-fold AUC |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    rows = report["rows"]
    for name in report["models"] + report["classical"]:
        if name not in rows:
            continue
        row = rows[name]
        cam = row.get("cam")
        cam_txt = f"{cam['peak_in_infection']:.2f} ({cam['uniform_peak']:.2f})" if cam else "–"
        folds = " / ".join("–" if a is None else f"{a:.2f}" for a in row["repeats"][0]["fold_auc"])
        delta = f"{row['delta_vs_baseline']:+.3f}" if "delta_vs_baseline" in row else "–"
        label = name if row["kind"] == "learned" else f"*classical: {name}*"
        lines.append(f"| {label} | {ms(row['roc_auc'])} | {delta} | {ms(row.get('accuracy'), 2)} | "
                     f"{ms(row.get('sensitivity'), 2)} | {ms(row.get('specificity'), 2)} | "
                     f"{ms(row.get('spearman_involvement'), 2)} | {cam_txt} | {folds} |")
    return "\n".join(lines) + "\n"
