"""The PACS path against a real Orthanc: a series loaded (UIDs repaired as the app repairs them) is found by its
Study Instance UID and by its Accession Number, retrieved and read like the folder itself; results stored over
STOW-RS come back; an unreachable or empty answer is a plain ``PacsError``."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest

from ctmodels.imaging import read_any
from ctmodels.imaging.reader import read_study_files
from ctmodels.pacs import PacsClient, PacsError
from ctmodels.pacs.loading import load_series, series_files
from ctmodels.pacs.orthanc import free_port


ACCESSION = "ACC-PH0003"


@pytest.fixture(scope="module")
def loaded(orthanc, small_phantoms, tmp_path_factory):
    """Phantom PH0003 as a PACS holds it, with the Accession Number a viewer would hand over."""
    folder = tmp_path_factory.mktemp("study") / "PH0003"
    folder.mkdir()
    for f in sorted((small_phantoms / "dicom" / "PH0003").glob("*.dcm")):
        ds = pydicom.dcmread(f)
        ds.AccessionNumber = ACCESSION
        ds.save_as(folder / f.name)
    client = PacsClient(orthanc.dicomweb)
    return client, folder, load_series(client, [folder])[folder.name]


def test_a_study_is_found_retrieved_and_read_like_its_folder(loaded):
    client, folder, study_uid = loaded
    assert client.find_study(study_uid) == study_uid
    assert client.find_study(ACCESSION) == study_uid
    files = client.retrieve_study(study_uid)
    assert files.series == 1 and len(files.members) == len(series_files(folder))
    from_pacs, from_folder = read_study_files(files.members), read_any(folder)
    assert from_pacs.shape == from_folder.shape and np.array_equal(from_pacs.array, from_folder.array)


def test_results_are_stored_and_come_back(loaded):
    client, folder, study_uid = loaded
    sr = series_files(folder)[0]  # any valid instance of the study stands in for a result file here
    ds = pydicom.dcmread(io.BytesIO(sr))
    ds.SeriesInstanceUID, ds.SOPInstanceUID = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    assert client.store([buf.getvalue()]) == 1
    assert client.retrieve_study(study_uid).series == 2


def test_plain_errors_for_a_wrong_address_an_unknown_study_and_no_identifier(loaded):
    client, _, _ = loaded
    with pytest.raises(PacsError, match="no study"):
        client.find_study("1.2.3.4.5.6.7.8.9")
    with pytest.raises(PacsError, match="Study Instance UID or Accession Number"):
        client.find_study("  ")
    with pytest.raises(PacsError, match="Could not reach"):
        PacsClient(f"http://127.0.0.1:{free_port()}/dicom-web", timeout=5).find_study("1.2.3")
    with pytest.raises(PacsError, match="http"):
        PacsClient("ftp://example/dicom-web")
