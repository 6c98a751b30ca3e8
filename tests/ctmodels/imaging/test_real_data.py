"""Readers on the real sample data (../shared/data/real): COVID-CT-MD JPEG-Lossless series and Inf-Net JPEGs.

Skipped when the shared folder is absent. Decoding all 287 JPEG-Lossless slices takes a few seconds,
so each series is read once per module.
"""

from __future__ import annotations

import csv
import io
import random
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage as ndi

from ctmodels.imaging import Volume, read_any
from ctmodels.imaging.dicom_privacy import DICOM_META_KEYS
from tests.builders import zip_bytes

SERIES = {
    "P002": ("Sample data/COVID-19 subjects/P002", 133, 0.603515625),
    "normal001": ("Sample data/Normal subjects/normal001", 154, 0.634765625),
}


@pytest.fixture(scope="module")
def ctmd(real_data: Path) -> Path:
    return real_data / "covid-ct-md"


@pytest.fixture(scope="module")
def labels(ctmd: Path) -> dict[str, list[dict[str, str]]]:
    out: dict[str, list[dict[str, str]]] = {}
    with open(ctmd / "slice_labels.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            out.setdefault(row["subject"], []).append(row)
    for rows in out.values():
        rows.sort(key=lambda r: int(r["slice_index"]))
    return out


@pytest.fixture(scope="module")
def volumes(ctmd: Path) -> dict[str, Volume]:
    return {subject: read_any(ctmd / folder) for subject, (folder, _, _) in SERIES.items()}


@pytest.mark.parametrize("subject", list(SERIES))
def test_series_shape_spacing_meta(volumes: dict[str, Volume], subject: str) -> None:
    _, n, pixel = SERIES[subject]
    v = volumes[subject]
    assert v.shape == (n, 512, 512)
    assert v.is_hu and v.source_format == "dicom-series"
    assert v.spacing == pytest.approx((2.0, pixel, pixel))
    assert set(v.meta) <= DICOM_META_KEYS
    assert v.meta["Modality"] == "CT" and v.meta["series_count"] == 1
    assert v.meta["RescaleIntercept"] == -1024.0
    assert "JPEG Lossless" in v.meta["TransferSyntax"]
    assert subject not in repr(v.meta)  # PatientID is the subject code in these files


@pytest.mark.parametrize("subject", list(SERIES))
def test_slice_order_matches_slice_labels_csv(
    volumes: dict[str, Volume], labels: dict[str, list[dict[str, str]]], ctmd: Path, subject: str
) -> None:
    """Our slice j is the csv's slice_index j (descending SliceLocation, head first)."""
    v = volumes[subject]
    rows = labels[subject]
    csv_z = [float(r["slice_location"]) for r in rows]
    assert csv_z == sorted(csv_z, reverse=True)
    np.testing.assert_allclose(v.slice_positions, csv_z, atol=1e-3)
    np.testing.assert_allclose(v.slice_positions, [float(r["image_position_z"]) for r in rows], atol=1e-3)
    # The file <-> index mapping itself: single files read alone equal the volume's slice.
    for j in (0, len(rows) // 2, len(rows) - 1):
        single = read_any(ctmd / rows[j]["file"])
        assert single.source_format == "dicom" and single.shape == (1, 512, 512)
        np.testing.assert_array_equal(single.array[0], v.array[j])


def _body_hu(slice_hu: np.ndarray) -> np.ndarray:
    """Largest connected non-air region, holes filled: the patient without table or outside air."""
    body = ndi.binary_opening(slice_hu > -500, iterations=2)
    lab, k = ndi.label(body)
    if k:
        sizes = ndi.sum(body, lab, range(1, k + 1))
        body = lab == 1 + int(np.argmax(sizes))
    return ndi.binary_fill_holes(body)


@pytest.mark.parametrize("subject", list(SERIES))
def test_hu_of_lung_fat_and_soft_tissue_plausible(volumes: dict[str, Volume], subject: str) -> None:
    a = volumes[subject].array
    n = a.shape[0]
    lung, tissue = [], []
    for s in a[n // 3 : 2 * n // 3 : 4]:  # mid-chest slices
        body = _body_hu(s)
        lung.append(s[body & (s >= -1000) & (s <= -500)])
        tissue.append(s[body & (s >= -200) & (s <= 200)])
    assert -900 <= float(np.median(np.concatenate(lung))) <= -700
    values = np.concatenate(tissue)
    hist, edges = np.histogram(values, bins=np.arange(-200, 205, 5))
    centres = (edges[:-1] + edges[1:]) / 2
    smooth = np.convolve(hist, np.ones(3) / 3, "same")
    soft_peak = centres[centres >= -30][np.argmax(smooth[centres >= -30])]
    fat_peak = centres[centres < -30][np.argmax(smooth[centres < -30])]
    assert 0 <= soft_peak <= 80  # muscle, blood, organs
    assert -130 <= fat_peak <= -60  # subcutaneous and mediastinal fat
    assert a.min() >= -1024.0


def test_zip_of_a_few_slices_in_memory(
    volumes: dict[str, Volume], labels: dict[str, list[dict[str, str]]], ctmd: Path
) -> None:
    rows = labels["P002"][40:45]
    members = [
        (f"upload/{i}_{Path(r['file']).name}", (ctmd / r["file"]).read_bytes()) for i, r in enumerate(rows)
    ]
    random.Random(3).shuffle(members)
    upload = io.BytesIO(zip_bytes(dict(members)))
    upload.name = "P002_part.zip"
    v = read_any(upload)
    assert v.shape == (5, 512, 512)
    np.testing.assert_array_equal(v.array, volumes["P002"].array[40:45])
    assert v.spacing == pytest.approx((2.0, 0.603515625, 0.603515625))


def test_every_infnet_jpeg(real_data: Path) -> None:
    with open(real_data / "infnet-semiseg" / "derived_severity.csv", newline="") as fh:
        sizes = {r["file"]: (int(r["height"]), int(r["width"])) for r in csv.DictReader(fh)}
    files = sorted((real_data / "infnet-semiseg" / "Imgs").glob("*.jpg"))
    assert len(files) == 50
    for path in files:
        v = read_any(path)
        assert v.source_format == "jpeg" and not v.is_hu and v.spacing is None
        assert v.shape == (1, *sizes[f"Imgs/{path.name}"])
        assert 0.0 <= float(v.array.min()) and float(v.array.max()) <= 255.0
