"""Run one configured job end to end: validate → prepare data → create run → train/distill/prune →
calibrate → evaluate → final checkpoint. Everything that can be checked is checked before the run
folder exists, so a bad config leaves nothing behind."""

from __future__ import annotations

import logging
import math
import os
import random
import shutil
import signal
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ctmodels.atomic import write_json_atomic
from ctmodels.checkpoint import CheckpointError, ModelCard, load
from ctmodels.checkpoint import save as save_checkpoint
from ctmodels.nets import create, load_imagenet_resnet
from ctmodels.nets.lesion import has_lesion_head
from ctmodels.preprocess import Preprocessing, shift_lesion
from ctmodels.verdict import VerdictRule

from ..config import ConfigError, DistillConfig, RunConfig
from ..data.prepare import CLASS_NAMES, DataError, Prepared, prepare
from ..evaluation.evaluate import (
    evaluate,
    fit_map_cut,
    fit_rule,
    fit_temperature,
    headline,
    learned_involvement,
    lesion_bias,
    predict_outputs,
    rates_at,
)
from ..jobs.progress import writer as progress_writer
from ..jobs.registry import Run, RunStore
from . import distributed as dist
from .loop import Context, fit, pick_device, recalibrate_batchnorm, set_threads, validate
from .losses import kd_loss
from .prune import MagnitudeMasks, StructuredPruner, count, stage_ratios, stage_sensitivity

log = logging.getLogger(__name__)
#: The checkpoints a run starts from, by role ("teacher", "model" to prune): the net and its card.
Parents = dict[str, tuple[torch.nn.Module, ModelCard]]


class RunCancelled(Exception):
    """SIGTERM/SIGINT from the job runner or the user."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _load_parent(path: str, what: str) -> tuple[torch.nn.Module, ModelCard]:
    try:
        return load(path)
    except CheckpointError as exc:
        raise ConfigError(f"{what} checkpoint {path!r} cannot be used: {exc}") from exc


def _check_compatible(card: ModelCard, what: str) -> None:
    if list(card.class_names) != CLASS_NAMES:
        raise ConfigError(
            f"the {what} predicts classes {card.class_names}, but this run trains {CLASS_NAMES}; "
            "pick a checkpoint trained on mild vs severe"
        )
    if card.in_channels != 1:
        raise ConfigError(f"the {what} takes {card.in_channels} input channels; CT slices have 1")


def plan(cfg: RunConfig) -> tuple[RunConfig, Preprocessing, Parents]:
    """Validate a config and load what it depends on; raises ConfigError/DataError before any run exists."""
    cfg.validate()
    parents: Parents = {}
    pre = cfg.pre
    if cfg.command == "distill":
        teacher, tcard = _load_parent(cfg.distill.teacher, "teacher")
        _check_compatible(tcard, "teacher")
        pre = Preprocessing.from_card(tcard)  # the student must see what the teacher saw
        parents["teacher"] = (teacher, tcard)
    if cfg.command == "prune":
        model, pcard = _load_parent(cfg.prune.checkpoint, "model to prune")
        _check_compatible(pcard, "model to prune")
        if pcard.model_key not in ("baseline", "sparse", "pruned") and not cfg.prune.unstructured:
            raise ConfigError(f"structured pruning works on ResNet50 models (baseline); got {pcard.model_key!r}")
        pre = Preprocessing.from_card(pcard)
        parents["model"] = (model, pcard)
    if cfg.init and not Path(cfg.init).is_file():
        raise ConfigError(f"ImageNet weights file {cfg.init!r} not found (weights are never downloaded)")
    cfg.preprocessing = pre.to_dict()
    return cfg, pre, parents


def _card(cfg: RunConfig, pre: Preprocessing, data: Prepared, key: str, arch: dict, run: Run,
          parent_ckpt: str | None) -> ModelCard:
    d = cfg.data
    rule = {"threshold_pct": d.threshold_pct, "excluded_band": d.excluded_band, "target": d.target,
            "verdict": "severe when calibrated P(severe) >= the cut of this card's verdict rule (its 'verdict' section)"}
    if d.target == "involvement":
        rule["soft_target"] = "logit P(severe) = logit(involvement) - logit(threshold)"
    return ModelCard(
        model_key=key, arch=dict(arch), class_names=list(CLASS_NAMES), training=cfg.to_dict(),
        data_fingerprint=data.fingerprint, parent_run=run.id, parent_checkpoint=parent_ckpt,
        notes=cfg.notes, label_rule=rule, trained_on=data.provenance(d.source), **pre.card_fields(),
    )


def execute(cfg: RunConfig, *, store: RunStore | None = None, run: Run | None = None, resume: bool = False) -> Run:
    """Run ``cfg``; returns the finished run. ``run`` given: continue that (queued/failed) run."""
    set_threads(cfg.threads)
    device = pick_device(cfg.device)
    dist.init(device)
    device = dist.local_device(device)
    seed_everything(cfg.seed + dist.rank())
    cfg, pre, parents = plan(cfg)
    data = prepare(cfg.data, pre, cfg.seed)
    store = store or RunStore()
    if run is None:
        run = _shared_run(store, cfg)
    handler = _log_to(run)
    _install_signal_handlers()
    if dist.is_main():
        store.update(run.id, status="running", started=time.time(), pid=os.getpid(), error=None,
                     nprocs=dist.world_size())
    log.info("run %s: %s %s on %s (%s); data %s", run.id, cfg.command, cfg.model, device,
             f"{dist.world_size()} processes" if dist.world_size() > 1 else "1 process", data.summary())
    try:
        model, card = _stages(cfg, pre, data, run=run, device=device, parents=parents, resume=resume)
        ctx = Context(run, cfg, data, device, card)
        temperature, rule, drawn = _fit_verdict(model, cfg, data, pre, device)
        test = evaluate(model, data, pre, device, rule, split="test" if len(data.subset(2)) else "val",
                        map_cut=drawn.get("cut", 0.5))
        summary = {"test": headline(test), "temperature": round(temperature, 4), "verdict": rule.to_dict(),
                   "data": data.summary()}
        if cfg.command == "prune":
            macs, params = count(model, pre.size)
            summary.update({"params": params, "macs": macs})
        card.temperature = temperature
        card.verdict = rule.to_dict()
        card.lesion_map = drawn
        card.metrics = headline(test)
        if dist.is_main():
            save_checkpoint(model.cpu(), card, run.model_dir)
            write_json_atomic(run.eval_path, test)
            store.update(run.id, status="completed", finished=time.time(), summary=summary, pid=None)
            _drop_resume_state(run)
        log.info("run %s completed: %s", run.id, headline(test))
        del ctx
    except (RunCancelled, KeyboardInterrupt):
        if dist.is_main():
            store.update(run.id, status="cancelled", finished=time.time(), pid=None, error="cancelled by the user")
        log.warning("run %s cancelled", run.id)
        raise
    except BaseException as exc:
        if dist.is_main():
            store.update(run.id, status="failed", finished=time.time(), pid=None, error=_tail(exc))
        log.error("run %s failed: %s", run.id, exc)
        log.debug("%s", traceback.format_exc())
        raise
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    return store.get(run.id)


def _fit_verdict(model: torch.nn.Module, cfg: RunConfig, data: Prepared, pre: Preprocessing,
                 device: torch.device) -> tuple[float, VerdictRule, dict[str, Any]]:
    """The head's temperature, the card's verdict rule and where its lesion map marks lesion (the card's
    ``lesion_map``), all fitted on the validation split; a lesion head's output bias is calibrated first
    (``training.evaluation.evaluate.lesion_bias``), recorded in the rule's validation notes."""
    val = data.subset(1)
    score = cfg.verdict if cfg.verdict != "auto" else ("lesion" if has_lesion_head(model) else "head")
    if not len(val):
        return 1.0, VerdictRule(score="head", threshold_pct=cfg.data.threshold_pct), {}
    shift, drawn = None, {}
    logits, lesion = predict_outputs(model, data, val, pre, device)
    temperature = fit_temperature(logits, data.targets[val])
    if lesion is not None and data.has_lesion[val].any():
        known = data.has_lesion[val]
        shift = lesion_bias(lesion[known], data.lesions[val][known].astype(np.float32) / 255.0,
                            data.areas[val][known].astype(np.float32))
        with torch.no_grad():
            model.lesion_head.out.bias += shift  # the calibration travels with the weights (ONNX, every caller)
        lesion = shift_lesion(lesion, shift)
        log.info("lesion map calibrated: logit shift %+.3f (learned lesion area = the masks' on validation)", shift)
        drawn = fit_map_cut(lesion[known], data.lesions[val][known].astype(np.float32) / 255.0,
                            data.areas[val][known].astype(np.float32))
        log.info("lesion map drawn at P >= %s (validation Dice %s; %s at 0.5)", drawn.get("cut"),
                 drawn.get("validation_dice"), drawn.get("validation_dice_at_0.5"))
    if lesion is not None and not drawn:  # every lesion card says where its map is drawn (a build reads it)
        drawn = {"cut": 0.5, "chosen_by": "no validation mask with a lesion: drawn at 0.5"}
    learned = learned_involvement(data, val, lesion)
    if cfg.verdict_op_pct is not None and score == "lesion" and learned is not None:
        rule = VerdictRule.at_involvement(cfg.verdict_op_pct, cfg.data.threshold_pct,
                                          {"chosen_by": "the recipe's cross-validation (out-of-fold predictions)"})
        rule.validation.update(rates_at(rule.p_severe(logits, learned), data.labels[val], rule.cut))
    else:
        rule = fit_rule(score, logits, learned, data.targets[val], data.labels[val], cfg.data.threshold_pct)
    if shift is not None:
        rule.validation["lesion_logit_shift"] = round(shift, 4)
    log.info("verdict: %s (calibration a=%.3f b=%.3f; validation %s)", rule.describe(), rule.a, rule.b,
             rule.validation)
    return temperature, rule, drawn


def cv_job(run: Run, store: RunStore, run_cv) -> dict[str, Any]:
    """Run a cross-validation as a registered run: status, log, live progress, cancel, resume."""
    from ..config import RunConfig

    cfg = RunConfig.from_dict(run.config)
    cfg.validate()
    handler = _log_to(run)
    _install_signal_handlers()
    store.update(run.id, status="running", started=time.time(), pid=os.getpid(), error=None, finished=None)
    try:
        report = run_cv(cfg.cv, run.dir, progress_writer(run.progress_path))
        summary = {"cv": {k: {"roc_auc": v["roc_auc"]["mean"]} for k, v in report["rows"].items()},
                   "repeats_done": report["repeats_done"]}
        store.update(run.id, status="completed", finished=time.time(), summary=summary, pid=None)
        log.info("cross-validation %s completed", run.id)
        return report
    except (RunCancelled, KeyboardInterrupt):
        store.update(run.id, status="cancelled", finished=time.time(), pid=None, error="cancelled by the user")
        raise
    except BaseException as exc:
        store.update(run.id, status="failed", finished=time.time(), pid=None, error=_tail(exc))
        log.error("cross-validation %s failed: %s", run.id, exc)
        raise
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


def _drop_resume_state(run: Run) -> None:
    """Remove a run's resume state (optimizer state and per-epoch best checkpoints of every stage).

    A completed run cannot be resumed, so there they only cost disk (about three model copies); the
    final model in ``model/`` is what everything else reads. A resumed pruning run restarts from scratch.
    """
    for d in [run.state_dir, run.best_dir, *run.dir.glob("state-*"), *run.dir.glob("best-*")]:
        shutil.rmtree(d, ignore_errors=True)


def _stages(cfg: RunConfig, pre: Preprocessing, data: Prepared, *, run: Run, device: torch.device, parents: Parents,
            resume: bool) -> tuple[torch.nn.Module, ModelCard]:
    if cfg.command == "train":
        model = create(cfg.model, **cfg.model_kwargs)
        if cfg.init and not resume:
            log.info("ImageNet init: %s", load_imagenet_resnet(model, cfg.init).summary())
        card = _card(cfg, pre, data, cfg.model, cfg.model_kwargs, run, None)
        model, _ = fit(Context(run, cfg, data, device, card), model, epochs=cfg.optim.epochs, resume=resume)
        return model, card
    if cfg.command == "distill":
        teacher, tcard = parents["teacher"]
        teacher.to(device)
        model = create(cfg.model, **cfg.model_kwargs)
        card = _card(cfg, pre, data, cfg.model, cfg.model_kwargs, run, cfg.distill.teacher)
        loss = kd_loss(teacher, cfg.distill.temperature, cfg.distill.alpha, cfg.optim.lesion_weight,
                       cfg.distill.lesion_alpha)
        model, _ = fit(Context(run, cfg, data, device, card), model, epochs=cfg.optim.epochs, loss_fn=loss,
                       resume=resume)
        return model, card
    if resume and dist.is_main():  # pruning restarts from its parent checkpoint: drop the partial history
        run.metrics_path.unlink(missing_ok=True)
        _drop_resume_state(run)
    return _prune(cfg, pre, data, run=run, device=device, parents=parents)


def _prune(cfg: RunConfig, pre: Preprocessing, data: Prepared, *, run: Run, device: torch.device,
           parents: Parents) -> tuple[torch.nn.Module, ModelCard]:
    p = cfg.prune
    model, pcard = parents["model"]
    model.to(device)
    loss = None
    if p.distill:  # the parent as it was, before pruning changes ``model`` in place
        teacher, _ = _load_parent(p.checkpoint, "model to prune")
        kd = cfg.distill or DistillConfig()
        loss = kd_loss(teacher.to(device), kd.temperature, kd.alpha, cfg.optim.lesion_weight, kd.lesion_alpha)
    macs0, params0 = count(model, pre.size)
    report: dict[str, Any] = {"before": {"params": params0, "macs": macs0}, "steps": []}
    if p.unstructured:
        card = _card(cfg, pre, data, cfg.produces, _head_arch(pcard), run, p.checkpoint)
        ctx = Context(run, cfg, data, device, card)
        steps_per_epoch = max(1, len(data.subset(0)) // cfg.optim.batch_size)
        schedule_epochs = max(1, math.ceil(p.finetune_epochs * 2 / 3))
        masks = MagnitudeMasks(model, p.sparsity, schedule_epochs * steps_per_epoch, p.power)
        model, _ = fit(ctx, model, epochs=p.finetune_epochs, stage="sparse", after_step=masks.hook(steps_per_epoch),
                       loss_fn=loss, select_best=False)
        masks.apply()
        recalibrate_batchnorm(model, ctx)
        report["sparsity"] = MagnitudeMasks(model, 0.0, 1).sparsity()
        card.notes = (card.notes + " " if card.notes else "") + (
            f"Unstructured magnitude pruning to {report['sparsity']:.0%} zero weights: smaller when compressed, "
            "no dense speed-up.")
    else:
        card = _card(cfg, pre, data, cfg.produces, {"base": "baseline", **_head_arch(pcard)}, run, p.checkpoint)
        ctx = Context(run, cfg, data, device, card)
        val_cap = data.subset(1)[:256]

        def score(m: torch.nn.Module) -> float:
            sub = Context(run, cfg, _restrict_val(data, val_cap), device, card)
            return validate(m, sub)[0]

        sens = stage_sensitivity(model, pre.size, p.target_ratio, score) if p.sensitivity else {}
        ratios = stage_ratios(sens, p)
        report.update({"sensitivity": sens, "ratios": ratios})
        log.info("per-stage pruning ratios: %s", ratios)
        pruner = StructuredPruner(model, pre.size, ratios, p.steps)
        for k in range(p.steps):
            pruner.step()
            recalibrate_batchnorm(model, ctx)
            macs, params = count(model, pre.size)
            epochs = p.finetune_epochs + (2 if k == p.steps - 1 else 0)  # two more epochs after the last cut
            best, _ = fit(ctx, model, epochs=epochs, stage=f"prune-step{k + 1}", lr=cfg.optim.lr, loss_fn=loss)
            model.load_state_dict(best.state_dict())  # keep the object the pruner tracks
            vloss, vacc, _ = validate(model, ctx)
            report["steps"].append({"step": k + 1, "params": params, "macs": macs, "val_loss": vloss, "val_acc": vacc})
            log.info("prune step %d/%d: %.2fM params, %.2f GMACs, val acc %.3f", k + 1, p.steps, params / 1e6,
                     macs / 1e9, vacc)
    macs1, params1 = count(model, pre.size)
    report["after"] = {"params": params1, "macs": macs1}
    card.extra = dict(card.extra, pruning=report)
    if dist.is_main():
        write_json_atomic(run.dir / "pruning.json", report)
    return model, card


def _head_arch(parent: ModelCard) -> dict[str, Any]:
    """The parent's lesion head, which a pruned or sparse model keeps (``ctmodels.nets.lesion``)."""
    width = (parent.arch or {}).get("lesion_head")
    return {"lesion_head": int(width)} if width else {}


def _restrict_val(data: Prepared, idx: np.ndarray) -> Prepared:
    split = np.where(data.split == 1, -1, data.split).astype(np.int8)
    split[idx] = 1
    return Prepared(**{**data.__dict__, "split": split})


def _shared_run(store: RunStore, cfg: RunConfig) -> Run:
    """Rank 0 creates the run; every other rank learns its id."""
    if dist.world_size() == 1:
        return store.create(cfg, status="running")
    import torch.distributed as td

    box = [store.create(cfg, status="running", nprocs=dist.world_size()).id if dist.is_main() else None]
    td.broadcast_object_list(box, src=0)
    return store.get(box[0])


def _log_to(run: Run) -> logging.Handler:
    run.dir.mkdir(parents=True, exist_ok=True)
    h = logging.FileHandler(run.log_path) if dist.is_main() else logging.NullHandler()
    h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
    h.setLevel(logging.INFO)
    logging.getLogger().addHandler(h)
    if logging.getLogger().level > logging.INFO or logging.getLogger().level == logging.NOTSET:
        logging.getLogger().setLevel(logging.INFO)
    return h


def _install_signal_handlers() -> None:
    def handler(signum, frame):  # noqa: ARG001
        raise RunCancelled(f"signal {signum}")

    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (e.g. tests calling execute from a thread)
        pass


def _tail(exc: BaseException, n: int = 600) -> str:
    msg = f"{type(exc).__name__}: {exc}" if not isinstance(exc, (ConfigError, DataError)) else str(exc)
    return msg[-n:]
