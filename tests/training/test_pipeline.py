"""End-to-end runs: train → checkpoint + registry + eval; distill; prune (structured and sparse);
bad configs leave no run behind; evaluate on the real sample."""

from __future__ import annotations

import json

import pytest

from ctmodels.checkpoint import load, read_card
from training.__main__ import main as cli
from training.engine.pipeline import execute
from training.jobs.registry import RunStore


def test_train_run_end_to_end(workspace, tiny):
    run = execute(tiny(model="kd", optim={"epochs": 2}))
    assert run.status == "completed"
    lines = [json.loads(l) for l in run.metrics_path.read_text().splitlines()]
    assert [l["epoch"] for l in lines] == [1, 2] and all("val_loss" in l and "seconds" in l for l in lines)
    model, card = load(run.model_dir)
    assert card.model_key == "kd" and card.input_size == 32 and card.temperature > 0
    assert card.data_fingerprint and card.metrics["n_patients"] >= 2
    ev = json.loads(run.eval_path.read_text())
    for k in ("accuracy", "precision", "recall", "specificity", "f1", "roc_auc", "ece", "confusion"):
        assert k in ev["slice"] and k in ev["patient"]
    assert (run.dir / "config.json").is_file() and "epoch 2/2" in run.log_path.read_text()
    assert RunStore().get(run.id).summary["test"]["n_slices"] == ev["slice"]["n"]
    # a completed run cannot be resumed, so its optimizer state and per-epoch best copies are gone
    assert not run.state_dir.exists() and not run.best_dir.exists()


def test_distill_and_prune(workspace, tiny, tiny_models):
    teacher = tiny_models / "baseline"  # trained with the same tiny settings on the same phantoms
    student = execute(tiny(command="distill", model="ghost_kd", distill={"teacher": str(teacher)}))
    assert read_card(student.model_dir).parent_checkpoint == str(teacher)
    pruned = execute(tiny(command="prune", prune={"checkpoint": str(teacher), "target_ratio": 0.5,
                                                  "min_ratio": 0.3, "steps": 2, "finetune_epochs": 1}))
    m, card = load(pruned.model_dir)
    base_params = sum(p.numel() for p in load(teacher)[0].parameters())
    assert card.model_key == "pruned" and sum(p.numel() for p in m.parameters()) <= 0.55 * base_params
    report = json.loads((pruned.dir / "pruning.json").read_text())
    assert set(report["ratios"]) == {"layer1", "layer2", "layer3", "layer4"} and len(report["steps"]) == 2
    assert min(report["ratios"].values()) == pytest.approx(0.3) and max(report["ratios"].values()) == pytest.approx(0.5)
    sparse = execute(tiny(command="prune", prune={"checkpoint": str(teacher), "unstructured": True,
                                                  "sparsity": 0.5, "finetune_epochs": 2}))
    sm, scard = load(sparse.model_dir)
    assert scard.model_key == "sparse" and scard.sparsity == pytest.approx(0.5, abs=0.03)
    assert "no dense speed-up" in scard.notes
    # each run is filed under the kind it produced, as its card says
    assert [(r.model_key, r.command) for r in (pruned, sparse)] == [("pruned", "prune"), ("sparse", "prune")]
    assert "-prune-pruned-" in pruned.id and "-prune-sparse-" in sparse.id
    leftovers = [p.name for r in (student, pruned, sparse) for p in r.dir.iterdir()
                 if p.name.startswith(("state", "best"))]
    assert leftovers == []


def _runs(ws):
    return sorted(p.name for p in (ws / "runs").iterdir()) if (ws / "runs").is_dir() else []


@pytest.mark.parametrize(
    "args, words",
    [
        (["train", "--model", "resnet999"], "unknown model key"),
        (["train", "--data", "/nonexistent/folder"], "not found"),
        (["train", "--split", "0.98,0.01,0.01"], "split is empty"),
        (["train", "--threshold", "99"], "only one class"),
        (["distill", "--teacher", "/nonexistent/ckpt"], "cannot be used"),
    ],
)
def test_bad_configs_stop_at_once_and_leave_nothing(workspace, args, words, capsys):
    before = _runs(workspace)
    assert cli(args + ["--size", "32", "--max-slices", "2"]) == 2
    assert words in capsys.readouterr().err
    assert _runs(workspace) == before
    assert all(r.status != "running" for r in RunStore().list())


def test_teacher_with_other_classes_is_refused(workspace, tiny, capsys):
    teacher = execute(tiny(model="kd"))
    card = json.loads((teacher.model_dir / "card.json").read_text())
    card["class_names"] = ["normal", "covid"]
    (teacher.model_dir / "card.json").write_text(json.dumps(card))
    n = len(_runs(workspace))
    assert cli(["distill", "--teacher", str(teacher.model_dir), "--size", "32", "--max-slices", "2"]) == 2
    assert "predicts classes ['normal', 'covid']" in capsys.readouterr().err
    assert len(_runs(workspace)) == n


def test_train_and_evaluate_on_real_sample(workspace, tiny, real_data, capsys):
    run = execute(tiny(data={"source": "real-infnet", "split": [0.6, 0.2, 0.2], "max_slices_per_case": None}))
    assert run.status == "completed"
    ev = json.loads(run.eval_path.read_text())
    assert ev["slice"]["n"] >= 8
    capsys.readouterr()
    assert cli(["evaluate", "--checkpoint", str(run.model_dir), "--data", "real-infnet", "--split", "all"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n_labelled_slices"] == 50 and out["slice"]["n"] == 50 and out["slice"]["roc_auc"] is not None


def test_paper000_recipe_curves_export(workspace, capsys):
    """Paper 000's preset (shortened) on the demo data; its curves export as CSV and PNG."""
    import io

    import pandas as pd
    from PIL import Image

    from training.config import RunConfig, merge
    from training.recipes.presets import presets
    from ui import export

    recipe = presets()["Paper 000 · ResNet50 baseline (30 epochs)"]
    cfg = RunConfig.from_dict(merge(merge(RunConfig().to_dict(), recipe), {
        "optim": {"epochs": 2, "batch_size": 8}, "preprocessing": {"size": 32},
        "data": {"source": "demo", "split": [0.5, 0.17, 0.33], "max_slices_per_case": 4}}))
    assert cfg.optim.optimizer == "adam" and cfg.augment.rotation_deg == 15
    run = execute(cfg)
    csv = pd.read_csv(io.BytesIO(__import__("ui.training_view", fromlist=["history_csv"]).history_csv(run)))
    assert list(csv["epoch"]) == [1, 2] and {"train_loss", "val_acc"} <= set(csv.columns)
    png = Image.open(io.BytesIO(export.curves_png({"paper000": run.metrics()})))
    assert png.size[0] >= 1000 and png.size[1] >= 400


@pytest.mark.parametrize("ema", [0.0, 0.5])
def test_weight_average_is_what_a_run_keeps(workspace, tiny, monkeypatch, ema):
    """With ``optim.ema`` the checkpoint holds the moving average of the weights, not the last step's."""
    import torch

    from training.engine import loop

    saved, trained = [], []
    save_checkpoint, save_state = loop.save_checkpoint, loop.save_state
    monkeypatch.setattr(loop, "save_checkpoint", lambda m, *a, **k: (saved.append(
        {n: t.detach().clone() for n, t in m.state_dict().items()}), save_checkpoint(m, *a, **k))[1])
    monkeypatch.setattr(loop, "save_state", lambda d, m, *a, **k: (trained.append(
        {n: t.detach().clone() for n, t in m.state_dict().items()}), save_state(d, m, *a, **k))[1])
    execute(tiny(model="kd", optim={"epochs": 1, "batch_size": 2, "ema": ema}))  # several steps to average
    weights = [n for n, t in trained[-1].items() if t.is_floating_point() and "running" not in n]
    same = all(torch.equal(saved[0][n], trained[-1][n]) for n in weights)
    assert same == (ema == 0.0)
