"""Data Browser (AppTest): demo data, real sample, uploads, bad uploads, folder refusal."""

from __future__ import annotations

import pytest

from tests.builders import zip_folder
from tests.ctmodels.imaging.test_bad_input import CASES
from tests.ui.apptest import open_page, texts

PAGE = "views/data_browser.py"


def _select_source(at, startswith: str):
    box = at.selectbox(key="db_source")
    box.select(next(o for o in box.options if o.startswith(startswith))).run()
    return at


def test_demo_dataset_is_listed_and_rendered(workspace):
    at = open_page(PAGE)
    assert not at.exception
    assert at.selectbox(key="db_source").value.startswith("Demo phantoms (synthetic)")
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Cases (patients)"] == "6"
    assert int(metrics["Mild"]) + int(metrics["Severe"]) == 6
    assert "Synthetic data" in texts(at)
    table = next(d.value for d in at.dataframe if "case" in d.value.columns)
    assert list(table["case"]) == [f"PH{i:04d}" for i in range(1, 7)]
    assert set(table["label"]) <= {"mild", "severe"}
    assert len(at.image) == 1  # the slice image
    assert "involvement (masks)" in texts(at)
    # scroll, change window, turn on the classical cross-check
    at.slider(key="db_view_slice").set_value(6).run()
    at.segmented_control(key="db_view_window").set_value("Mediastinum").run()
    at.toggle(key="db_view_classical").set_value(True).run()
    assert not at.exception
    assert "classical:" in texts(at) and "W350 / L40" in texts(at)


def test_every_demo_layout_opens(workspace):
    at = open_page(PAGE)
    for layout in ("Demo phantoms (synthetic) · DICOM", "Demo phantoms (synthetic) · MosMed", "Demo phantoms (synthetic) · PNG"):
        _select_source(at, layout)
        assert not at.exception, layout
        assert len(at.image) == 1, layout


def test_real_sample_series(workspace, real_data):
    at = _select_source(open_page(PAGE), "COVID-CT-MD")
    assert not at.exception
    assert "no severity grade" in texts(at)
    assert "radiologist:" in texts(at)  # slice-level infection labels shown next to the image
    assert len(at.image) == 1


def _upload(at, name: str, data: bytes):
    at.file_uploader(key="db_upload").upload(name, data).run()
    return at


def test_upload_dicom_series_zip(workspace):
    at = _select_source(open_page(PAGE), "Upload")
    series = workspace / "data" / "demo" / "dicom" / "PH0001"
    _upload(at, "series.zip", zip_folder(series, "*.dcm", prefix="PH0001/", stored=True))
    assert not at.exception
    assert "12 slices of 128x128" in texts(at)
    assert len(at.image) == 1
    meta = next(d.value for d in at.dataframe if "field" in d.value.columns)
    assert "Modality" in set(meta["field"]) and "PatientID" not in set(meta["field"])
    assert "PH0001" not in meta.to_string()  # the patient ID never reaches the page


def test_a_study_upload_opens_on_the_lung_series_and_switches(workspace):
    from tests.ctmodels.imaging.test_series_choice import NEEDLES, study_zip

    at = _select_source(open_page(PAGE), "Upload")
    _upload(at, "study.zip", study_zip())
    assert not at.exception
    box = next(b for b in at.selectbox if b.label.startswith("Series ("))
    assert len(box.options) == 2 and "12 slices of 32x32" in texts(at)
    assert "lung/sharp kernel (B70f)" in texts(at) and "1 mm (the thinnest)" in texts(at)
    other = next(i for i, o in enumerate(box.options) if o != box.options[box.index])
    box.select_index(other).run()
    box = next(b for b in at.selectbox if b.label.startswith("Series ("))
    assert box.index == other and not at.exception and "6 slices of 32x32" in texts(at) and "chosen by you" in texts(at)
    page = texts(at) + "".join(d.value.to_string() for d in at.dataframe)
    assert not [n for n in NEEDLES if n.lower() in page.lower()]


def test_a_study_opens_from_the_pacs(workspace, orthanc):
    from ctmodels.pacs import PacsClient
    from ctmodels.pacs.loading import load_series

    uid = load_series(PacsClient(orthanc.dicomweb), [workspace / "data" / "demo" / "dicom" / "PH0004"])["PH0004"]
    at = _select_source(open_page(PAGE), "Open a study from a PACS")
    at.text_input(key="db_pacs_url").input(orthanc.dicomweb)
    at.text_input(key="db_pacs_study").input("1.2.3.4.5.6.7").run()
    at.button(key="db_pacs_open").click().run()
    assert not at.exception and [e.value for e in at.error] == ["The PACS has no study with that Study Instance UID."]
    at.text_input(key="db_pacs_study").input(uid).run()
    at.button(key="db_pacs_open").click().run()
    assert not at.exception and not at.error
    assert "Opened the study from the PACS: 12 slices of 128x128" in texts(at) and len(at.image) == 1
    assert uid not in "".join(d.value.to_string() for d in at.dataframe)  # the metadata table shows no UID


BAD = [
    "random-bytes-dcm", "truncated-dicom", "dicom-without-pixels", "mr-dicom", "secondary-capture",
    "nifti-4d", "zero-bytes", "zip-only-txt", "empty-zip", "dicom-two-pixel-spacings", "huge-png-20000",
    "text-named-png", "one-pixel-png", "corrupt-jpeg", "zip-slip", "nested-zip",
]


@pytest.mark.parametrize("case", BAD)
def test_bad_upload_shows_error_and_page_keeps_working(workspace, tmp_path, case):
    _, build, name, expected, _ = next(c for c in CASES if c[0] == case)
    at = _select_source(open_page(PAGE), "Upload")
    _upload(at, name or "upload.bin", build(tmp_path))
    assert not at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "could not be read" in errors[0] and expected.kind in errors[0]
    # the page still works: switch to a dataset and it renders
    _select_source(at, "Demo phantoms (synthetic) · Kaggle")
    assert not at.exception and len(at.image) == 1


def test_local_folder_outside_data_roots_is_refused(workspace):
    at = _select_source(open_page(PAGE), "Local folder")
    at.text_input(key="db_folder").input("/etc").run()
    assert not at.exception
    assert "only be opened inside the data roots" in at.error[0].value
    at.text_input(key="db_folder").input(str(workspace / "data" / "demo" / "kaggle")).run()
    assert not at.exception and not at.error and len(at.image) == 1


def _check_models(at):
    # "Models on this data", the dataset's fourth tab (AppTest renders every tab's content)
    at.button(key="dbc_run").click().run()
    assert not at.exception
    return next(d.value for d in at.dataframe if "AUC" in d.value.index)  # a row per measure, a column per model


def test_the_models_on_a_phantom_dataset(workspace_with_models):
    at = open_page(PAGE)  # the demo phantoms: the phantom set, the four models Compare serves
    assert at.selectbox(key="dbc_set_synthetic").value == "phantom"
    assert "Score the 6 labelled case(s) with 4 model(s)" in at.button(key="dbc_run").label
    summary = _check_models(at)
    assert list(summary.columns) == ["ghost", "pruned", "kd", "baseline"]
    assert summary.loc["sens / spec at the card's point"].str.fullmatch(r"\d+ % / \d+ %").all()
    assert (summary.loc["scans"] == "6").all()
    assert "Per scan" in texts(at) and "learned from" in texts(at)
    assert any(b.label.startswith("Download every slice") for b in at.get("download_button"))
    at.selectbox(key="dbc_plot_model").select("kd").run()  # each model's slices against their stated involvement
    assert not at.exception


def test_the_real_set_on_the_doctors_slices_in_the_browser(workspace_with_both_sets, real_data):
    at = _select_source(open_page(PAGE), "Inf-Net")
    assert at.selectbox(key="dbc_set_real").value == "real"  # real slices get the real-CT set, as on Compare
    summary = _check_models(at)
    assert len(summary.columns) == 4 and summary.loc["card's point"].str.startswith("learned ≥").all()
    assert summary.loc["its 95 % range (patients redrawn)"].str.fullmatch(r"[\d.]+–[\d.]+ %").all()
    assert (summary.loc["slices"] == "50").all() and summary.loc["ρ (involvement)"].astype(float).between(-1, 1).all()
    at.selectbox(key="dbc_set_real").select("phantom").run()  # the phantom set on real slices: said plainly
    assert not at.exception and "baseline learned from synthetic phantoms and this dataset is real" in texts(at)


def test_a_dataset_with_nothing_to_check_says_so(workspace_with_models):
    folder = workspace_with_models / "data" / "unlabelled"
    folder.mkdir()
    for k, src in enumerate(sorted((workspace_with_models / "data" / "demo" / "png").rglob("*.png"))[:3]):
        (folder / f"slice{k}.png").write_bytes(src.read_bytes())
    at = open_page(PAGE)
    at.selectbox(key="db_source").select("Local folder on this server…").run()
    at.text_input(key="db_folder").input(str(folder)).run()
    assert not at.exception
    assert "Nothing here to check models against" in texts(at)
    assert not [b for b in at.button if b.key == "dbc_run"]
