"""Phantom generator: HU calibration, ground truth, determinism, every layout readable, CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from ctmodels.imaging import read_any
from ctmodels.imaging.phantom import PhantomConfig, build_dataset, generate_patient, sample_severities
from ctmodels.imaging.phantom.dataset import patient_seed
from ctmodels.imaging.phantom.writers import mosmed_category

SMALL = PhantomConfig(size=128, n_slices=12, pixel_mm=2.8, slice_mm=20.0)


def test_hu_calibration_and_ground_truth():
    p = generate_patient("PH0001", 40.0, seed=3)
    hu, lung, lesion = p.hu.astype(float), p.lung > 0, p.lesion
    healthy = lung & (lesion == 0)
    assert -900 < np.median(hu[healthy]) < -780  # aerated lung
    assert -700 < np.median(hu[lesion == 1]) < -400  # ground glass
    assert -100 < np.median(hu[lesion == 2]) < 100  # consolidation
    assert np.median(hu[0][:5, :5]) < -950  # air outside the body
    assert abs(p.involvement_pct - 40.0) < 1.0  # the target is hit exactly by construction
    assert p.label() == "severe" and p.label(threshold_pct=50.0) == "mild"
    assert set(np.unique(p.lung)) <= {0, 1, 2} and (p.lesion[~lung] == 0).all()


def test_normal_patient_has_no_lesions():
    p = generate_patient("PH0002", 0.0, seed=5)
    assert p.involvement_pct == 0.0 and p.label() == "mild"


def test_deterministic_by_seed():
    a = generate_patient("X", 20.0, seed=11, cfg=SMALL)
    b = generate_patient("X", 20.0, seed=11, cfg=SMALL)
    c = generate_patient("X", 20.0, seed=12, cfg=SMALL)
    assert np.array_equal(a.hu, b.hu) and np.array_equal(a.lesion, b.lesion)
    assert not np.array_equal(a.hu, c.hu)


def test_severity_sampling_is_balanced_with_a_gap():
    values = sample_severities(40, np.random.default_rng(0), threshold_pct=25.0, gap_pct=14.0)
    mild = [v for v in values if v < 25]
    assert len(mild) == 20
    assert all(v <= 18.0 for v in mild) and all(v >= 32.0 for v in values if v >= 25)


def test_mosmed_grades():
    assert [mosmed_category(v) for v in (0, 10, 30, 60, 80)] == ["CT-0", "CT-1", "CT-2", "CT-3", "CT-4"]


def test_every_layout_is_written_and_reads_back(small_phantoms):
    manifest = json.loads((small_phantoms / "manifest.json").read_text())
    assert manifest["synthetic"] is True and manifest["n_patients"] == 6
    first = manifest["patients"][0]
    truth = generate_patient(first["patient_id"], first["target_pct"], patient_seed(7, 0), SMALL)
    dicom = read_any(small_phantoms / "dicom" / first["patient_id"])
    kaggle = read_any(small_phantoms / "kaggle" / "ct_scans" / f"phantom_org_{first['patient_id']}.nii")
    mosmed = read_any(small_phantoms / "mosmed" / "studies" / first["mosmed_category"] / "study_0001.nii.gz")
    for vol in (dicom, kaggle, mosmed):
        assert vol.is_hu and vol.shape == truth.hu.shape
        assert np.array_equal(vol.array, truth.hu.astype(np.float32))  # same orientation, same HU
        assert vol.spacing == pytest.approx((20.0, 2.8, 2.8))
    lung = read_any(small_phantoms / "kaggle" / "lung_mask" / f"phantom_{first['patient_id']}.nii")
    assert np.array_equal(lung.array.astype(np.uint8), truth.lung)
    pngs = sorted((small_phantoms / "png").glob(f"*/{first['patient_id']}_s*.png"))
    assert len(pngs) == len(first["lung_slices"])
    img = read_any(pngs[0])
    assert not img.is_hu and img.shape == (1, 128, 128)
    labels = (small_phantoms / "dicom" / "labels.csv").read_text().splitlines()
    assert labels[0].startswith("patient_id") and len(labels) == 7


def test_build_is_deterministic_and_atomic(tmp_path):
    a = build_dataset(tmp_path / "a", n_patients=2, seed=1, cfg=SMALL, layouts=["kaggle"], workers=1)
    b = build_dataset(tmp_path / "b", n_patients=2, seed=1, cfg=SMALL, layouts=["kaggle"], workers=1)
    ja, jb = json.loads(a.read_text()), json.loads(b.read_text())
    assert ja["patients"] == jb["patients"]
    f = "kaggle/ct_scans/phantom_org_PH0001.nii"
    assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
    with pytest.raises(ValueError, match="unknown layout"):
        build_dataset(tmp_path / "c", n_patients=1, layouts=["nope"])
    assert not (tmp_path / "c").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no half-built leftovers


def test_cli(tmp_path):
    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "ctmodels.imaging.phantom", "--out", str(out), "--patients", "2", "--seed", "3",
           "--size", "96", "--slices", "8", "--layouts", "dicom,png", "--workers", "1"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert (out / "manifest.json").is_file() and (out / "dicom" / "labels.csv").is_file()
    assert not (out / "kaggle").exists()
    bad = subprocess.run(cmd[:4] + [str(tmp_path / "x"), "--layouts", "bogus"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown layout" in bad.stderr
