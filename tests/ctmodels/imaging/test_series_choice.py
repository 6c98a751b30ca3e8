"""A study, not a series: the reader opens the series a radiologist reads the lungs on, says why, offers the others
by technical fields only, and reads any of them on request."""

from __future__ import annotations

import numpy as np
import pytest
from pydicom.uid import generate_uid

from ctmodels.imaging import MixedSeriesError, read_any
from tests.builders import ct_dicom, zip_bytes

NEEDLES = ("DOE", "JANE", "PAT00042", "20240131")


def _series(n: int, thickness: float, kernel: str, description: str, value: int, **attrs: object) -> dict[str, bytes]:
    uid = generate_uid()
    return {f"{description}/{k:03d}.dcm": ct_dicom(np.full((32, 32), value, np.uint16), series_uid=uid,
                                                   z=float(k) * thickness, SliceThickness=thickness,
                                                   ConvolutionKernel=kernel, SeriesDescription=description,
                                                   PatientID="PAT00042", ImageType=["ORIGINAL", "PRIMARY", "AXIAL"],
                                                   **attrs)
            for k in range(n)}


def study_zip() -> bytes:
    """A localizer, a dose report (no image), a 5 mm soft-tissue series and a 1 mm lung series."""
    files = {}
    files.update(_series(6, 5.0, "B30f", "Abdomen 5.0 B30f 20240131", 1100))
    files.update(_series(12, 1.0, "B70f", "Lung 1.0 B70f DOE", 900))
    files["scout.dcm"] = ct_dicom(np.full((32, 32), 1000, np.uint16), series_uid=generate_uid(),
                                  ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"], iop=(1, 0, 0, 0, 0, -1))
    files["dose.dcm"] = ct_dicom(None, modality="SR", sop_class="1.2.840.10008.5.1.4.1.1.88.67")
    return zip_bytes(files)


def test_a_study_opens_on_the_thin_lung_series_and_the_user_can_switch() -> None:
    data = study_zip()
    vol = read_any(data, name="study.zip")
    meta = vol.meta
    assert vol.n_slices == 12 and float(vol.array.mean()) == pytest.approx(900 - 1024)
    assert meta["series_count"] == 2 and len(meta["series_choices"]) == 2
    chosen = next(o for o in meta["series_choices"] if o["key"] == meta["series_chosen"])
    assert chosen["kernel"] == "B70f" and chosen["thickness_mm"] == 1.0 and chosen["lung_kernel"]
    assert "lung/sharp kernel" in meta["series_why"] and "1 mm (the thinnest)" in meta["series_why"]
    other = next(o for o in meta["series_choices"] if o["key"] != meta["series_chosen"])
    switched = read_any(data, name="study.zip", series=other["key"])
    assert switched.n_slices == 6 and float(switched.array.mean()) == pytest.approx(1100 - 1024)
    assert switched.meta["series_why"] == "chosen by you"
    text = repr(meta) + repr(switched.meta)
    assert not [n for n in NEEDLES if n.lower() in text.lower()], text  # description cleaned of name and date


def test_two_patients_under_one_series_uid_become_two_choices() -> None:
    """An anonymiser's constant SeriesInstanceUID must not merge two patients' slices into one volume."""
    files = {f"{k}.dcm": ct_dicom(series_uid="1.2.3", z=float(k), PatientID=f"PAT{k % 2}") for k in range(6)}
    vol = read_any(zip_bytes(files), name="x.zip")
    assert vol.n_slices == 3 and vol.meta["series_count"] == 2
    assert "PAT" not in repr(vol.meta)


def test_a_series_key_not_in_the_upload_is_refused() -> None:
    with pytest.raises(MixedSeriesError):
        read_any(study_zip(), name="study.zip", series="s9")


def test_one_series_offers_no_choice() -> None:
    vol = read_any(zip_bytes(_series(4, 1.0, "B70f", "Lung", 900)), name="x.zip")
    assert vol.meta["series_count"] == 1 and "series_choices" not in vol.meta
