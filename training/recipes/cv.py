"""Cross-validation of a model-set recipe, by patient or by source, with the classical reference on the same folds.

With 14 patients one split is noise. Two splits: ``patients`` shuffles the patients into ``folds``
folds each repeat (stratified by each patient's worst slice; a slice without a patient ID is its own
patient); ``sources`` leaves one source out at a time (``training.data.prepare.SOURCES``: coronacases.org,
radiopaedia.org, MedSeg), which is what a new hospital's scans are to a model. For every fold the
recipe's steps run exactly as ``make real-models`` runs them (the fold's own baseline is the teacher
and the pruning parent), on the other patients, and score the held-out ones. Out-of-fold scores are
pooled per repeat (every slice is scored once, by models that never saw its patient) and summarised
as Spearman ρ with the involvement, ROC-AUC, and accuracy, sensitivity and specificity at the recipe's
operating point; mean ± sd over repeats; and per source of the held-out slices. The operating point is a
learned involvement (% of lung) chosen on out-of-fold predictions (a class-balanced logistic fit,
``training.evaluation.evaluate.involvement_operating_point``), because a fold's own
validation split holds two or three severe slices and its slices are no harder than the training ones:
the maps of a new patient cover about half of a large lesion, the validation split cannot show that.
Each fold is scored at the point chosen on the *other* folds' out-of-fold predictions (cross-fitted:
that fold's patients never choose their own cut); the point chosen on all folds is what a model set
built by the recipe uses (``VerdictRule.at_involvement``). Each fold model's own cut (its card's, chosen
on its validation split) is reported beside it. The classical reference (``training.data.classical``)
is fitted and scored on the same folds. On held-out
slices with doctor-made masks (MedSeg) the learned lesion maps are scored by Dice on the slice's own
grid (``training.evaluation.lesion``); on held-out severe slices, Grad-CAM peaks are checked against the
masks (``training.evaluation.cam``).

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

from ctmodels.atomic import read_json, write_json_atomic, write_text_atomic
from ctmodels.verdict import DEFAULT_THRESHOLD_PCT

from ..config import CVConfig, RunConfig
from ..data.classical import reference_scores
from ..data.mask_artefacts import artefact_free, artefact_shares
from ..data.prepare import SOURCES, load_dataset, prepare, source_of
from ..engine.pipeline import execute
from ..evaluation.evaluate import auc, involvement_operating_point, verdict_rates
from ..jobs.lanes import lane_count, run_in_lanes
from ..jobs.progress import Mirror, OnProgress
from ..jobs.registry import RunStore
from .model_set import Recipe, config_for, longest_first

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


def fold_names(cv: CVConfig) -> list[str]:
    """What each fold holds out: 'fold k' for patient folds, the source's key for source folds."""
    return list(SOURCES) if cv.split == "sources" else [f"fold {f + 1}" for f in range(cv.folds)]


def _fold_data(cv: CVConfig, f: int, seed: int) -> dict[str, Any]:
    if cv.split == "sources":
        return {"holdout_source": list(SOURCES)[f]}
    return {"cv_folds": cv.folds, "cv_fold": f, "cv_seed": seed}


def run(cv: CVConfig, out: Path, progress: OnProgress | None = None) -> dict[str, Any]:
    """Cross-validate ``cv.recipe``; writes ``out/report.{json,md}`` and returns the report."""
    recipe = recipe_named(cv.recipe)
    steps = plan_steps(recipe, cv.models)
    n_folds = len(fold_names(cv))
    total = cv.repeats * n_folds * len(steps)
    mirror = Mirror(progress)
    t0 = time.time()
    try:
        for r in range(cv.repeats):
            for f in range(n_folds):
                _fold(cv, recipe, steps, out, r, f, mirror, total, t0)
    finally:
        mirror.close()
    if progress:
        progress({"stage": "checking the model-made masks for edge artefacts", "unit": "step", "epoch": total,
                  "epochs": total, "batch": 0, "batches": 1000, "elapsed_s": round(time.time() - t0, 1)})
    _artefact_shares(cv, recipe, out)
    earlier = (read_json(out / "report.json") or {}).get("seconds") or 0.0  # a finished run summarised again
    report = summarise(cv, out, steps)
    report["seconds"] = round(earlier + time.time() - t0, 1)
    write_json_atomic(out / "report.json", report)
    write_text_atomic(out / "report.md", markdown(report))
    return report


def _fold(cv: CVConfig, recipe: Recipe, steps: list[str], out: Path, r: int, f: int, mirror: Mirror, total: int,
          t0: float) -> None:
    seed = cv.seed + r
    fold_root = out / "folds" / f"r{r}f{f}"
    n_folds = len(fold_names(cv))
    # A fold model chooses its cut on its own validation split: the recipe's operating point was chosen on these
    # very folds, so using it here would score each fold at a point its own patients helped choose.
    overrides: dict[str, Any] = {"data": _fold_data(cv, f, seed), "verdict_op_pct": None}
    if cv.split == "sources" and r:
        overrides["seed"] = seed  # the held-out source is the same every repeat: vary the training instead
    first = (r * n_folds + f) * len(steps)  # this fold's first step among all of the cross-validation's
    baseline: Path | None = None
    later: list[tuple[str, int]] = []  # (step, its index in the fold)
    for i, key in enumerate(steps):
        done = read_json(_result_path(out, r, f, key))
        if done is not None:
            baseline = Path(done["model_dir"]) if key == "baseline" else baseline
        elif key == "baseline":  # the teacher and pruning parent of the others: first, with every core
            mirror.point(RunStore(fold_root), _head(cv, r, f, key, first + i, total, t0))
            baseline = Path(_fold_step(*_step_job(cv, recipe, out, r, f, key, overrides, baseline)))
        else:
            later.append((key, i))
    lanes = lane_count()
    if lanes > 1 and len(later) > 1:  # the rest start from the baseline only: side by side (training.jobs.lanes)
        later = longest_first(recipe, later)
        what = f"{', '.join(k for k, _ in later)} ({lanes} at a time)"
        mirror.point(RunStore(fold_root), _head(cv, r, f, what, first + min(i for _, i in later), total, t0))
        run_in_lanes([(_fold_step, _step_job(cv, recipe, out, r, f, key, overrides, baseline)) for key, _ in later],
                     lanes)
    else:
        for key, i in later:
            mirror.point(RunStore(fold_root), _head(cv, r, f, key, first + i, total, t0))
            _fold_step(*_step_job(cv, recipe, out, r, f, key, overrides, baseline))
    classical = _result_path(out, r, f, "classical")
    if read_json(classical) is None:
        write_json_atomic(classical, _classical(recipe, cv, overrides))
    shutil.rmtree(fold_root, ignore_errors=True)  # every result of this fold is on disk: drop its models


def _head(cv: CVConfig, r: int, f: int, what: str, index: int, total: int, t0: float) -> dict[str, Any]:
    """The cross-validation's position as its progress record's head: ``what`` trains, step ``index`` of ``total``."""
    n_folds = len(fold_names(cv))
    return {"stage": f"repeat {r + 1}/{cv.repeats} · {fold_names(cv)[f]} ({f + 1}/{n_folds}) · {what}", "unit": "step",
            "epoch": index + 1, "epochs": total, "elapsed_s": round(time.time() - t0, 1)}


def _step_job(cv: CVConfig, recipe: Recipe, out: Path, r: int, f: int, key: str, overrides: dict[str, Any],
              baseline: Path | None) -> tuple[Any, ...]:
    """The arguments of ``_fold_step`` for one step of one fold."""
    fold_root = out / "folds" / f"r{r}f{f}"
    cfg = config_for(recipe, key, cv.quick, baseline or fold_root / "missing-baseline",
                     {**overrides, "name": f"cv-r{r}f{f}-{key}"})
    meta = {"repeat": r, "fold": f, "fold_name": fold_names(cv)[f], "model": key, "seed": cv.seed + r}
    return cfg.to_dict(), fold_root, _result_path(out, r, f, key), meta, key in cv.models, cv.cam


def _fold_step(cfg: dict[str, Any], fold_root: Path, path: Path, meta: dict[str, Any], reported: bool,
               cam: bool) -> str:
    """Train one step of one fold and write its result (predictions on the held-out patients; for a reported model
    also Grad-CAM and lesion Dice on the held-out cases); returns the model's folder. Runs here or in a lane."""
    cfg = RunConfig.from_dict(cfg)
    run = execute(cfg, store=RunStore(fold_root))
    result = {**meta, "model_dir": str(run.model_dir), "predictions": (run.evaluation() or {}).get("predictions"),
              "temperature": run.summary.get("temperature"), "verdict": run.summary.get("verdict")}
    if reported:
        held_out = _held_out_cases(cfg)
        if cam:
            from ..evaluation.cam import cam_in_lesions

            result["cam"] = cam_in_lesions(run.model_dir, held_out["severe"])
        from ..evaluation.lesion import lesion_dice_on_cases

        result["dice"] = lesion_dice_on_cases(run.model_dir, held_out["doctor_masks"])
    write_json_atomic(path, result)
    return str(run.model_dir)


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


def _held_out_cases(cfg) -> dict[str, list]:
    """The fold's held-out 2-D slices: the severe ones (Grad-CAM check) and those with doctor-made masks
    (MedSeg, lesion Dice); never trained on in this fold."""
    ds = load_dataset(cfg.data)
    data = prepare(cfg.data, cfg.pre, cfg.seed)
    test = data.split == 2
    severe = set(data.cases[test & (data.labels == 1)].tolist())
    doctor = {c for c, p in zip(data.cases[test].tolist(), data.patients[test].tolist()) if source_of(p) == "medseg"}
    flat = [c for c in ds.cases if c.n_slices == 1]
    return {"severe": [c for c in flat if c.case_id in severe], "doctor_masks": [c for c in flat if c.case_id in doctor]}


def _artefact_shares(cv: CVConfig, recipe: Recipe, out: Path) -> dict[str, float]:
    """Each model-made mask's share of edge artefacts (``training.data.mask_artefacts``), once per cross-validation."""
    path = out / "mask_artefacts.json"
    shares = read_json(path)
    if shares is None:
        cfg = config_for(recipe, "baseline", cv.quick, Path("."), {})
        shares = artefact_shares(load_dataset(cfg.data).cases)
        write_json_atomic(path, shares)
    return shares


# ------------------------------------------------------------------ summary
def _metrics(scores: np.ndarray, labels: np.ndarray, inv: np.ndarray, severe: np.ndarray | None,
             inv_clean: np.ndarray | None = None) -> dict[str, Any]:
    """Ranking metrics, and (given each slice's verdict, ``severe``) accuracy, sensitivity and specificity;
    with ``inv_clean`` (the involvement without mask artefacts) the ranking against it too."""
    out: dict[str, Any] = {"n": int(len(labels)), "severe": int(labels.sum())}
    out["roc_auc"] = auc(labels, scores)
    out["spearman_involvement"] = _spearman(scores, inv)
    if inv_clean is not None:
        out["spearman_artefact_free"] = _spearman(scores, inv_clean)
    if severe is not None:
        out.update(verdict_rates(severe, labels))
    return out


def _spearman(scores: np.ndarray, inv: np.ndarray) -> float | None:
    known = ~np.isnan(inv)
    return float(spearmanr(scores[known], inv[known]).statistic) if known.sum() > 2 else None


def _operating_points(p: dict[str, np.ndarray], threshold_pct: float) -> tuple[np.ndarray, list[float], dict[str, Any]]:
    """Verdicts at the cross-fitted operating point (each fold's from the other folds), those points, and the
    point chosen on every fold (what the recipe's model set uses)."""
    learned, labels, fold = p["learned"], p["labels"], p["fold"]
    severe = np.zeros(len(labels), bool)
    points = []
    for f in sorted(set(fold.tolist())):
        op, _ = involvement_operating_point(learned[fold != f], labels[fold != f], threshold_pct)
        severe[fold == f] = learned[fold == f] >= op
        points.append(op)
    op, how = involvement_operating_point(learned, labels, threshold_pct)
    return severe, points, {"learned_pct": op, **how}


def _pooled(items: list[dict[str, Any]], score_key: str | None, shares: dict[str, float]) -> dict[str, np.ndarray]:
    """Every fold's held-out predictions in one set of arrays; ``shares``: each case's mask artefacts, which the
    artefact-free involvement (``inv_clean``; None without any model-made mask) leaves out."""
    lab, inv, sc, fold, cut, pat, learned, case = [], [], [], [], [], [], [], []
    for it in items:
        p = it["predictions"] or {}
        learned += p.get("learned_involvement", [])
        lab += p.get("label", [])
        inv += [np.nan if v is None else v for v in p.get("involvement", [])]
        s = p["p_severe"] if score_key is None else p["scores"].get(score_key, [])
        sc += s
        fold += [it["fold"]] * len(s)
        cut += [float(p.get("cut", 0.5))] * len(s)
        pat += p.get("patient", [])
        case += p.get("case", [])
    inv_clean = None
    if shares and len(case) == len(inv):
        inv_clean = np.array([v if np.isnan(v) else artefact_free(v, shares.get(c, 0.0)) for c, v in zip(case, inv)])
    return {"labels": np.array(lab, int), "inv": np.array(inv, float), "inv_clean": inv_clean, "scores": np.array(sc, float),
            "fold": np.array(fold, int), "cut": np.array(cut, float), "source": np.array([source_of(x) for x in pat]),
            "learned": np.array(learned, float) if len(learned) == len(lab) else None}


def _per_fold(p: dict[str, np.ndarray]) -> dict[str, list[float | None]]:
    """AUC and Spearman ρ of each fold's held-out slices under that fold's own model: how far the pooled figures
    hang on one fold, and what one model ranks (the pooled ρ also mixes the fold models' scales)."""
    masks = [p["fold"] == f for f in sorted(set(p["fold"].tolist()))]
    return {"fold_auc": [auc(p["labels"][m], p["scores"][m]) for m in masks],
            "fold_spearman": [_spearman(p["scores"][m], p["inv"][m]) for m in masks]}


def _by_source(p: dict[str, np.ndarray], severe: np.ndarray | None) -> dict[str, dict[str, Any]]:
    """The pooled metrics restricted to each source's held-out slices."""
    clean = p["inv_clean"]
    return {src: _metrics(p["scores"][m], p["labels"][m], p["inv"][m], None if severe is None else severe[m],
                          None if clean is None else clean[m])
            for src in SOURCES if (m := p["source"] == src).any()}


def _mean_sd(values: list[float | None]) -> dict[str, float | None]:
    v = [x for x in values if x is not None]
    return {"mean": float(np.mean(v)) if v else None, "sd": float(np.std(v)) if len(v) > 1 else (0.0 if v else None)}


def _weighted(parts: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, Any] | None:
    parts = [c for c in parts if c and c.get("n")]
    if not parts:
        return None
    n = sum(c["n"] for c in parts)
    return {"n": n, **{k: sum(c[k] * c["n"] for c in parts) / n for k in keys}}


def summarise(cv: CVConfig, out: Path, steps: list[str]) -> dict[str, Any]:
    """Pool every finished repeat's out-of-fold scores (a repeat counts once all its folds are done)."""
    rows: dict[str, dict[str, Any]] = {}
    repeats_done = []
    n_folds = len(fold_names(cv))
    for r in range(cv.repeats):
        if all(read_json(_result_path(out, r, f, k)) for f in range(n_folds) for k in steps + ["classical"]):
            repeats_done.append(r)
    names = [k for k in steps if k in cv.models]
    shares = read_json(out / "mask_artefacts.json") or {}
    classical_names: list[str] = []
    for r in repeats_done:
        cl = [dict(read_json(_result_path(out, r, f, "classical")), fold=f) for f in range(n_folds)]
        for name in sorted({k for c in cl for k in c["predictions"]["scores"]}):
            if name not in classical_names:
                classical_names.append(name)
            p = _pooled(cl, name, shares)
            rows.setdefault(name, {"kind": "classical", "repeats": []})["repeats"].append(
                {**_metrics(p["scores"], p["labels"], p["inv"], None, p["inv_clean"]), **_per_fold(p),
                 "by_source": _by_source(p, None)})
        for key in names:
            items = [read_json(_result_path(out, r, f, key)) for f in range(n_folds)]
            p = _pooled(items, None, shares)
            own = p["scores"] >= p["cut"]
            row = {"own_cut": verdict_rates(own, p["labels"]), "cuts": [float(it["predictions"].get("cut", 0.5)) for it in items]}
            severe = own
            if p["learned"] is not None:
                threshold = float((items[0].get("verdict") or {}).get("threshold_pct", DEFAULT_THRESHOLD_PCT))
                severe, row["fold_points_pct"], row["operating_point"] = _operating_points(p, threshold)
            row.update({**_metrics(p["scores"], p["labels"], p["inv"], severe, p["inv_clean"]), **_per_fold(p),
                        "by_source": _by_source(p, severe)})
            cam = _weighted([it.get("cam") for it in items],
                            ("peak_in_infection", "uniform_peak", "mass_in_infection", "uniform_mass"))
            if cam:
                row["cam"] = cam
            dice = _weighted([it.get("dice") for it in items], ("mean",))
            if dice:
                row["dice"] = dice
            rows.setdefault(key, {"kind": "learned", "repeats": []})["repeats"].append(row)
    for name, row in rows.items():
        reps = row["repeats"]
        row["roc_auc"] = _mean_sd([x["roc_auc"] for x in reps])
        for k in ("accuracy", "sensitivity", "specificity", "spearman_involvement", "spearman_artefact_free"):
            if reps and k in reps[0]:
                row[k] = _mean_sd([x.get(k) for x in reps])
        for extra in ("cam", "dice", "own_cut", "operating_point"):
            parts = [x[extra] for x in reps if extra in x]
            if parts:
                row[extra] = {k: float(np.mean(v)) if (v := [c[k] for c in parts if isinstance(c.get(k), (int, float))])
                              else None for k in parts[0]}
        folds = [v for x in reps for v in x.get("fold_spearman", []) if v is not None]
        if folds:
            row["fold_spearman"] = {"values": folds, "text": _fold_rho_text(folds)}  # text: what report.md and the page show
        sources = sorted({s for x in reps for s in x.get("by_source", {})}, key=list(SOURCES).index)
        row["by_source"] = {s: {k: _mean_sd([x["by_source"].get(s, {}).get(k) for x in reps])
                                for k in ("spearman_involvement", "spearman_artefact_free", "roc_auc", "sensitivity",
                                          "specificity", "n", "severe")}
                            for s in sources}
    base = rows.get("baseline", {}).get("roc_auc", {}).get("mean")
    base_rho = rows.get("baseline", {}).get("spearman_involvement", {}).get("mean")
    for key in names:
        if key in rows and base is not None and rows[key]["roc_auc"]["mean"] is not None:
            rows[key]["delta_vs_baseline"] = rows[key]["roc_auc"]["mean"] - base
        if key in rows and base_rho is not None and rows[key].get("spearman_involvement", {}).get("mean") is not None:
            rows[key]["rho_delta_vs_baseline"] = rows[key]["spearman_involvement"]["mean"] - base_rho
    best_ref = max((rows[n]["roc_auc"]["mean"] or 0.0 for n in classical_names if n in rows), default=None)
    return {"recipe": cv.recipe, "split": cv.split, "folds": n_folds, "fold_names": fold_names(cv),
            "repeats_planned": cv.repeats, "repeats_done": len(repeats_done),
            "seed": cv.seed, "models": names, "classical": classical_names, "rows": rows,
            "best_classical_auc": best_ref, "definition": __doc__.split("\n\n")[1].replace("\n", " ")}


def _f(d: dict | None, digits: int, repeats: int) -> str:
    if not d or d.get("mean") is None:
        return "–"
    return f"{d['mean']:.{digits}f} ± {d['sd']:.{digits}f}" if repeats > 1 else f"{d['mean']:.{digits}f}"


def _fold_rho_text(values: list[float]) -> str:
    """Each fold's ρ ("0.79 / 0.86 / 0.85"), or their range when there are many (several repeats)."""
    return " / ".join(f"{v:.2f}" for v in values) if len(values) <= 5 else f"{min(values):.2f}–{max(values):.2f}"


def markdown(report: dict[str, Any]) -> str:
    reps = report["repeats_done"]
    split = report.get("split", "patients")
    what = (f"Leave-one-source-out ({', '.join(report.get('fold_names', []))})" if split == "sources"
            else f"Patient-grouped {report['folds']}-fold cross-validation")
    seeds = f"seed {report['seed']}" + (f"…{report['seed'] + reps - 1}" if reps > 1 else "")
    sources = [s for s in SOURCES if any(s in report["rows"][n].get("by_source", {}) for n in report["rows"])]
    rows = report["rows"]
    clean = any((r.get("spearman_artefact_free") or {}).get("mean") is not None for r in rows.values())
    per_fold = split != "sources" and any("fold_spearman" in r for r in rows.values())  # by source: the ρ per source
    lines = [
        f"{what}, {reps} repeat(s) ({seeds}), recipe '{report['recipe']}'. Pooled out-of-fold scores; accuracy, "
        "sensitivity and specificity at the recipe's operating point, cross-fitted: each fold's slices are judged "
        "at the learned involvement chosen (class-balanced logistic fit) on the other folds' out-of-fold "
        "predictions. 'Operating point' is the one chosen on every fold, what `make real-models` writes into the "
        "cards; 'own cut' is each fold model's card cut, chosen on its validation split. Lesion Dice: held-out "
        "MedSeg slices (doctor's masks), on the slice's own grid, the map as drawn (`lesion_map` ≥ 0.5: the fold card's map cut)."
        + (" 'ρ per fold': each fold's held-out slices ranked by that fold's own model (the pooled ρ also mixes the "
           "fold models' scales)." if per_fold else "")
        + (" 'Without mask artefacts': ρ against the involvement once blobs on the image's edge outside the lung are "
           "dropped from the model-made masks (`training.data.mask_artefacts`); the goals are on the stated involvement."
           if clean else ""), "",
        "| model | Spearman ρ (involvement) | " + ("ρ per fold | " if per_fold else "")
        + ("ρ without mask artefacts | " if clean else "") + "ROC-AUC | "
        "Δ AUC vs baseline | sensitivity | specificity | accuracy | operating point (learned involvement) | "
        "sens / spec at own cut | lesion Dice | CAM peak in infection (uniform map) | "
        + " | ".join(f"ρ {s}" for s in sources) + " |",
        "|---|---|---|---|---|---|---|---|---|---|---|" + "---|" * (len(sources) + clean + per_fold),
    ]
    for name in report["models"] + report["classical"]:
        if name not in rows:
            continue
        row = rows[name]
        cam = row.get("cam")
        cam_txt = f"{cam['peak_in_infection']:.2f} ({cam['uniform_peak']:.2f})" if cam else "–"
        dice = row.get("dice")
        dice_txt = "–" if not dice else f"{dice['mean']:.3f} (n={int(round(dice['n']))})"
        delta = f"{row['delta_vs_baseline']:+.3f}" if "delta_vs_baseline" in row else "–"
        label = name if row["kind"] == "learned" else f"*classical: {name}*"
        op = row.get("operating_point") or {}
        op_txt = f"{op['learned_pct']:.1f} %" if op.get("learned_pct") is not None else "–"
        own = row.get("own_cut") or {}
        own_txt = ("–" if own.get("sensitivity") is None else
                   f"{own['sensitivity']:.2f} / {own['specificity']:.2f}")
        per_src = " | ".join(_f(row.get("by_source", {}).get(s, {}).get("spearman_involvement"), 2, reps) for s in sources)
        clean_txt = f"{_f(row.get('spearman_artefact_free'), 3, reps)} | " if clean else ""
        fold_txt = f"{(row.get('fold_spearman') or {}).get('text', '–')} | " if per_fold else ""
        lines.append(f"| {label} | {_f(row.get('spearman_involvement'), 3, reps)} | {fold_txt}{clean_txt}"
                     f"{_f(row['roc_auc'], 3, reps)} | "
                     f"{delta} | {_f(row.get('sensitivity'), 2, reps)} | {_f(row.get('specificity'), 2, reps)} | "
                     f"{_f(row.get('accuracy'), 2, reps)} | {op_txt} | {own_txt} | {dice_txt} | "
                     f"{cam_txt} | {per_src} |")
    return "\n".join(lines) + "\n"
