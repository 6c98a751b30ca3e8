"""Open a study from a PACS (the third scan source beside sample cases and uploads) and send results back.

The form a viewer hands to an AI tool: the server's DICOMweb URL (prefilled from ``CTSS_DICOMWEB_URL``) and the
study's Study Instance UID or Accession Number. The retrieved files stay in this browser session, like an upload.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

import streamlit as st

from ctmodels.imaging import Volume
from ctmodels.pacs import PacsClient, PacsError, dicomweb_url

from . import loaders
from .widgets import series_choice


@dataclass(frozen=True)
class PacsStudy:
    token: str  # which retrieval (opaque; never the study's UID)
    members: list[tuple[str, bytes]]
    url: str


def pacs_study(key: str) -> tuple[Volume, PacsStudy] | None:
    """The form; after "Open study", the retrieved study read (series choice included). None until then."""
    c1, c2 = st.columns([2, 3])
    url = c1.text_input("DICOMweb URL", value=dicomweb_url() or "", key=f"{key}_pacs_url",
                        placeholder="http://127.0.0.1:8042/dicom-web",
                        help="The PACS's DICOMweb endpoint (or set CTSS_DICOMWEB_URL). It must sit behind the same "
                             "authentication as this app.")
    ident = c2.text_input("Study Instance UID or Accession Number", key=f"{key}_pacs_study",
                          help="What your viewer hands to an AI tool for the open study.")
    if st.button("Open study", key=f"{key}_pacs_open", icon=":material/cloud_download:"):
        try:
            with st.spinner("Retrieving the study from the PACS…"):
                client = PacsClient(dicomweb_url(url) or "")
                files = client.retrieve_study(client.find_study(ident))
        except PacsError as exc:
            st.error(str(exc), icon=":material/cloud_off:")
            return None
        st.session_state[f"{key}_pacs"] = PacsStudy(uuid.uuid4().hex, files.members, client.url)
        st.session_state[f"{key}_pacs_said"] = (f"Retrieved {len(files.members)} files in {files.series} series from "
                                                 "the PACS; they stay in this browser session only.")
    study: PacsStudy | None = st.session_state.get(f"{key}_pacs")
    if study is None:
        st.caption("Open a study by its Study Instance UID or Accession Number. Series are listed by technical "
                   "fields only; nothing is saved.")
        return None
    st.caption(st.session_state.get(f"{key}_pacs_said", ""))
    vol = series_choice(lambda series: loaders.read_pacs_study(study.token, study.members, series),
                        f"{key}_series_{study.token}")
    return vol, study


def send_to_pacs(url: str, files: Callable[[], list[bytes]], key: str) -> None:
    """Store result files (DICOM SR, SEG: made by ``files()`` on click) on the PACS the study came from."""
    if st.button("Send to PACS (SR + SEG)", key=key, icon=":material/cloud_upload:",
                 help="Stores the structured report and the segmentation under the study (STOW-RS)."):
        try:
            with st.spinner("Sending the results to the PACS…"):
                stored = PacsClient(url).store(files())
        except PacsError as exc:
            st.error(str(exc), icon=":material/cloud_off:")
            return
        st.success(f"Stored {stored} result files under the study on the PACS.", icon=":material/cloud_done:")
