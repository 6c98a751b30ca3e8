"""A model set: baseline → ghost → pruned → kd → sparse → ghost_kd trained with one recipe, published together.

Two sets exist: the demo set on the synthetic phantoms (``training.recipes.demo``) and the real set on the
real 8-bit slices (``training.recipes.real``). Both are built the same way: each finished model is
published to the set's folder (what the Compare page offers), existing ones are kept unless
``force`` or the recipe changed since they were built, and a report lands beside them. Cross-validation
(``training.recipes.cv``) runs the very same steps on each fold, with the fold's own baseline as teacher and pruning parent.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TypeVar

from ctmodels.atomic import read_json, replace_dir, write_json_atomic, write_text_atomic
from ctmodels.checkpoint import is_checkpoint, outdated_inputs, read_card

from ..config import RunConfig, merge
from ..engine.pipeline import execute
from ..evaluation.served import serve
from ..jobs.lanes import lane_count, run_in_lanes
from ..jobs.progress import Mirror, OnProgress
from ..jobs.registry import Run, RunStore


T = TypeVar("T", bound=tuple)


@dataclass(frozen=True)
class Recipe:
    """How every model of a set is trained: shared settings, the ordered steps, and tiny test settings."""

    name: str
    title: str
    common: dict[str, Any]
    steps: list[tuple[str, dict[str, Any]]]
    quick: dict[str, Any]
    folder: Callable[[], Path]  # where the set is published
    notes: str = ""
    quick_prune: dict[str, Any] = field(default_factory=lambda: {"steps": 1, "finetune_epochs": 1, "sensitivity": False})

    @property
    def keys(self) -> list[str]:
        return [k for k, _ in self.steps]

    def step(self, key: str) -> dict[str, Any]:
        return dict(self.steps)[key]


def config_for(recipe: Recipe, key: str, quick: bool, baseline: Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    """The run config of one step; distillation and pruning start from ``baseline`` (a checkpoint folder)."""
    d = merge(RunConfig().to_dict(), recipe.common)
    d = merge(d, recipe.step(key))
    if quick:
        d = merge(d, recipe.quick)
    if overrides:
        d = merge(d, overrides)
    if d["command"] == "distill":
        d["distill"]["teacher"] = str(baseline)
    if d["command"] == "prune":
        d["prune"]["checkpoint"] = str(baseline)
        if quick:
            d["prune"].update(recipe.quick_prune)
    d["name"] = d.get("name") or f"{recipe.name}-{key}"
    return RunConfig.from_dict(d)


def publish(run_model_dir: Path, dest: Path) -> Path:
    """Copy a run's final checkpoint to ``dest`` atomically (a reader sees the old or the new one).

    The folder swap of :func:`ctmodels.atomic.replace_dir`: a crash mid-way leaves the old checkpoint,
    which loading or listing (``ctmodels.checkpoint.checkpoints_in``) puts back under its name.
    """
    replace_dir(dest, lambda tmp: shutil.copytree(run_model_dir, tmp, dirs_exist_ok=True))
    return dest


def finished(on: OnProgress, steps: int) -> None:
    """The last record of a set build that finished well."""
    on({"stage": "ready", "unit": "step", "epoch": steps, "epochs": steps, "batch": 1, "batches": 1, "done": True})


def bar(done: int, total: int, width: int = 24) -> str:
    return "[" + "#" * int(width * done / total) + "-" * (width - int(width * done / total)) + "]"


def build(recipe: Recipe, force: bool = False, quick: bool = False, store: RunStore | None = None,
          progress: OnProgress | None = None, lanes: int | None = None) -> dict[str, Any]:
    """Train and publish every model of the set; returns the report (also written beside the models).

    A step that other steps start from (the baseline) trains first, alone; the steps that only start from it then
    train ``lanes`` at a time (default ``training.jobs.lanes.lane_count()``), each published as soon as it is done.
    ``progress`` gets the build's position (steps done of 6, mirrored epoch and batch of the running steps' runs).
    """
    t0 = time.time()
    store = store or RunStore()
    lanes = lane_count() if lanes is None else lanes
    folder = recipe.folder()
    rows: dict[str, dict[str, Any]] = {}
    n = len(recipe.keys)
    cfgs = {key: config_for(recipe, key, quick, folder / "baseline") for key in recipe.keys}
    parents = {Path(p).name for cfg in cfgs.values() if (p := _parent(cfg))}
    mirror = Mirror(progress)
    try:
        retrained: set[str] = set()
        later: list[tuple[str, RunConfig]] = []
        for i, key in enumerate(recipe.keys, 1):
            dest = folder / key
            head = f"{bar(i - 1, n)} step {i}/{n}: {key}"
            cfg = cfgs[key]
            built = is_checkpoint(dest) and not force
            why = _why_retrain(dest, cfg, retrained) if built else ""
            if built and not why:
                print(f"{head} — already built with this recipe, kept (use --force to retrain)", file=sys.stderr)
                rows[key] = _row(key, dest, None)
                continue
            if why:
                print(f"{head} — {why}: retraining", file=sys.stderr)
            if key in parents:
                _train_here(key, cfg, folder, store, mirror, rows, retrained, t0, n)
            else:
                later.append((key, cfg))
        if lanes > 1 and len(later) > 1:
            _train_side_by_side(longest_first(recipe, later), folder, store, lanes, mirror, rows, t0, n)
        else:
            for key, cfg in later:
                _train_here(key, cfg, folder, store, mirror, rows, retrained, t0, n)
        rows_in_order = [rows[k] for k in recipe.keys]
        for i, row in enumerate(rows_in_order, 1):  # what Compare scores with (kept when current: ``training.evaluation.served``)
            mirror.point(store, {"stage": f"choosing the served runtime of {row['model']}", "unit": "step",
                                 "epoch": i, "epochs": n, "elapsed_s": round(time.time() - t0, 1)})
            choice = serve(folder / row["model"])
            row["served_runtime"] = choice.get("runtime", "eager")
            row["served_agreement"] = choice.get("candidates", {}).get(row["served_runtime"], {}).get("verdict_agreement")
    finally:
        mirror.close()
    total = time.time() - t0
    report = {"set": recipe.name, "title": recipe.title, "total_seconds": round(total, 1), "quick": quick,
              "lanes": lanes, "models": rows_in_order, "notes": recipe.notes}
    write_json_atomic(folder / f"{recipe.name}_report.json", report)
    write_text_atomic(folder / f"{recipe.name}_report.md", markdown(report))
    print(f"{bar(1, 1)} {recipe.name} model set ready in {total / 60:.1f} min\n" + markdown(report), file=sys.stderr)
    print(json.dumps(report))
    return report


def longest_first(recipe: Recipe, steps: list[T]) -> list[T]:
    """``steps`` (a step's key first in each) with the longest first by the set's last build, so that two lanes end
    together (recipe order where a step has no time)."""
    last = {r["model"]: r.get("seconds") or 0.0
            for r in (read_json(recipe.folder() / f"{recipe.name}_report.json") or {}).get("models", [])}
    return sorted(steps, key=lambda step: -last.get(step[0], 0.0))


def _train_here(key: str, cfg: RunConfig, folder: Path, store: RunStore, mirror: Mirror,
                rows: dict[str, dict[str, Any]], retrained: set[str], t0: float, n: int) -> None:
    """Train one step in this process, with every core, and publish it."""
    print(f"{bar(len(rows), n)} step {len(rows) + 1}/{n}: {key} — {time.time() - t0:.0f}s elapsed", file=sys.stderr,
          flush=True)
    mirror.point(store, {"stage": f"training {key}", "unit": "step", "epoch": len(rows) + 1, "epochs": n,
                         "elapsed_s": round(time.time() - t0, 1)})
    ts = time.time()
    run: Run = execute(cfg, store=store)
    publish(run.model_dir, folder / key)
    retrained.add(key)
    rows[key] = _row(key, folder / key, time.time() - ts, run.id)


def _train_side_by_side(steps: list[tuple[str, RunConfig]], folder: Path, store: RunStore, lanes: int,
                        mirror: Mirror, rows: dict[str, dict[str, Any]], t0: float, n: int) -> None:
    """Train ``steps`` (none starts from another) ``lanes`` at a time; publish each as it finishes."""
    keys = [k for k, _ in steps]
    started = time.time()
    print(f"{bar(len(rows), n)} steps {len(rows) + 1}-{n}: {', '.join(keys)}, {lanes} at a time — "
          f"{started - t0:.0f}s elapsed", file=sys.stderr, flush=True)

    def point() -> None:
        left = [k for k in keys if k not in rows]
        what = f"{', '.join(left)} ({lanes} at a time)" if len(left) > 1 else left[0]
        mirror.point(store, {"stage": f"training {what}", "unit": "step",
                             "epoch": len(rows) + 1, "epochs": n, "elapsed_s": round(time.time() - t0, 1)})

    def done(i: int, run_id: str) -> None:
        key = keys[i]
        run = store.get(run_id)
        publish(run.model_dir, folder / key)
        rows[key] = _row(key, folder / key, (run.finished or time.time()) - (run.started or started), run_id)
        print(f"{bar(len(rows), n)} {key} done — {time.time() - t0:.0f}s elapsed", file=sys.stderr, flush=True)
        if len(rows) < n:
            point()

    point()
    run_in_lanes([(_train_step, (cfg.to_dict(), store.root)) for _, cfg in steps], lanes, done)


def _train_step(cfg: dict[str, Any], store_root: Path) -> str:
    """One step in a lane process (``training.jobs.lanes``): the finished run's id."""
    return execute(RunConfig.from_dict(cfg), store=RunStore(store_root)).id


def _parent(cfg: RunConfig) -> str:
    """The checkpoint a step starts from (teacher or model to prune), or ""."""
    return (cfg.prune.checkpoint if cfg.prune else "") or (cfg.distill.teacher if cfg.distill else "")


def _why_retrain(dest: Path, cfg: RunConfig, retrained: set[str]) -> str:
    """Why a published model no longer is what the recipe builds ("" if it still is).

    A recipe edit (more epochs, another operating point) must not leave the old model in place under the new
    recipe's name; nor a model that learned from inputs the preprocessing now prepares differently, or whose card
    does not say where its lesion map is drawn; nor a student whose teacher was just retrained. Settings the card
    does not record (added to the config since) are not compared, and neither are the teacher's and parent's paths
    (the workspace may move).
    """
    parent = _parent(cfg)
    if parent and Path(parent).name in retrained:
        return f"its parent {Path(parent).name} was retrained"
    card = read_card(dest)
    if why := outdated_inputs(card):
        return why
    if (card.arch or {}).get("lesion_head") and not card.lesion_map:
        return "its lesion map predates the cut chosen on the validation masks"
    changed = [f"{k}: {a} → {b}" for k, a, b in _changed(card.training or {}, cfg.to_dict())
               if k not in ("distill.teacher", "prune.checkpoint", "name", "notes")]
    return f"built with another recipe ({', '.join(changed)})" if changed else ""


def _changed(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted key, old, new) where two nested config dicts differ; keys in only one are skipped."""
    out: list[tuple[str, Any, Any]] = []
    for k in sorted(old.keys() & new.keys()):
        a, b = old[k], new[k]
        if isinstance(a, dict) and isinstance(b, dict):
            out += _changed(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append((f"{prefix}{k}", a, b))
    return out


def _row(key: str, folder: Path, seconds: float | None, run_id: str | None = None) -> dict[str, Any]:
    card = read_card(folder)
    m = card.metrics or {}
    return {"model": key, "run": run_id or card.parent_run, "seconds": None if seconds is None else round(seconds, 1),
            "slice_accuracy": m.get("slice_accuracy"), "patient_accuracy": m.get("patient_accuracy"),
            "slice_auc": m.get("slice_auc"), "n_test_slices": m.get("n_slices"), "n_test_patients": m.get("n_patients"),
            "split": m.get("split")}


def markdown(report: dict[str, Any]) -> str:
    lines = ["| model | slice acc | patient acc | slice AUC | evaluated on | train time (s) | served with (verdict agreement with eager) |",
             "|---|---|---|---|---|---|---|"]
    for r in report["models"]:
        served = r.get("served_runtime") or "eager"
        if r.get("served_agreement") is not None:
            served += f" ({r['served_agreement']:.1%})"
        lines.append(f"| {r['model']} | {r['slice_accuracy']} | {r['patient_accuracy']} | {r['slice_auc']} | "
                     f"{r.get('split') or 'test'} split | {r['seconds'] if r['seconds'] is not None else 'kept'} | {served} |")
    lines.append(f"\nTotal: {report['total_seconds'] / 60:.1f} min. Metrics: patients of the named split, never "
                 "trained on (a validation split also chose the epoch).")
    return "\n".join(lines) + "\n"
