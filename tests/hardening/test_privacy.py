"""A DICOM series full of identifying tags goes through upload, viewing, comparison, export and a training
run; no identifying value may appear in rendered pages, logs, run folders, the registry or exports."""

from __future__ import annotations

import io
import logging
import sqlite3
import zipfile

import pydicom

from tests.builders import dicom_bytes, zip_bytes
from tests.ui.apptest import open_page, texts

IDENTIFYING = {
    "PatientName": "DOE^JANE^MARIE",
    "PatientID": "MRN-88812345",
    "OtherPatientIDs": "SSN-123-45-6789",
    "PatientBirthDate": "19610214",
    "PatientAddress": "12 Elm Street Springfield",
    "PatientTelephoneNumbers": "555-0199",
    "StudyDate": "20250117",
    "SeriesDate": "20250117",
    "AcquisitionDate": "20250117",
    "StudyTime": "101512",
    "AccessionNumber": "ACC-77441",
    "InstitutionName": "Saint Example General Hospital",
    "InstitutionAddress": "1 Hospital Road Springfield",
    "ReferringPhysicianName": "HOUSE^GREGORY",
    "PerformingPhysicianName": "QUINN^MICHAELA",
    "OperatorsName": "TECH^TERRY",
    "StationName": "CTROOM7-SEGH",
    "StudyDescription": "CT CHEST for DOE JANE",
    "SeriesDescription": "Thorax Jane Doe",
    "StudyID": "STUDY-4411",
}
NEEDLES = ["DOE", "JANE", "88812345", "123-45-6789", "19610214", "Elm Street", "555-0199", "20250117",
           "ACC-77441", "Saint Example", "Hospital Road", "HOUSE", "QUINN", "TERRY", "CTROOM7", "STUDY-4411"]


def _identified(path) -> bytes:
    ds = pydicom.dcmread(path)
    for k, v in IDENTIFYING.items():
        setattr(ds, k, v)
    ds.BurnedInAnnotation = "YES"
    return dicom_bytes(ds)


def _identified_zip(series_dir) -> bytes:
    return zip_bytes({f.name: _identified(f) for f in sorted(series_dir.glob("*.dcm"))}, stored=True)


def _assert_clean(text: str, where: str) -> None:
    found = [n for n in NEEDLES if n.lower() in text.lower()]
    assert not found, f"identifying values {found} leaked into {where}"


#: What a result must copy from its source to be filed under the study (patient and general study modules).
FILING_KEYWORDS = {"PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                   "AccessionNumber", "ReferringPhysicianName", "StudyID"}


def _assert_dicom_results_carry_only_the_filing_identifiers(assessments: dict, upload: bytes) -> None:
    """The SR and SEG the page offers carry the study's identity (to be filed under it) and nothing else of the
    source's headers: no address, institution, operator, station, descriptions or other dates."""
    from ctmodels.dicom_out import write_seg, write_sr
    from ctmodels.imaging.reader import source_images

    (assessment,) = assessments.values()
    for raw in (write_sr(assessment, source_images(upload, "patient.zip")),
                write_seg(assessment, source_images(upload, "patient.zip"))):
        ds = pydicom.dcmread(io.BytesIO(raw))
        assert ds.PatientID == IDENTIFYING["PatientID"]  # filed under the right patient
        rest = "\n".join(str(e.value) for e in ds.iterall() if e.keyword not in FILING_KEYWORDS and e.VR != "SQ")
        _assert_clean(rest, f"the DICOM {ds.Modality} (outside the patient and study identity)")


def _all_page_text(at) -> str:
    parts = [texts(at)]
    for d in at.dataframe:
        parts.append(d.value.to_string())
    for e in at.get("expander"):
        parts.append(str(e.proto))
    for j in at.json:
        parts.append(str(j.value))
    return "\n".join(parts)


def test_no_identifier_leaks_anywhere(workspace_with_models, caplog, tmp_path, monkeypatch):
    caplog.set_level(logging.DEBUG)
    data = _identified_zip(workspace_with_models / "data" / "demo" / "dicom" / "PH0001")
    from ui import export

    rendered = []  # burned-in pixels may identify the patient: no comparison image is ever made of them
    real_png = export.comparison_png
    monkeypatch.setattr(export, "comparison_png", lambda *a, **k: rendered.append(1) or real_png(*a, **k))

    at = open_page("views/compare.py")
    at.segmented_control(key="cmp_mode").set_value("Upload").run()
    rendered.clear()  # the sample case shown before the upload has no such flag
    at.file_uploader(key="cmp_upload").upload("patient.zip", data).run()
    assert not at.exception and len(at.image) == 5
    page = _all_page_text(at)
    _assert_clean(page, "the Compare page")
    assert "Burned-in annotations" in page
    # the exports the page offers: the numbers CSV and the DICOM results (no pixels of the scan in either);
    # the PNG is never rendered for burned-in scans
    assert rendered == [] and "No comparison image" in page
    assert [b.proto.label for b in at.get("download_button")] == [
        "Download numbers (CSV)", "Download DICOM SR (measurement report)", "Download DICOM SEG (lung field, lesion)"]
    csv = export.numbers_csv([{"model": "x", "slice": 1}]).decode()
    _assert_clean(csv, "the CSV export")
    _assert_dicom_results_carry_only_the_filing_identifiers(at.session_state["cmp_assessment"], data)

    at = open_page("views/data_browser.py")
    box = at.selectbox(key="db_source")
    box.select(next(o for o in box.options if o.startswith("Upload"))).run()
    at.file_uploader(key="db_upload").upload("patient.zip", data).run()
    at.toggle(key="db_up_view_classical").set_value(True).run()
    assert not at.exception
    _assert_clean(_all_page_text(at), "the Data Browser")

    # the image itself goes through export: the meeting PNG must carry no tag text (it never reads tags)
    from ctmodels.imaging import read_any
    vol = read_any(data)
    _assert_clean(repr(vol.meta) + vol.describe(), "Volume metadata")

    _assert_clean("\n".join(r.getMessage() for r in caplog.records), "the logs")

    # a dataset of such series is trained on: run folders, logs and the registry stay clean
    demo = workspace_with_models / "data" / "demo" / "dicom"
    ds_root = workspace_with_models / "data" / "identified"
    lines = ["patient_id,series_folder,label"]
    for k, series in enumerate(sorted(p for p in demo.iterdir() if p.is_dir())):
        folder = ds_root / f"case{k}"
        folder.mkdir(parents=True)
        with zipfile.ZipFile(io.BytesIO(_identified_zip(series))) as zf:
            zf.extractall(folder)
        label = next(l.split(",")[2] for l in (demo / "labels.csv").read_text().splitlines()[1:] if l.startswith(series.name))
        lines.append(f"case{k},case{k},{label}")
    (ds_root / "labels.csv").write_text("\n".join(lines) + "\n")
    from training.config import RunConfig, merge
    from training.engine.pipeline import execute

    cfg = merge(RunConfig().to_dict(), {"model": "kd", "data": {"source": str(ds_root), "split": [0.5, 0.17, 0.33]},
                                         "optim": {"epochs": 1, "batch_size": 8}, "preprocessing": {"size": 32}})
    run = execute(RunConfig.from_dict(cfg))
    assert run.status == "completed"
    for p in run.dir.rglob("*"):
        if p.is_file() and p.suffix in (".json", ".jsonl", ".txt", ".csv", ".log", ".md"):
            _assert_clean(p.read_text(errors="ignore"), str(p))
    with sqlite3.connect(workspace_with_models / "runs.db") as c:
        rows = c.execute("SELECT * FROM runs").fetchall()
    _assert_clean(repr(rows), "the run registry")
    _assert_clean("\n".join(r.getMessage() for r in caplog.records), "the logs")
