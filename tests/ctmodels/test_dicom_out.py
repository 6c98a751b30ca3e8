"""Results as DICOM: the SR and SEG of an assessed DICOM upload open in pydicom and highdicom, validate, carry the
source study's identity (to be filed under it), and hold exactly what the page shows: the SEG's frames equal the
masks, the SR's numbers equal the CSV's."""

from __future__ import annotations

import io

import highdicom as hd
import numpy as np
import pydicom
import pytest

from ctmodels.assessment import assess
from ctmodels.dicom_out import write_seg, write_sr
from ctmodels.dicom_out.seg import LESION_LABEL, LUNG_LABEL, learned_label, seg_masks
from ctmodels.dicom_out.sr import CLASSICAL_ID, LEARNED_INVOLVEMENT, P_SEVERE, sr_values
from ctmodels.imaging import NotAnImageError, read_any
from ctmodels.imaging.reader import source_images
from ctmodels.inference import load_model
from tests.builders import zip_folder


@pytest.fixture(scope="module")
def assessed(small_phantoms, tiny_models):
    data = zip_folder(small_phantoms / "dicom" / "PH0002", "*.dcm")
    vol = read_any(data, name="PH0002.zip")
    models = [load_model(tiny_models / k, k) for k in ("ghost", "pruned", "kd", "baseline")]
    return data, assess(vol, models)


@pytest.fixture(scope="module")
def assessed_with_lesion_heads(small_phantoms, tiny_real_models):
    """The same series assessed by the tiny real-CT set, whose models have lesion heads."""
    data = zip_folder(small_phantoms / "dicom" / "PH0002", "*.dcm")
    models = [load_model(tiny_real_models / k, k) for k in ("ghost", "kd")]
    return data, assess(read_any(data, name="PH0002.zip"), models)


def seg_masks_read_back(seg: hd.seg.Segmentation, sources) -> dict[str, np.ndarray]:
    """Each segment's mask, slice for slice in the sources' order, as a PACS client would rebuild it."""
    uids = [s.SOPInstanceUID for s in sources]
    out = {}
    for number in seg.segment_numbers:
        label = seg.get_segment_description(number).segment_label
        out[label] = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=uids, segment_numbers=[number], ignore_spatial_locations=True,
            assert_missing_frames_are_empty=True)[..., 0].astype(bool)
    return out


def sr_values_read_back(sr: hd.sr.Comprehensive3DSR) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    for group in sr.content.get_image_measurement_groups():
        name = group.tracking_identifier
        values: dict[str, object] = {}
        for m in group.get_measurements():
            key = {P_SEVERE.value: "p_severe", LEARNED_INVOLVEMENT.value: "learned_involvement"}.get(
                m.name.value, "classical_involvement")
            values[key] = m.value
        for q in group.get_qualitative_evaluations():
            values["verdict"] = q.value.meaning.lower()
        out[name] = values
    return out


def test_seg_frames_equal_the_masks_and_reference_the_series(assessed):
    data, a = assessed
    sources = source_images(data, "PH0002.zip")
    raw = write_seg(a, sources)
    ds = pydicom.dcmread(io.BytesIO(raw))
    seg = hd.seg.Segmentation.from_dataset(ds)
    assert ds.Modality == "SEG" and ds.StudyInstanceUID == sources[0].StudyInstanceUID
    assert ds.PatientID == sources[0].PatientID  # filed under the study: identity copied in the writer
    assert {str(r.SeriesInstanceUID) for r in ds.ReferencedSeriesSequence} == {sources[0].SeriesInstanceUID}
    back = seg_masks_read_back(seg, sources)
    masks = seg_masks(a)
    assert set(back) == {LUNG_LABEL, LESION_LABEL} == set(masks)  # the phantom set has no lesion heads
    for label, mask in masks.items():
        assert mask.any() and np.array_equal(back[label], mask), label


def test_seg_holds_each_lesion_head_models_learned_lesion(assessed_with_lesion_heads):
    data, a = assessed_with_lesion_heads
    sources = source_images(data, "PH0002.zip")
    seg = hd.seg.Segmentation.from_dataset(pydicom.dcmread(io.BytesIO(write_seg(a, sources))))
    back, masks = seg_masks_read_back(seg, sources), seg_masks(a)
    learned = [learned_label(m.name) for m in a.models]
    assert set(back) == set(masks) == {LUNG_LABEL, LESION_LABEL, *learned}
    for label in learned:
        m = next(m for m in a.models if learned_label(m.name) == label)
        assert np.array_equal(back[label], masks[label]) and not (masks[label] & ~masks[LUNG_LABEL]).any()
        outside = np.setdiff1d(np.arange(a.n_slices), m.prediction.slices)
        assert not masks[label][outside].any()  # only the slices the model scores
        k = m.prediction.slices[len(m.prediction.slices) // 2]  # and there it is the page's map at 0.5
        assert np.array_equal(masks[label][k], (a.at(k).results[a.models.index(m)].lesion >= 0.5) & masks[LUNG_LABEL][k])


def test_sr_values_equal_the_page_csv(assessed):
    data, a = assessed
    sources = source_images(data, "PH0002.zip")
    sr = hd.sr.Comprehensive3DSR.from_dataset(pydicom.dcmread(io.BytesIO(write_sr(a, sources))))
    back = sr_values_read_back(sr)
    written = sr_values(a)
    rows = {r["model"]: r for r in a.table(a.at(a.largest_lung_slice()))}
    assert set(back) == set(rows) | {CLASSICAL_ID}
    for name, row in rows.items():
        assert back[name]["p_severe"] == pytest.approx(row["patient P(severe)"], abs=1e-9)
        assert back[name]["verdict"] == row["patient verdict"]
        assert written[name]["kind"] == row["kind"]
    assert back[CLASSICAL_ID]["classical_involvement"] == pytest.approx(round(a.classical.percent, 2))
    text = "\n".join(str(e.value) for e in sr.iterall() if e.VR in ("UT", "LO", "ST"))
    assert "Research software, not for diagnostic use." in text and "ghost (ghost)" in text
    assert all(m.model.ckpt_id in text for m in a.models)  # the checkpoint each verdict came from


def test_results_need_a_dicom_upload(small_phantoms):
    nii = next((small_phantoms / "kaggle" / "ct_scans").glob("*.nii")).read_bytes()
    with pytest.raises(NotAnImageError):
        source_images(nii, "scan.nii")
