"""A model set checked on a labelled dataset, every scan scored as Compare scores it
(``training.evaluation.on_dataset``)."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from ctmodels.datasets import Case, Dataset, open_dataset
from ctmodels.inference import load_model
from ctmodels.verdict import VerdictRule
from training.evaluation import on_dataset
from training.evaluation.on_dataset import (
    NothingToCheckError,
    check_dataset,
    labelled,
    learned_col,
    own_cut,
    p_col,
    point_range,
    point_text,
    range_text,
    slice_truth,
    verdict_col,
)

KEYS = ("ghost", "pruned", "kd", "baseline")


def _models(folder: Path) -> list:
    return [load_model(folder / k, k) for k in KEYS]


def test_the_phantom_set_on_the_phantoms(workspace_with_models):
    ds = open_dataset(workspace_with_models / "data" / "demo" / "kaggle")
    models = _models(workspace_with_models / "models")
    check = check_dataset(ds, models)

    assert len(check.slices) == sum(len(slice_truth(c)) for c in ds.cases) > len(ds.cases)
    assert set(check.slices["label"]) <= {"mild", "severe"}
    assert len(check.scans) == len(ds.cases) and set(check.scans["label"]) == {c.label for c in ds.cases}
    assert list(check.summary["model"]) == list(KEYS)
    for lm, (_, row) in zip(models, check.summary.iterrows()):
        scored = check.slices[check.slices[p_col(lm.name)].notna()]  # a slice out of a model's scope is not its
        assert 0 < len(scored) < len(check.slices)  # the phantoms' apex and base crescents are out of scope
        p, y = scored[p_col(lm.name)].to_numpy(float), (scored["label"] == "severe").to_numpy()
        severe = (scored[verdict_col(lm.name)] == "severe").to_numpy()
        assert np.array_equal(severe, p >= lm.rule.cut)  # the verdicts at the card's cut, as Compare gives them
        assert row["slices scored"] == len(p) and row["severe"] == int(y.sum())
        assert row["sensitivity"] == pytest.approx(severe[y].mean())
        assert row["specificity"] == pytest.approx((~severe[~y]).mean())
        assert 0.0 <= row["AUC"] <= 1.0 and -1.0 <= row["Spearman ρ (involvement)"] <= 1.0
        assert row["scan accuracy"] == pytest.approx(
            (check.scans[verdict_col(lm.name)] == check.scans["label"]).mean())
    assert check.skipped == {}


def test_an_interrupted_check_goes_on_where_it_stopped(workspace_with_models, monkeypatch):
    ds = open_dataset(workspace_with_models / "data" / "demo" / "kaggle")
    models = _models(workspace_with_models / "models")
    scored: list[str] = []
    real_score = on_dataset.score_case
    monkeypatch.setattr(on_dataset, "score_case", lambda case, ms: scored.append(case.case_id) or real_score(case, ms))

    class Stop(Exception):
        pass

    def stop_at_third(k, n, case):
        if k == 2:
            raise Stop  # the browser left mid-run

    done: dict = {}
    with pytest.raises(Stop):
        check_dataset(ds, models, done, progress=stop_at_third)
    assert len(done) == 2
    check = check_dataset(ds, models, done)
    assert sorted(scored) == sorted(c.case_id for c in ds.cases)  # none scored twice
    assert check.slices.equals(check_dataset(ds, models).slices)


def test_an_unreadable_case_is_left_out_and_said_why(workspace_with_models, tmp_path):
    root = tmp_path / "png"
    shutil.copytree(workspace_with_models / "data" / "demo" / "png", root)
    broken = sorted(root.rglob("*.png"))[0]
    broken.write_bytes(b"not a png at all")
    ds = open_dataset(root)
    check = check_dataset(ds, _models(workspace_with_models / "models"))
    (case_id, why), = check.skipped.items()
    assert broken.stem in case_id and why
    assert len(check.slices) == len(labelled(ds)) - 1


def test_a_dataset_without_labels_has_nothing_to_check(tmp_path):
    ds = Dataset("unlabelled", tmp_path, "png", [Case("a", "a", tmp_path / "a.png", n_slices=1)], slice_level=True)
    assert labelled(ds) == []
    with pytest.raises(NothingToCheckError, match="no labelled slice"):
        check_dataset(ds, [])


def test_the_data_s_own_point_and_how_a_cut_reads():
    mild, severe = [0.05, 0.1, 0.2, 0.3, 0.45, 0.6], [0.5, 0.7, 0.8, 0.85, 0.9]
    p, y = np.array(mild + severe), np.array([0] * 6 + [1] * 5)
    # A class-balanced logistic fit, as the recipe's point: where the classes meet (mild 0.6, severe 0.5 overlap)
    cut = own_cut(p, y)
    assert 0.5 < cut < 0.6
    assert cut < own_cut(np.r_[p, 0.55, 0.56], np.r_[y, 0, 0]) < 0.7  # two more mild above 0.5 push it up
    assert own_cut(p[:-1], y[:-1]) is None  # four severe slices: too few to choose a point on
    lesion = SimpleNamespace(rule=VerdictRule.at_involvement(13.2, 25.0))
    assert point_text(lesion, 0.5) == "learned ≥ 13.2 %"
    assert point_text(lesion, 0.8) == "learned ≥ 37.8 %"  # logit r = logit 0.8 + logit 0.132
    assert point_text(SimpleNamespace(rule=VerdictRule("head", 1.0, 0.0, 0.26)), 0.26) == "P ≥ 0.26"
    assert range_text(lesion, 0.5, 0.8) == "13.2–37.8 %"


def test_how_much_a_point_rests_on_its_patients():
    rng = np.random.default_rng(3)
    groups = np.repeat(np.arange(20), 6)  # 20 patients, 3 severe and 3 mild slices each, cleanly apart
    y = np.tile([1, 1, 1, 0, 0, 0], 20)
    p = np.where(y == 1, 0.6 + 0.4 * rng.random(120), 0.4 * rng.random(120))
    lo, hi = point_range(p, y, groups)
    assert p[y == 0].max() <= lo <= hi <= p[y == 1].min()  # every draw puts the point between the classes
    one = np.zeros(60, int)
    one[:3] = 1  # three severe slices, all of one patient of ten: most draws hold too few to choose a point
    assert point_range(one * 0.8 + 0.1, one, np.repeat(np.arange(10), 6)) is None


def test_the_real_set_on_the_doctors_slices(tiny_real_models, real_data):
    ds = open_dataset(real_data / "infnet-semiseg")
    check = check_dataset(ds, _models(tiny_real_models))
    assert len(check.slices) == 50 and check.scans.empty
    assert check.slices[learned_col("baseline")].notna().all()  # lesion-aware: the learned involvement per slice
    row = check.summary.set_index("model").loc["baseline"]
    assert row["severe"] == int((check.slices["label"] == "severe").sum()) > 0
    assert 0 < row["severe patients"] <= row["severe"]  # each Inf-Net slice is its own patient: no IDs
    assert -1.0 <= row["Spearman ρ (involvement)"] <= 1.0
    assert str(row["card's point"]).startswith("learned ≥")


def test_the_same_check_from_the_command_line(workspace_with_models, tmp_path, capsys):
    from training.__main__ import main

    data, models = workspace_with_models / "data" / "demo" / "kaggle", workspace_with_models / "models"
    assert main(["check", "--data", str(data), "--set", str(models), "--out", str(tmp_path / "out")]) == 0
    summary = pd.read_csv(tmp_path / "out" / "summary.csv")
    assert list(summary["model"]) == list(KEYS) and (summary["scans"] == 6).all()
    assert len(pd.read_csv(tmp_path / "out" / "slices.csv")) == sum(len(slice_truth(c)) for c in open_dataset(data).cases)
    assert "card's point" in capsys.readouterr().out
    assert main(["check", "--data", str(data), "--set", str(models), "--models", "nope"]) == 2
    assert "no model nope" in capsys.readouterr().err
    assert main(["check", "--data", str(tmp_path / "out"), "--set", str(models)]) == 2  # a folder with no labels
