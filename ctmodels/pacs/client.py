"""DICOMweb in the app's terms: find a study by the identifier a viewer hands over (Study Instance UID or
Accession Number), retrieve its files, store results. Every failure is a ``PacsError`` with a plain message;
no identifier of the study is logged (only counts and the server's status)."""

from __future__ import annotations

import io
import logging
import os
import re
from dataclasses import dataclass

import pydicom
import requests
from dicomweb_client.api import DICOMwebClient

from ..imaging.dicom.uids import is_valid_uid

log = logging.getLogger(__name__)

#: Where the app looks for a PACS when the page's field is empty.
URL_ENV = "CTSS_DICOMWEB_URL"
TIMEOUT_S = 60.0
#: dicomweb-client retries every failed request, a refused connection too, 5 times with back-off (2+4+8+16 s):
#: a wrong address took 30 s to say so. Three tries 0.5 s and 1 s apart still ride out a busy PACS's 503.
_RETRY = {"max_attempts": 3, "wait_exponential_multiplier": 250}
_STUDY_UID, _ACCESSION = "0020000D", "00080050"


class PacsError(Exception):
    """The PACS could not be reached, did not have the study, or refused a request (message for the page)."""


def dicomweb_url(given: str | None = None) -> str | None:
    """The DICOMweb base URL: the page's field, else ``CTSS_DICOMWEB_URL``, else None (no PACS)."""
    url = (given or os.environ.get(URL_ENV) or "").strip().rstrip("/")
    return url or None


@dataclass(frozen=True)
class StudyFiles:
    """A retrieved study: its files as bytes (what the readers take), and how many series it has."""

    members: list[tuple[str, bytes]]
    series: int


class PacsClient:
    """One DICOMweb server (``url`` like ``http://127.0.0.1:8042/dicom-web``)."""

    def __init__(self, url: str, timeout: float = TIMEOUT_S) -> None:
        if not re.match(r"^https?://", url or ""):
            raise PacsError("The PACS address must be a DICOMweb URL starting with http:// or https://.")
        self.url = url.rstrip("/")
        try:
            self._client = DICOMwebClient(url=self.url, timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - the client parses the URL: a malformed one is the user's typo
            raise PacsError("The PACS address is not a valid DICOMweb URL.") from exc
        self._client.set_http_retry_params(retry=True, **_RETRY)

    def find_study(self, identifier: str) -> str:
        """The Study Instance UID for a Study Instance UID or an Accession Number."""
        ident = (identifier or "").strip()
        if not ident:
            raise PacsError("Enter the study's Study Instance UID or Accession Number.")
        key = "StudyInstanceUID" if is_valid_uid(ident) else "AccessionNumber"
        found = self._call(lambda: self._client.search_for_studies(search_filters={key: ident}), "search for the study")
        uids = {(s.get(_STUDY_UID, {}).get("Value") or [""])[0] for s in found} - {""}
        if not uids:
            raise PacsError(f"The PACS has no study with that {'Study Instance UID' if key == 'StudyInstanceUID' else 'Accession Number'}.")
        if len(uids) > 1:
            raise PacsError(f"That Accession Number matches {len(uids)} studies; open it by its Study Instance UID.")
        return uids.pop()

    def retrieve_study(self, study_uid: str) -> StudyFiles:
        """Every instance of the study (WADO-RS), as DICOM file bytes."""
        datasets = self._call(lambda: self._client.retrieve_study(study_uid), "retrieve the study")
        members = []
        for k, ds in enumerate(datasets):
            buf = io.BytesIO()
            pydicom.dcmwrite(buf, ds, enforce_file_format=True)
            members.append((f"pacs/{k:05d}.dcm", buf.getvalue()))
        series = len({str(ds.get("SeriesInstanceUID", "")) for ds in datasets})
        log.info("Retrieved %d instances in %d series from the PACS", len(members), series)
        if not members:
            raise PacsError("The PACS returned no images for that study.")
        return StudyFiles(members, series)

    def store(self, files: list[bytes]) -> int:
        """Store DICOM files (STOW-RS); how many the PACS accepted."""
        datasets = [pydicom.dcmread(io.BytesIO(f)) for f in files]
        result = self._call(lambda: self._client.store_instances(datasets), "store the results")
        failed = len(result.get("FailedSOPSequence") or [])
        stored = len(result.get("ReferencedSOPSequence") or [])
        if failed or stored < len(files):
            raise PacsError(f"The PACS refused {len(files) - stored} of the {len(files)} result files.")
        log.info("Stored %d result files on the PACS", stored)
        return stored

    def _call(self, request, what: str):
        try:
            return request()
        except requests.exceptions.ConnectionError as exc:
            raise PacsError(f"Could not reach the PACS at {self.url} to {what}: is it running, and is the "
                            "address right?") from exc
        except requests.exceptions.Timeout as exc:
            raise PacsError(f"The PACS did not answer in time to {what}.") from exc
        except requests.exceptions.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else "an error"
            if status in (401, 403):
                raise PacsError(f"The PACS refused to {what} (HTTP {status}): the app needs access to it.") from exc
            raise PacsError(f"The PACS answered HTTP {status} when asked to {what}.") from exc
        except Exception as exc:  # noqa: BLE001 - a malformed answer must not take the page down
            log.warning("DICOMweb %s failed (%s)", what, type(exc).__name__)
            raise PacsError(f"The PACS's answer could not be read when asked to {what}.") from exc
