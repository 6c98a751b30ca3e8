"""Exports that broke their UIDs (COVID-CT-MD: UUIDs, empty SOPInstanceUID) get valid, stable ones."""

from __future__ import annotations

import uuid

from ctmodels.imaging.dicom.uids import is_valid_uid, repair_uids, repaired_uid
from tests.builders import ct_dataset


def test_a_uuid_becomes_its_standard_uid_form_and_valid_uids_stay() -> None:
    u = "896911bf-1143-4c8d-8f04-f3cd1a7f6204"
    assert repaired_uid(u) == f"2.25.{uuid.UUID(u).int}" and is_valid_uid(repaired_uid(u))
    assert repaired_uid("1.2.840.113619.2.55") == "1.2.840.113619.2.55"
    assert not is_valid_uid("1.02.3") and not is_valid_uid("") and not is_valid_uid("1." + "2" * 70)


def test_an_empty_instance_uid_is_derived_from_the_slice_the_same_way_every_time() -> None:
    def slice_at(z: float):
        ds = ct_dataset(z=z, series_uid="1.2.3", instance=int(z))
        ds.SOPInstanceUID = ""
        return repair_uids(ds)

    a, b, again = slice_at(1.0), slice_at(2.0), slice_at(1.0)
    assert is_valid_uid(a.SOPInstanceUID) and a.SOPInstanceUID != b.SOPInstanceUID
    assert a.SOPInstanceUID == again.SOPInstanceUID == a.file_meta.MediaStorageSOPInstanceUID
    assert a.SeriesInstanceUID == "1.2.3"
