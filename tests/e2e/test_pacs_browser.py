"""The PACS path in a real browser against a real Orthanc: open P002 by its Study Instance UID on Compare, the
verdicts render, "Send to PACS" stores the SR and the SEG, and both, read back over DICOMweb and parsed with
highdicom, hold what the page shows (the SEG's frames equal the lung field and lesion masks; the SR's numbers
equal the page's CSV)."""

from __future__ import annotations

import csv
import io
import re

import highdicom as hd
import numpy as np
import pydicom
import pytest

from ctmodels.imaging import read_any
from ctmodels.imaging.lung import involvement, segment_lungs
from ctmodels.imaging.reader import source_images
from ctmodels.pacs import PacsClient
from ctmodels.pacs.loading import load_series
from tests.ctmodels.test_dicom_out import seg_masks_read_back, sr_values_read_back
from tests.e2e.test_browser import _goto, _shot, _wait_idle

pytestmark = pytest.mark.e2e
P002 = ("covid-ct-md", "Sample data", "COVID-19 subjects", "P002")


def test_open_p002_from_the_pacs_and_send_the_results_back(app_url_both_sets, browser_page, real_data, orthanc):
    client = PacsClient(orthanc.dicomweb)
    folder = real_data.joinpath(*P002)
    study_uid = load_series(client, [folder])["P002"]

    page = browser_page
    _goto(page, f"{app_url_both_sets}/compare", "Compare models")
    page.get_by_role("radio", name="PACS").click()
    _wait_idle(page)
    page.get_by_role("textbox", name="DICOMweb URL").fill(orthanc.dicomweb)
    page.get_by_role("textbox", name="Study Instance UID or Accession Number").fill(study_uid)
    page.get_by_role("textbox", name="Study Instance UID or Accession Number").press("Enter")
    _wait_idle(page)
    page.get_by_role("button", name="Open study").click()
    page.get_by_text(re.compile(r"All \d verdicts, CAMs and lesion maps computed")).wait_for(timeout=240_000)
    _wait_idle(page, 120)
    with page.expect_download() as download:
        page.get_by_role("button", name="Download numbers (CSV)").click()
    rows = {r["model"]: r for r in csv.DictReader(io.StringIO(download.value.path().read_text()))}
    assert len(rows) == 4
    page.get_by_role("button", name="Send to PACS (SR + SEG)").click()
    page.get_by_text("Stored 2 result files under the study on the PACS.").wait_for(timeout=120_000)
    _shot(page, "compare_pacs")

    study = client.retrieve_study(study_uid)
    by_modality: dict[str, list[pydicom.Dataset]] = {}
    for _, raw in study.members:
        ds = pydicom.dcmread(io.BytesIO(raw))
        by_modality.setdefault(ds.Modality, []).append(ds)
    (sr_ds,), (seg_ds,) = by_modality["SR"], by_modality["SEG"]

    sr = sr_values_read_back(hd.sr.Comprehensive3DSR.from_dataset(sr_ds))
    for model, row in rows.items():
        assert sr[model]["p_severe"] == pytest.approx(float(row["patient P(severe)"]), abs=1e-9)
        assert sr[model]["verdict"] == row["patient verdict"]

    # the masks the page computed for the series it read from the PACS, slice for slice in its order
    ct = [(n, d) for n, d in study.members if pydicom.dcmread(io.BytesIO(d), stop_before_pixels=True).Modality == "CT"]
    vol = read_any(folder)
    lung = segment_lungs(vol)
    lesion = involvement(vol, lung)
    expected = {"Lung field": lung,
                "Lesion (classical HU band)": np.stack([lesion.lesion_slice(i) for i in range(vol.n_slices)])}
    back = seg_masks_read_back(hd.seg.Segmentation.from_dataset(seg_ds), source_images(ct))
    learned = {f"Lesion, learned by {model}" for model in rows}  # every real-CT model has a lesion head
    assert set(back) == set(expected) | learned
    for label, mask in expected.items():
        assert np.array_equal(back[label], mask), label
    for label in learned:  # equal to the page's maps: tests/ctmodels/test_dicom_out.py; here, inside the lung
        assert not (back[label] & ~lung).any(), label
    assert sr["classical HU involvement"]["classical_involvement"] == pytest.approx(round(lesion.percent, 2))
