"""A PACS, optional: open a study over DICOMweb (QIDO-RS to find it, WADO-RS to retrieve it) and send results
back (STOW-RS), with ``dicomweb-client``; and a local Orthanc for development and tests (``orthanc``). Upload
stays the default: nothing here runs unless a DICOMweb URL is given."""

from __future__ import annotations

from .client import PacsClient, PacsError, StudyFiles, dicomweb_url

__all__ = ["PacsClient", "PacsError", "StudyFiles", "dicomweb_url"]
