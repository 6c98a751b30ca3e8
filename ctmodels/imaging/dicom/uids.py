"""Valid DICOM UIDs for exports that broke them: some anonymisers write a UUID ("896911bf-1143-…") where a UID
belongs, or leave SOPInstanceUID empty. A PACS refuses such files and a DICOM SEG cannot reference them, so the
app files them under repaired UIDs: a UUID becomes its standard UID form ("2.25." + the UUID as an integer,
PS3.5 B.2), anything else invalid or empty a UID derived from stable parts of the file; the same file gives
the same UIDs every time, so a series loaded into a PACS and the results written for it agree."""

from __future__ import annotations

import hashlib
import re
import uuid

from pydicom.dataset import Dataset

_VALID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
UID_KEYWORDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID")


def is_valid_uid(value: object) -> bool:
    text = str(value or "")
    return 0 < len(text) <= 64 and bool(_VALID.match(text))


def repaired_uid(value: object, *seed: object) -> str:
    """``value`` when it is a valid UID; its UID form when it is a UUID; else a UID derived from ``seed``."""
    text = str(value or "").strip()
    if is_valid_uid(text):
        return text
    try:
        return f"2.25.{uuid.UUID(text).int}"
    except ValueError:
        digest = hashlib.sha256("\x00".join(map(str, (text, *seed))).encode()).digest()[:16]
        return f"2.25.{int.from_bytes(digest, 'big')}"


def repair_uids(ds: Dataset) -> Dataset:
    """``ds`` with valid study, series, instance and frame-of-reference UIDs (in place; the file meta follows).
    An empty SOPInstanceUID is derived from the series and the slice's position and number."""
    for keyword in UID_KEYWORDS:
        if keyword in ds or keyword != "FrameOfReferenceUID":
            seed = (ds.get("SeriesInstanceUID", ""), ds.get("ImagePositionPatient", ""),
                    ds.get("InstanceNumber", "")) if keyword == "SOPInstanceUID" else (keyword,)
            setattr(ds, keyword, repaired_uid(ds.get(keyword, ""), *seed))
    if getattr(ds, "file_meta", None) is not None:
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds
