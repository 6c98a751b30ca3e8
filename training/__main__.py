"""CLI: ``python -m training {train,distill,prune,cv,evaluate,demo,real,runs} …`` (see --help of each)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from ctmodels.nets import MODEL_KEYS
from ctmodels.verdict import DEFAULT_THRESHOLD_PCT, VerdictRule

from .config import OPTIMIZERS, ConfigError, RunConfig, merge
from .data.prepare import DataError

EXIT_BAD_INPUT, EXIT_FAILED, EXIT_CANCELLED = 2, 1, 130


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML/JSON run config (e.g. training/configs/paper000_baseline.yaml)")
    p.add_argument("--model", help=f"model key: {', '.join(MODEL_KEYS)}")  # checked by the config: one message
    p.add_argument("--data", help="a named source (demo, real, real-infnet, real-covid-ct-seg) or a dataset folder")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--optimizer", choices=list(OPTIMIZERS))
    p.add_argument("--size", type=int, help="input size in pixels (square)")
    p.add_argument("--roi", dest="roi", action="store_true", default=None, help="crop to the lungs (paper 001)")
    p.add_argument("--no-roi", dest="roi", action="store_false")
    p.add_argument("--clahe", action="store_true", default=None, help="CLAHE contrast enhancement (paper 001)")
    p.add_argument("--no-augment", action="store_true", help="switch augmentation off")
    p.add_argument("--threshold", type=float, help="severe when lung involvement ≥ this %%")
    p.add_argument("--target", choices=["label", "involvement"],
                   help="learn the mild/severe label, or the involvement as soft labels (see training.data.prepare)")
    p.add_argument("--split", help="train,val,test fractions by patient, e.g. 0.5,0.2,0.3")
    p.add_argument("--max-slices", type=int, help="at most this many lung slices per scan")
    p.add_argument("--patience", type=int, help="early stopping patience (epochs; 0 off)")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    p.add_argument("--threads", type=int, help="CPU threads")
    p.add_argument("--init", help="local ImageNet ResNet weights (.safetensors or .pth); never downloaded")
    p.add_argument("--name", help="a name for the run")
    p.add_argument("--resume", metavar="RUN", help="continue a failed or cancelled run (id, prefix or folder)")
    p.add_argument("--run-id", help=argparse.SUPPRESS)  # the job runner pre-creates the run


def _overrides(a: argparse.Namespace, command: str) -> dict[str, Any]:
    o: dict[str, Any] = {"command": command}
    if a.model:
        o["model"] = a.model
    data: dict[str, Any] = {}
    if a.data:
        data["source"] = a.data
    if a.threshold is not None:
        data["threshold_pct"] = a.threshold
    if a.split:
        data["split"] = [float(v) for v in a.split.split(",")]
    if a.max_slices is not None:
        data["max_slices_per_case"] = a.max_slices
    if a.target:
        data["target"] = a.target
    if data:
        o["data"] = data
    optim = {k: v for k, v in (("epochs", a.epochs), ("batch_size", a.batch_size), ("lr", a.lr),
                               ("optimizer", a.optimizer), ("early_stopping_patience", a.patience)) if v is not None}
    if optim:
        o["optim"] = optim
    pre = {k: v for k, v in (("size", a.size), ("roi_crop", a.roi), ("clahe", a.clahe)) if v is not None}
    if pre:
        o["preprocessing"] = pre
    if a.no_augment:
        o["augment"] = {"enabled": False}
    for k in ("seed", "device", "threads", "init", "name"):
        if getattr(a, k) is not None:
            o[k] = getattr(a, k)
    if a.no_amp:
        o["amp"] = False
    return o


def build_config(a: argparse.Namespace, command: str, extra: dict[str, Any] | None = None) -> RunConfig:
    base = RunConfig(command=command, model="kd" if command == "distill" else "baseline").to_dict()
    if a.config:
        raw = RunConfig.load(a.config).to_dict()
        if command == "distill" and raw.get("model") == "baseline":
            raw["model"] = "kd"  # a distillation config without its own student key
        base = merge(base, raw)
    cfg = merge(base, _overrides(a, command))
    if extra:
        for section in ("distill", "prune"):
            if section in extra and isinstance(cfg.get(section), dict):
                extra[section] = {**cfg[section], **extra[section]}
        cfg = merge(cfg, extra)
    return RunConfig.from_dict(cfg)


def _find_run(store, ref: str):
    """The run ``ref`` names, or None after saying why on stderr."""
    try:
        return store.find(ref)
    except KeyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def _run(cfg_or_none: RunConfig | None, a: argparse.Namespace) -> int:
    from .engine.distributed import shutdown
    from .engine.pipeline import RunCancelled, execute
    from .jobs.registry import RunStore

    store = RunStore()
    run, resume = None, False
    if a.resume or a.run_id:
        run = _find_run(store, a.resume or a.run_id)
        if run is None:
            return EXIT_BAD_INPUT
        if run.status == "completed":
            print(f"error: run {run.id} already completed", file=sys.stderr)
            return EXIT_BAD_INPUT
        cfg = RunConfig.from_dict(run.config)
        resume = bool(a.resume) or run.state_dir.is_dir()
    else:
        cfg = cfg_or_none
    try:
        done = execute(cfg, store=store, run=run, resume=resume)
    except (ConfigError, DataError) as exc:
        if run is not None:
            store.update(run.id, status="failed", error=str(exc))
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (RunCancelled, KeyboardInterrupt):
        print("cancelled", file=sys.stderr)
        return EXIT_CANCELLED
    except Exception as exc:  # reported in the run's log and registry
        print(f"failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        shutdown()
    print(json.dumps({"run": done.id, "status": done.status, "model": str(done.model_dir), **done.summary.get("test", {})}))
    return 0


def cmd_cv(a: argparse.Namespace) -> int:
    from ctmodels.atomic import write_json_atomic

    from .engine.pipeline import RunCancelled, cv_job
    from .jobs.registry import RunStore
    from .recipes.cv import run as run_cv

    store = RunStore()
    if a.run_id or a.resume:
        run = _find_run(store, a.run_id or a.resume)
        if run is None:
            return EXIT_BAD_INPUT
    else:
        settings = {k: v for k, v in (("recipe", a.recipe), ("split", a.split), ("folds", a.folds),
                                      ("repeats", a.repeats), ("seed", a.seed)) if v is not None}
        if a.models:
            settings["models"] = [m.strip() for m in a.models.split(",") if m.strip()]
        if a.quick:
            settings["quick"] = True
        if a.no_cam:
            settings["cam"] = False
        try:
            cfg = RunConfig.from_dict({"command": "cv", "model": "cv", "name": a.name, "cv": settings})
            cfg.validate()
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        run = store.create(cfg, status="running")
    try:
        report = cv_job(run, store, run_cv)
    except (ConfigError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (RunCancelled, KeyboardInterrupt):
        print("cancelled", file=sys.stderr)
        return EXIT_CANCELLED
    except Exception as exc:
        print(f"failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if a.out:
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        stem = ("real_loso" if report.get("split") == "sources" else "real_cv") if report["recipe"] == "real" else "cv"
        write_json_atomic(out / f"{stem}.json", report)
        (out / f"{stem}.md").write_text((run.dir / "report.md").read_text())
    print((run.dir / "report.md").read_text())
    return 0


def cmd_evaluate(a: argparse.Namespace) -> int:
    import numpy as np

    from ctmodels.checkpoint import CheckpointError, load
    from ctmodels.preprocess import Preprocessing

    from .config import DataConfig
    from .data.prepare import prepare
    from .engine.loop import pick_device
    from .evaluation.evaluate import evaluate

    try:
        model, card = load(a.checkpoint)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    pre = Preprocessing.from_card(card)
    split = [1.0, 0.0, 0.0] if a.split == "all" else [0.5, 0.2, 0.3]
    dcfg = DataConfig(source=a.data, threshold_pct=a.threshold, split=split)
    try:
        data = prepare(dcfg, pre, a.seed)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    device = pick_device(a.device)
    res = evaluate(model.to(device), data, pre, device, VerdictRule.from_card(card), split=a.split,
                   map_cut=card.map_cut)
    res["checkpoint"] = str(Path(a.checkpoint).resolve())
    res["dataset"] = data.dataset_name
    res["n_labelled_slices"] = int(np.sum(data.labels >= 0))
    out = Path(a.out) if a.out else Path(a.checkpoint) / f"eval-{Path(str(a.data)).name}-{a.split}.json"
    out.write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))
    return 0


def cmd_runs(a: argparse.Namespace) -> int:
    from .jobs.registry import RunStore

    for r in RunStore().list(status=a.status):
        test = r.summary.get("test", {})
        print(f"{r.id:48s} {r.status:10s} {r.command:8s} {r.model_key:9s} "
              f"slice acc {test.get('slice_accuracy', '-')!s:6s} patient acc {test.get('patient_accuracy', '-')}")
    return 0


def cmd_serve(a: argparse.Namespace) -> int:
    from .evaluation.served import serve_set
    from .recipes.demo import DEMO
    from .recipes.real import REAL

    folder = {"real": REAL.folder, "demo": DEMO.folder}.get(a.set, lambda: Path(a.set))()
    for name, choice in serve_set(folder, force=a.force).items():
        print(f"{name:10s} {choice.get('runtime', 'eager'):9s} "
              + " ".join(f"{r}: agreement {c['verdict_agreement']:.3f}, {c['slices_per_s']} slices/s"
                         for r, c in choice.get("candidates", {}).items())
              + f" (eager {choice.get('eager_slices_per_s')} slices/s)")
    return 0


def cmd_check(a: argparse.Namespace) -> int:
    """A model set on a labelled dataset, as the Data Browser's "Models on this data" scores it."""
    from ctmodels.checkpoint import checkpoints_in
    from ctmodels.datasets import DatasetError, LabelRule, open_dataset
    from ctmodels.inference import load_model
    from ctmodels.nets import compare_defaults

    from .evaluation.on_dataset import NothingToCheckError, check_dataset
    from .recipes.demo import DEMO
    from .recipes.real import REAL

    folder = {"real": REAL.folder, "demo": DEMO.folder}.get(a.set, lambda: Path(a.set))()
    found = {f.name: f for f in checkpoints_in(folder)}
    keys = a.models.split(",") if a.models else [k for k in compare_defaults() if k in found]
    missing = [k for k in keys if k not in found]
    if missing or not keys:
        print(f"error: no model {', '.join(missing) or 'at all'} in {folder}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        ds = open_dataset(a.data, LabelRule(a.threshold))
        check = check_dataset(ds, [load_model(found[k], k) for k in keys],
                              progress=lambda k, n, case: print(f"[{k + 1}/{n}] {case}", file=sys.stderr))
    except (DatasetError, NothingToCheckError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for case, why in check.skipped.items():
        print(f"left out {case}: {why}", file=sys.stderr)
    print(check.summary.drop(columns=["this data's cut"]).round(3).to_string(index=False))
    if a.out:
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        check.summary.to_csv(out / "summary.csv", index=False)
        check.slices.to_csv(out / "slices.csv", index=False)
        if not check.scans.empty:
            check.scans.to_csv(out / "scans.csv", index=False)
        print(f"wrote {out}/summary.csv and slices.csv", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training", description="Train, compress and evaluate CT severity models.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train a model from scratch (baseline, ghost, kd, ghost_kd)")
    _common(t)
    d = sub.add_parser("distill", help="distil a student (kd, ghost_kd) from a teacher checkpoint")
    _common(d)
    d.add_argument("--teacher", help="teacher checkpoint folder")
    d.add_argument("--temperature", type=float)
    d.add_argument("--alpha", type=float, help="weight of the hard-label loss")
    p = sub.add_parser("prune", help="prune a trained checkpoint (structured L1, or --unstructured)")
    _common(p)
    p.add_argument("--from", dest="source", help="checkpoint folder to prune")
    p.add_argument("--ratio", type=float, help="structured: fraction of filters removed in insensitive stages")
    p.add_argument("--min-ratio", type=float, help="structured: ratio for the most sensitive stage")
    p.add_argument("--steps", type=int)
    p.add_argument("--no-sensitivity", action="store_true")
    p.add_argument("--finetune-epochs", type=int)
    p.add_argument("--unstructured", action="store_true", help="magnitude pruning, polynomial decay (paper 001)")
    p.add_argument("--sparsity", type=float)
    e = sub.add_parser("evaluate", help="evaluate a checkpoint on a dataset; writes eval JSON")
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--data", default="demo")
    e.add_argument("--split", choices=["test", "val", "train", "all"], default="test")
    e.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD_PCT)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    e.add_argument("--out")
    dm = sub.add_parser("demo", help="build the demo model set on the demo phantoms")
    dm.add_argument("--force", action="store_true", help="retrain every model, even those built with the same recipe")
    dm.add_argument("--quick", action="store_true", help="tiny settings (for tests)")
    rl = sub.add_parser("real", help="build the real-CT model set on ../shared/data/real (make real-models)")
    rl.add_argument("--force", action="store_true", help="retrain every model, even those built with the same recipe")
    rl.add_argument("--quick", action="store_true", help="tiny settings (for tests)")
    cv = sub.add_parser("cv", help="cross-validation of a model-set recipe, by patient (k-fold) or by source")
    cv.add_argument("--recipe", choices=["real", "demo"], help="whose recipe every fold trains (default real)")
    cv.add_argument("--split", choices=["patients", "sources"],
                    help="patients: k folds of patients (default); sources: leave one source out")
    cv.add_argument("--folds", type=int, help="number of folds (default 5; by source: one per source)")
    cv.add_argument("--repeats", type=int, help="repeats with reshuffled folds (default 1)")
    cv.add_argument("--seed", type=int, help="seed of the first repeat")
    cv.add_argument("--models", help="comma-separated model keys (default: every kind)")
    cv.add_argument("--quick", action="store_true", help="tiny settings (for tests)")
    cv.add_argument("--no-cam", action="store_true", help="skip the Grad-CAM check on held-out severe slices")
    cv.add_argument("--name", help="a name for the run")
    cv.add_argument("--out", help="also write the report (JSON + markdown) into this folder, e.g. docs/measurements")
    cv.add_argument("--resume", metavar="RUN", help="continue a cancelled or failed cross-validation")
    cv.add_argument("--run-id", help=argparse.SUPPRESS)
    sv = sub.add_parser("serve", help="choose each model's served runtime (ONNX fp32/int8 where it agrees with eager)")
    sv.add_argument("--set", default="real", help="real, demo, or a folder of checkpoints (default real)")
    sv.add_argument("--force", action="store_true", help="measure again even where served.json is current")
    ck = sub.add_parser("check", help="score a labelled dataset with a model set as Compare would (ranking, "
                                       "sensitivity/specificity at the cards' point, the point the data chooses)")
    ck.add_argument("--data", required=True, help="a dataset folder (any layout the Data Browser reads)")
    ck.add_argument("--set", default="real", help="real, demo, or a folder of checkpoints (default real)")
    ck.add_argument("--models", help="comma-separated checkpoint names (default: the four Compare serves)")
    ck.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD_PCT, help="severe from this %% of lung")
    ck.add_argument("--out", help="also write summary.csv, slices.csv (and scans.csv) into this folder")
    r = sub.add_parser("runs", help="list runs")
    r.add_argument("--status")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    if a.cmd == "evaluate":
        return cmd_evaluate(a)
    if a.cmd == "runs":
        return cmd_runs(a)
    if a.cmd == "demo":
        from .recipes.demo import main as demo_main

        return demo_main(force=a.force, quick=a.quick)
    if a.cmd == "real":
        from .recipes.real import main as real_main

        return real_main(force=a.force, quick=a.quick)
    if a.cmd == "cv":
        return cmd_cv(a)
    if a.cmd == "serve":
        return cmd_serve(a)
    if a.cmd == "check":
        return cmd_check(a)
    extra: dict[str, Any] = {}
    if a.cmd == "distill":
        dd = {k: v for k, v in (("teacher", a.teacher), ("temperature", a.temperature), ("alpha", a.alpha)) if v is not None}
        extra["distill"] = dd
    if a.cmd == "prune":
        pp = {k: v for k, v in (("checkpoint", a.source), ("target_ratio", a.ratio), ("min_ratio", a.min_ratio),
                                 ("steps", a.steps), ("finetune_epochs", a.finetune_epochs),
                                 ("sparsity", a.sparsity)) if v is not None}
        if a.unstructured:
            pp["unstructured"] = True
        if a.no_sensitivity:
            pp["sensitivity"] = False
        extra["prune"] = pp
    cfg = None
    if not (a.resume or a.run_id):
        try:
            cfg = build_config(a, a.cmd, extra)
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
    return _run(cfg, a)


if __name__ == "__main__":
    raise SystemExit(main())
