"""Real CT as a source: patient IDs, the combined 'real' source, soft involvement targets, patient-grouped folds,
a tiny real model through the make real-models path, and a quick cross-validation with its classical reference."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ctmodels.checkpoint import read_card
from ctmodels.datasets import open_dataset
from ctmodels.verdict import VerdictRule
from tests.builders import QUICK_CV_MODELS
from training.config import CVConfig, DataConfig, RunConfig
from training.data.prepare import cv_test_patients, load_dataset, named_sources, prepare, severe_targets


def test_covid_ct_seg_slices_carry_patient_ids(real_data):
    ds = open_dataset(real_data / "covid-ct-seg-slices")
    assert len(ds) == 1235 and ds.slice_level
    assert len({c.patient_id for c in ds.cases}) == 14
    assert ds.label_counts() == {"mild": 1186, "severe": 49, "unlabelled": 0}
    assert all("model-made" in c.label_source for c in ds.cases)
    infnet = open_dataset(real_data / "infnet-semiseg")
    assert {c.patient_id for c in infnet.cases} == {f"slice-{c.case_id}" for c in infnet.cases}


def test_real_source_combines_every_8bit_slice(real_data):
    keys = [s.key for s in named_sources()]
    assert {"real", "real-infnet", "real-covid-ct-seg"} <= set(keys)
    assert "real-covid-ct-md" not in keys  # evaluation only: never offered for training
    ds = load_dataset(DataConfig(source="real"))
    assert len(ds) == 1285 and len({c.case_id for c in ds.cases}) == 1285
    assert sum(c.label == "severe" for c in ds.cases) == 71


def test_soft_targets_follow_involvement():
    labels = np.array([0, 0, 1, 1, 0])
    inv = np.array([0.0, 10.0, 25.0, 60.0, np.nan], np.float32)
    hard = severe_targets(labels, inv, DataConfig(target="label"))
    assert hard.tolist() == [0, 0, 1, 1, 0]
    soft = severe_targets(labels, inv, DataConfig(target="involvement", threshold_pct=25.0))
    assert soft[0] < soft[1] < soft[2] < soft[3] and soft[2] == pytest.approx(0.5) and soft[4] == 0.0
    assert soft[0] < 0.01 and soft[1] == pytest.approx(0.25, abs=0.01) and soft[3] == pytest.approx(0.818, abs=0.01)


def test_folds_partition_patients():
    patients = {f"p{i}": int(i % 4 == 0) for i in range(23)}
    folds = [cv_test_patients(patients, 5, f, seed=3) for f in range(5)]
    assert set().union(*folds) == set(patients) and sum(len(f) for f in folds) == len(patients)
    assert all(any(patients[p] for p in f) for f in folds)  # every fold holds a severe patient
    assert folds == [cv_test_patients(patients, 5, f, seed=3) for f in range(5)]  # deterministic


def test_cv_fold_keeps_patients_out_of_training(real_data, workspace):
    from training.recipes.model_set import config_for
    from training.recipes.real import REAL

    cfg = config_for(REAL, "baseline", True, workspace, {"data": {"cv_folds": 3, "cv_fold": 1, "cv_seed": 0}})
    data = prepare(cfg.data, cfg.pre, cfg.seed)
    test = set(data.patients[data.split == 2].tolist())
    seen = set(data.patients[(data.split == 0) | (data.split == 1)].tolist())
    assert test and seen and not (test & seen)
    assert data.features.shape == (len(data.labels), 21) and not data.hu
    assert np.isfinite(data.involvement[data.labels >= 0]).all()


def test_tiny_real_model_through_the_real_models_path(real_data, tiny_real_models):
    """The tiny real-CT set's baseline (``config_for(REAL, "baseline", quick=True)`` through ``execute``, as
    ``make real-models`` runs it): its card, its evaluation and the inference API on it."""
    from ctmodels.imaging import read_any
    from ctmodels.imaging.lung import segment_lungs
    from ctmodels.imaging.lung_field import lung_field
    from ctmodels.imaging.phantom import PhantomConfig, generate_patient
    from ctmodels.inference import lesion_map, load_model, predict_volume, prepare_input, score
    from ctmodels.preprocess import drawn_map, network_outputs
    from training.jobs.registry import RunStore
    from training.recipes.real import REAL

    run_dir = Path((tiny_real_models.parent.parent / "baseline-run").read_text())
    run = RunStore(run_dir.parent.parent).get(run_dir.name)
    assert run is not None and run.dir == run_dir
    card = read_card(run.model_dir)
    assert card.trained_on["source"] == "real" and card.trained_on["values"].startswith("8-bit")
    assert card.label_rule["target"] == "involvement" and card.label_rule["threshold_pct"] == 25.0
    assert card.preprocessing["intensity"] == "landmarks" and card.preprocessing["orient"] is True
    ev = run.evaluation()
    assert ev["split"] == "val" and len(ev["predictions"]["p_severe"]) == ev["slice"]["n"]
    assert card.arch["lesion_head"] == REAL.common["model_kwargs"]["lesion_head"]  # lesion-aware, like every real model
    rule = card.verdict
    assert rule["score"] == "lesion" and 0 < rule["cut"] < 1 and "lesion_logit_shift" in rule["validation"]
    # the recipe's cross-validated operating point: severe from that learned involvement, P(severe) = 0.5 there
    op = REAL.step("baseline")["verdict_op_pct"]
    assert rule["validation"]["operating_point_pct"] == op and rule["cut"] == 0.5
    assert VerdictRule.from_card(card).verdict(float(VerdictRule.from_card(card).p_severe(None, np.array([op]))[0])) == "severe"
    assert "lesion_dice" in ev and ev["predictions"]["cut"] == rule["cut"]
    drawn = card.lesion_map  # where its map marks lesion, chosen on the validation masks like the verdict's cut
    assert 0 < drawn["cut"] < 1 and drawn["validation_dice"] >= drawn["validation_dice_at_0.5"]
    assert ev["lesion_dice"]["cut"] == drawn["cut"] == card.map_cut
    assert len(ev["predictions"]["learned_involvement"]) == ev["slice"]["n"]
    lm = load_model(run.model_dir)  # and it scores a HU volume through the same input path
    vol = generate_patient("PHT", 40.0, seed=2, cfg=PhantomConfig(size=128, n_slices=8, pixel_mm=2.8,
                                                                     slice_mm=20.0)).to_volume()
    lung = lung_field(vol)
    assert (lung == segment_lungs(vol)).all()  # HU: the classical segmentation
    vp = predict_volume(lm, vol, lung)
    assert 0 <= vp.patient_p <= 1 and len(vp.slices) == len(vp.p_severe) > 0
    assert vp.verdict == ("severe" if vp.patient_p >= rule["cut"] else "mild")  # at the card's cut
    assert vp.involvement is not None and 0 <= vp.patient_involvement <= 100
    # the lesion map API: (H, W) float32 in [0, 1] on the slice's own grid, for HU volumes and 8-bit slices
    for volume, field in ((vol, lung), (read_any(real_data / "infnet-semiseg" / "Imgs" / "3.jpg"), None)):
        field = lung_field(volume) if field is None else field
        index = vp.slices[0] if volume is vol else 0
        m = lesion_map(lm, volume, field, index)
        assert m.shape == volume.shape[1:] and m.dtype == np.float32 and 0 <= m.min() and m.max() <= 1
        inp = prepare_input(lm, volume, [index], field)  # drawn at the card's map cut: ≥ 0.5 where P ≥ the cut
        _, raw = network_outputs(lm.model, inp.tensor, lm.pre)
        assert np.allclose(score(lm, inp).lesion, drawn_map(raw.numpy(), drawn["cut"]), atol=1e-5)


def test_quick_cross_validation_with_classical_reference(quick_cv, workspace):
    from training.recipes.cv import run as run_cv

    report = json.loads((quick_cv / "report.json").read_text())
    assert report["repeats_done"] == 1 and report["models"] == list(QUICK_CV_MODELS)
    rows = report["rows"]
    assert {*QUICK_CV_MODELS, "logistic (label)", "ridge (involvement)"} <= set(rows)  # the students trained in lanes
    assert all(rows[k]["repeats"][0]["n"] == 120 for k in QUICK_CV_MODELS)
    base = rows["baseline"]["repeats"][0]
    assert base["n"] == rows["ridge (involvement)"]["repeats"][0]["n"] == 120  # every slice scored once
    # each fold judged at the operating point chosen on the other fold; each fold card's own cut beside it
    assert len(base["fold_points_pct"]) == 2 and 0 < base["operating_point"]["learned_pct"] < 100
    assert {"sensitivity", "specificity"} <= set(base["own_cut"])
    assert 0.0 <= rows["baseline"]["roc_auc"]["mean"] <= 1.0 and "cam" in rows["baseline"]
    assert (quick_cv / "report.md").read_text().count("|") > 20
    # the ranking against the involvement without the model-made masks' edge artefacts, beside the stated one
    shares = json.loads((quick_cv / "mask_artefacts.json").read_text())
    assert shares and all(0.0 <= v <= 1.0 for v in shares.values())
    assert -1.0 <= rows["baseline"]["spearman_artefact_free"]["mean"] <= 1.0
    assert "ρ without mask artefacts" in (quick_cv / "report.md").read_text()
    # each fold's ranking under its own model: two folds, and the report's column says so
    folds = rows["baseline"]["fold_spearman"]
    assert len(folds["values"]) == 2 and folds["values"] == rows["baseline"]["repeats"][0]["fold_spearman"]
    assert f"| {folds['text']} |" in (quick_cv / "report.md").read_text()
    assert not (quick_cv / "folds").exists() or not any((quick_cv / "folds").iterdir())  # fold models dropped
    # run again: every result is found on disk, nothing is trained, the report is the same
    import training.recipes.cv as cv_module
    from training.config import CVConfig

    def no_training(*args, **kwargs):
        raise AssertionError("a finished fold was trained again")

    original = cv_module.execute
    cv_module.execute = no_training
    try:
        again = run_cv(CVConfig(recipe="real", folds=2, repeats=1, models=list(QUICK_CV_MODELS), quick=True), quick_cv)
    finally:
        cv_module.execute = original
    assert again["rows"]["baseline"]["roc_auc"] == rows["baseline"]["roc_auc"]


def test_cv_config_refuses_bad_settings():
    from training.config import ConfigError

    for bad in ({"folds": 1}, {"repeats": 0}, {"models": ["resnet9000"]}, {"recipe": "mystery"}):
        cfg = RunConfig.from_dict({"command": "cv", "model": "cv", "cv": {**CVConfig().__dict__, **bad}})
        with pytest.raises(ConfigError):
            cfg.validate()
    json.dumps(RunConfig.from_dict({"command": "cv", "model": "cv", "cv": {}}).to_dict())


def test_leave_one_source_out_holds_a_whole_source_out(real_data, workspace):
    from training.data.prepare import SOURCES, source_of, source_patients
    from training.recipes.model_set import config_for
    from training.recipes.real import REAL

    assert source_of("coronacases_org_003") == "coronacases" and source_of("radiopaedia-10") == "radiopaedia"
    assert source_of("slice-12") == "medseg"
    for src in SOURCES:
        cfg = config_for(REAL, "baseline", True, workspace, {"data": {"holdout_source": src}})
        data = prepare(cfg.data, cfg.pre, cfg.seed)
        test = {source_of(p) for p in data.patients[data.split == 2]}
        seen = {source_of(p) for p in data.patients[(data.split == 0) | (data.split == 1)]}
        assert test == {src} and src not in seen and seen
    with pytest.raises(Exception, match="unknown source"):
        source_patients({"a": 0}, "mars")


def test_cv_by_source_names_its_folds():
    from training.config import ConfigError
    from training.recipes.cv import fold_names

    assert fold_names(CVConfig(split="sources")) == ["coronacases", "radiopaedia", "medseg"]
    assert fold_names(CVConfig(folds=3)) == ["fold 1", "fold 2", "fold 3"]
    bad = RunConfig.from_dict({"command": "cv", "model": "cv", "cv": {"split": "sources", "recipe": "demo"}})
    with pytest.raises(ConfigError, match="real recipe"):
        bad.validate()


def test_real_recipe_uses_the_operating_points_its_cross_validation_chose():
    """The committed patient-grouped CV (docs/measurements/real_cv.json) chose each model's operating point on
    out-of-fold predictions; the recipe a build uses must carry the same ones (re-run the CV, then copy)."""
    from training.recipes.real import REAL

    report = json.loads((Path(__file__).resolve().parents[2] / "docs" / "measurements" / "real_cv.json").read_text())
    for key in REAL.keys:
        chosen = report["rows"][key]["operating_point"]["learned_pct"]
        assert REAL.step(key)["verdict_op_pct"] == pytest.approx(chosen, abs=0.05), key
