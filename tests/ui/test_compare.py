"""Compare page (AppTest): uploads of every kind, a sample case, bad input, no-models offer, export."""

from __future__ import annotations

import gzip

import pytest

from tests.builders import zip_folder
from tests.ctmodels.imaging.test_bad_input import CASES
from tests.ui.apptest import open_page, texts

PAGE = "views/compare.py"
MODELS = ["ghost", "pruned", "kd", "baseline"]


def _upload(at, name: str, data: bytes):
    at.segmented_control(key="cmp_mode").set_value("Upload").run()
    at.file_uploader(key="cmp_upload").upload(name, data).run()
    return at


def _check_results(at, volume: bool):
    assert not at.exception, at.exception
    body = texts(at)
    for m in MODELS:
        assert f"**{m}**" in body
    assert body.count("P(severe)") >= len(MODELS)
    assert len(at.image) == 1 + len(MODELS)  # the input and one CAM per model
    badges = [m.value for m in at.markdown if m.value.startswith((":red-badge[", ":blue-badge["))]
    assert len(badges) == len(MODELS)  # one verdict badge per model
    if volume:
        table = next(d.value for d in at.dataframe if "patient verdict" in d.value.columns)
        assert list(table["model"]) == MODELS and set(table["patient verdict"]) <= {"mild", "severe"}


def test_sample_case(workspace_with_models):
    at = open_page(PAGE)
    _check_results(at, volume=True)
    assert "Classical involvement" in texts(at)
    assert not [w for w in at.warning if "preprocessing" in w.value]


def test_a_model_that_learned_from_other_inputs_is_flagged(workspace_with_models):
    """A model whose inputs this version prepares differently still scores, under a warning to rebuild it."""
    from ctmodels.atomic import read_json, write_json_atomic

    card = workspace_with_models / "models" / "ghost" / "card.json"  # a new file: the fixture's are hard links
    old = read_json(card)
    old["versions"]["preprocess"] = "1"
    write_json_atomic(card, old)
    at = open_page(PAGE)
    _check_results(at, volume=True)
    warned = [w.value for w in at.warning if "preprocessing" in w.value]
    assert len(warned) == 1 and "**ghost**" in warned[0] and "preprocessing v1" in warned[0]
    assert "make demo-models" in warned[0]


def test_upload_phantom_dicom_zip(workspace_with_models):
    data = zip_folder(workspace_with_models / "data/demo/dicom/PH0002", "*.dcm", stored=True)
    at = _upload(open_page(PAGE), "series.zip", data)
    _check_results(at, volume=True)
    labels = [b.proto.label for b in at.get("download_button")]
    assert "Download DICOM SR (measurement report)" in labels and "Download DICOM SEG (lung field, lesion)" in labels


def test_a_zip_of_two_series_offers_the_choice(workspace_with_models):
    """Once refused ("2 different CT series"): now the reader's pick is scored and the other one is a click away."""
    demo = workspace_with_models / "data/demo/dicom"
    data = zip_folder(demo, "PH000[23]/*.dcm", stored=True)
    at = _upload(open_page(PAGE), "study.zip", data)
    _check_results(at, volume=True)
    box = next(b for b in at.selectbox if b.label.startswith("Series (2 CT series"))
    first = box.index
    box.select_index(1 - first).run()
    _check_results(at, volume=True)
    assert next(b for b in at.selectbox if b.label.startswith("Series (")).index == 1 - first
    assert "chosen by you" in texts(at)


def test_upload_nifti(workspace_with_models):
    nii = (workspace_with_models / "data/demo/kaggle/ct_scans/phantom_org_PH0003.nii").read_bytes()
    at = _upload(open_page(PAGE), "scan.nii.gz", gzip.compress(nii))
    _check_results(at, volume=True)
    labels = [b.proto.label for b in at.get("download_button")]
    assert not [x for x in labels if "DICOM" in x]  # no DICOM results without DICOM headers to file them under


def test_upload_png_is_flagged_as_not_hu(workspace_with_models):
    png = next((workspace_with_models / "data/demo/png").glob("*/*.png")).read_bytes()
    at = _upload(open_page(PAGE), "slice.png", png)
    _check_results(at, volume=False)
    assert "Refer / out of scope" in texts(at) and "8-bit" in texts(at)


def test_upload_real_sample(workspace_with_models, real_data):
    folder = real_data / "covid-ct-md" / "Sample data" / "COVID-19 subjects" / "P002"
    at = _upload(open_page(PAGE), "p002.zip", zip_folder(folder, "*.dcm", limit=12, stored=True))
    _check_results(at, volume=True)
    assert "trained on synthetic phantoms" in texts(at)
    jpg = (real_data / "infnet-semiseg" / "Imgs" / "3.jpg").read_bytes()
    _upload(at, "infnet.jpg", jpg)
    _check_results(at, volume=False)


@pytest.mark.parametrize("case", ["truncated-dicom", "nifti-4d", "text-named-png", "dicom-two-pixel-spacings"])
def test_corrupt_upload_then_page_keeps_working(workspace_with_models, tmp_path, case):
    _, build, name, expected, _ = next(c for c in CASES if c[0] == case)
    at = _upload(open_page(PAGE), name or "x.bin", build(tmp_path))
    assert not at.exception
    assert len(at.error) == 1 and "could not be read" in at.error[0].value
    at.segmented_control(key="cmp_mode").set_value("Sample case").run()
    _check_results(at, volume=True)


def test_no_models_offers_the_demo_build(workspace, monkeypatch):
    launched = []
    import training.jobs.runner as jobs

    monkeypatch.setattr(jobs, "launch_demo", lambda: launched.append(1) or {"running": True})
    at = open_page(PAGE)
    assert not at.exception
    assert "No trained models" in texts(at)
    at.button(key="cmp_build_demo").click().run()
    assert launched == [1]


def test_a_running_demo_build_shows_its_progress(workspace):
    """The build reports through the same progress record as runs; the page draws it (no log parsing)."""
    import json
    import os
    import time

    from training.jobs.progress import set_progress_path, writer

    folder = workspace / "models"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "demo-build.log").write_text("")
    (folder / "demo-job.json").write_text(json.dumps({"pid": os.getpid(), "log": str(folder / "demo-build.log"),
                                                      "started": time.time()}))
    writer(set_progress_path("demo"))({"stage": "training pruned · prune-step1 epoch 1/2", "unit": "step",
                                       "epoch": 3, "epochs": 6, "batch": 500, "batches": 1000})
    at = open_page(PAGE)
    assert not at.exception
    bar = at.get("progress")[0].proto
    assert bar.text == "Building the demo model set · training pruned · prune-step1 epoch 1/2: step 3/6"
    assert bar.value == int(100 * 2.5 / 6)  # streamlit truncates to a whole percent


def test_slice_navigation_and_methods(workspace_with_models):
    at = open_page(PAGE)
    at.button(key="cmp_jump").click().run()
    most = at.slider(key="cmp_slice").value
    at.slider(key="cmp_slice").set_value(max(0, most - 1)).run()
    for method in ("GradCAM++", "HiResCAM", "EigenCAM", "LayerCAM"):
        at.selectbox(key="cmp_method").select(method).run()
        assert not at.exception, method
        assert len(at.image) == 5


REAL_MODELS = [f"{k} (real CT)" for k in MODELS]


def _check_real_results(at, volume: bool):
    assert not at.exception, at.exception
    body = texts(at)
    for m in REAL_MODELS:
        assert f"**{m}**" in body
    # the input, and per real-CT model its CAM and its learned lesion map (every real-CT model has a lesion head)
    assert len(at.image) == 1 + 2 * len(MODELS)
    assert body.count("Learned lesion map") == len(MODELS) and body.count("Learned involvement:") == len(MODELS)
    assert "trained on synthetic phantoms" not in body
    if volume:
        table = next(d.value for d in at.dataframe if "patient verdict" in d.value.columns)
        assert list(table["model"]) == REAL_MODELS
        learned = table["scan learned involvement %"]
        assert learned.notna().all() and ((learned >= 0) & (learned <= 100)).all()
        assert any("Involvement by slice" in str(c.proto) for c in at.get("plotly_chart"))


def test_real_scans_get_the_real_ct_set(workspace_with_both_sets, real_data):
    jpg = (real_data / "infnet-semiseg" / "Imgs" / "3.jpg").read_bytes()
    at = _upload(open_page(PAGE), "infnet.jpg", jpg)
    _check_real_results(at, volume=False)
    assert "8-bit image (display intensities, not HU)" in texts(at)  # in scope for models trained on 8-bit
    assert "models trained on CT values see a different input" not in texts(at)
    from ctmodels.checkpoint import read_card  # each map is drawn at its own card's cut, and says which

    for key in MODELS:
        cut = read_card(workspace_with_both_sets / "models" / "real" / key).map_cut
        assert f"P(lesion) ≥ {100 * cut:.0f} %" in texts(at)
    folder = real_data / "covid-ct-md" / "Sample data" / "COVID-19 subjects" / "P002"
    _upload(at, "p002.zip", zip_folder(folder, "*.dcm", limit=12, stored=True))
    _check_real_results(at, volume=True)


def test_phantoms_keep_the_phantom_set_and_the_set_can_be_switched(workspace_with_both_sets):
    at = open_page(PAGE)
    _check_results(at, volume=True)  # a phantom sample case: the phantom set
    at.segmented_control(key="cmp_set").set_value("Real-CT set").run()
    _check_real_results(at, volume=True)
    assert "this scan is a synthetic phantom" in texts(at)


def test_real_scan_without_real_set_offers_to_build_it(workspace_with_models, real_data, monkeypatch):
    launched = []
    import training.jobs.runner as jobs

    monkeypatch.setattr(jobs, "launch_real", lambda: launched.append(1) or {"running": True})
    jpg = (real_data / "infnet-semiseg" / "Imgs" / "3.jpg").read_bytes()
    at = _upload(open_page(PAGE), "infnet.jpg", jpg)
    _check_results(at, volume=False)
    assert "trained on synthetic phantoms" in texts(at)
    at.button(key="cmp_build_real").click().run()
    assert launched == [1]
