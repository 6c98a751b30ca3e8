"""Sample studies into a PACS (``make pacs``, the tests): DICOM series folders, each file's UIDs repaired the way
the app repairs them (``imaging.dicom.uids``: the COVID-CT-MD export wrote UUIDs and empty instance UIDs)."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pydicom

from ..imaging.dicom.uids import repair_uids
from .client import PacsClient

log = logging.getLogger(__name__)


def series_files(folder: Path) -> list[bytes]:
    """The DICOM files of one series folder, UIDs repaired, as bytes."""
    out = []
    for f in sorted(p for p in Path(folder).iterdir() if p.is_file()):
        try:
            ds = pydicom.dcmread(f)
        except Exception:  # noqa: BLE001 - not DICOM (a label file): not for the PACS
            continue
        buf = io.BytesIO()
        pydicom.dcmwrite(buf, repair_uids(ds), enforce_file_format=True)
        out.append(buf.getvalue())
    return out


def load_series(pacs: PacsClient, folders: list[Path]) -> dict[str, str]:
    """Store each series folder; folder name -> the Study Instance UID it is filed under."""
    studies = {}
    for folder in folders:
        files = series_files(folder)
        if not files:
            continue
        pacs.store(files)
        studies[folder.name] = str(pydicom.dcmread(io.BytesIO(files[0]), stop_before_pixels=True).StudyInstanceUID)
        log.info("Loaded %s: %d instances", folder.name, len(files))
    return studies
