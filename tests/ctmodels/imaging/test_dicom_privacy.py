"""The DICOM privacy allow-list on its own: only technical attributes, cleaned, ever reach ``meta``."""

from __future__ import annotations

import numpy as np
from pydicom.multival import MultiValue
from pydicom.valuerep import DSfloat

from ctmodels.imaging.dicom_privacy import DICOM_META_KEYS, DICOM_META_TAGS, safe_meta, safe_text, safe_value

IDENTIFYING_KEYWORDS = ("PatientName", "PatientID", "PatientBirthDate", "StudyDate", "InstitutionName",
                        "ReferringPhysicianName", "StudyInstanceUID", "SeriesDescription", "AccessionNumber")


def test_the_allow_list_names_no_identifying_attribute():
    assert not set(IDENTIFYING_KEYWORDS) & DICOM_META_KEYS
    assert set(DICOM_META_TAGS) <= DICOM_META_KEYS


def test_safe_meta_asks_only_for_allow_listed_keywords():
    asked = []

    def read(keyword):
        asked.append(keyword)
        if keyword == "PixelSpacing":
            return MultiValue(DSfloat, ["0.7", "0.7"])
        if keyword == "Manufacturer":
            return "ACME\x00 Scanners <script>"
        raise AttributeError(keyword)  # absent

    meta = safe_meta(read, "Explicit VR Little Endian")
    assert asked == list(DICOM_META_TAGS)
    assert meta == {"PixelSpacing": (0.7, 0.7), "Manufacturer": "ACME Scanners script",
                    "TransferSyntax": "Explicit VR Little Endian"}


def test_values_are_plain_and_short():
    assert safe_value(np.int16(3)) == 3 and safe_value(DSfloat("1.5")) == 1.5
    assert safe_value(True) == "True"  # a flag stays a short code, never a number
    assert safe_value(["", None]) is None and safe_value("   ") is None
    assert len(safe_value("A" * 500)) == 64
    assert safe_text("line1\nline2\t;DROP") == "line1line2DROP"
