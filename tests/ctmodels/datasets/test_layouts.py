"""Dataset layouts: every phantom layout, the real samples, label rules and readable refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ctmodels.datasets import (
    DatasetError,
    LabelRule,
    builtin_sources,
    detect_layout,
    involvement_from_masks,
    load_case,
    load_masks,
    open_dataset,
    phantom_layouts,
)


def test_phantom_layouts_agree_with_the_manifest(small_phantoms):
    manifest = json.loads((small_phantoms / "manifest.json").read_text())
    truth = {p["patient_id"]: p for p in manifest["patients"]}
    layouts = phantom_layouts(small_phantoms)
    assert set(layouts) == {"kaggle", "dicom", "mosmed", "png"}
    for key in ("kaggle", "dicom", "mosmed"):
        ds = open_dataset(layouts[key])
        assert ds.layout == key and ds.synthetic and len(ds) == 6
        for case in ds.cases:
            assert case.label == truth[case.patient_id]["label"]
            assert case.involvement_pct == pytest.approx(truth[case.patient_id]["involvement_pct"])
            assert case.slice_labels is not None and len(case.slice_labels) == 12
    png = open_dataset(layouts["png"])
    assert png.slice_level and len(png) == sum(len(p["lung_slices"]) for p in truth.values())
    assert {c.label for c in png.cases} <= {"mild", "severe"}


def test_kaggle_masks_give_the_derived_label(small_phantoms):
    ds = open_dataset(small_phantoms / "kaggle")
    case = ds.cases[0]
    vol = load_case(case)
    masks = load_masks(case, vol)
    pct, per_slice = involvement_from_masks(masks)
    assert pct == pytest.approx(case.involvement_pct, abs=0.01)
    assert len(per_slice) == vol.n_slices


def test_label_rule_threshold_and_band():
    rule = LabelRule(25.0, excluded_band=(20.0, 30.0))
    assert [rule.label(v) for v in (5, 21, 29.9, 30, None)] == ["mild", None, None, "severe", None]
    assert LabelRule(50.0).label(40) == "mild"


def test_threshold_changes_phantom_labels(small_phantoms):
    hi = open_dataset(small_phantoms / "kaggle", LabelRule(90.0))
    assert all(c.label == "mild" for c in hi.cases)


def test_real_samples(real_data):
    infnet = open_dataset(real_data / "infnet-semiseg")
    assert infnet.layout == "infnet" and len(infnet) == 50 and not infnet.synthetic
    counts = infnet.label_counts()
    assert counts["severe"] == 22 and counts["mild"] == 28  # the README's derived split
    assert all(c.lesion_mask is not None for c in infnet.cases)
    md = open_dataset(real_data / "covid-ct-md")
    assert {c.case_id for c in md.cases} == {"P002", "cap001", "normal001"}
    p002 = md.case("P002")
    assert p002.label is None and p002.n_slices == 133 and sum(v or 0 for v in p002.slice_infection) == 68
    cap = md.case("cap001")  # community-acquired pneumonia: the README's 86 of 168 slices infected
    assert cap.label is None and cap.n_slices == 168 and sum(v or 0 for v in cap.slice_infection) == 86
    assert md.case("normal001").slice_infection is None
    assert detect_layout(real_data / "covid-ct-md") == "covid-ct-md"


def test_infnet_lesion_mask_aligns(real_data):
    ds = open_dataset(real_data / "infnet-semiseg")
    case = ds.cases[0]
    vol = load_case(case)
    masks = load_masks(case, vol)
    assert masks.lesion is not None and masks.lesion.shape == vol.shape
    assert set(np.unique(masks.lesion)) <= {0, 1}


def test_refusals(tmp_path):
    with pytest.raises(DatasetError, match="not a folder"):
        open_dataset(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="No scans found"):
        open_dataset(tmp_path / "empty")


def test_builtin_sources_follow_the_workspace(workspace):
    keys = [s.key for s in builtin_sources()]
    assert keys[:4] == ["demo-kaggle", "demo-dicom", "demo-mosmed", "demo-png"]
