"""Reusable widgets: window picker, read-error display, synthetic badge, metadata panel, series choice."""

from __future__ import annotations

from typing import Any, Callable, Mapping

import pandas as pd
import streamlit as st

from ctmodels.imaging import ImageReadError, Volume
from ctmodels.imaging.dicom.choice import SeriesOption
from ctmodels.imaging.window import DEFAULT_WINDOW, PRESETS, Window, custom

from . import loaders


def window_picker(key: str, is_hu: bool) -> Window | None:
    """Lung / Mediastinum / Bone / Custom for HU data; None (shown as stored) for 8-bit images."""
    if not is_hu:
        st.caption("8-bit image: shown as stored (display intensities, not HU); window presets do not apply.")
        return None
    names = list(PRESETS) + ["Custom"]
    choice = st.segmented_control("Window", names, default=DEFAULT_WINDOW.name, key=f"{key}_window") or DEFAULT_WINDOW.name
    if choice == "Custom":
        c1, c2 = st.columns(2)
        level = c1.number_input("Level (HU)", -1200, 3000, -600, step=10, key=f"{key}_level")
        width = c2.number_input("Width (HU)", 1, 5000, 1500, step=10, key=f"{key}_width")
        return custom(level, width)
    return PRESETS[choice]


def show_read_error(exc: ImageReadError, what: str = "This file") -> None:
    st.error(f"**{what} could not be read** ({exc.kind}): {exc}", icon=":material/error:")


def synthetic_banner(synthetic: bool) -> None:
    if synthetic:
        st.warning(
            "**Synthetic data.** These are procedurally generated phantom patients, not real scans; "
            "labels are exact ground truth from the phantom's masks.",
            icon=":material/science:",
        )


def metadata_table(meta: Mapping[str, Any]) -> None:
    """Safe (allow-listed, non-identifying) technical metadata as a two-column table."""
    if not meta:
        st.caption("No technical metadata.")
        return
    rows = [{"field": k, "value": ", ".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)}
            for k, v in meta.items() if k != "series_choices"]  # the series picker lists those
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    st.caption("Only allow-listed technical fields are read; names, IDs, dates and institutions never are.")


def burned_in(meta: Mapping[str, Any]) -> bool:
    """True when the DICOM flags burned-in annotations (pixels may show names or IDs)."""
    return str(meta.get("BurnedInAnnotation", "")).strip().upper() == "YES"


def burned_in_warning(meta: Mapping[str, Any]) -> None:
    if burned_in(meta):
        st.warning("**Burned-in annotations:** the scanner flags text drawn into the image itself, which may "
                   "identify the patient. Image exports are switched off for this scan.", icon=":material/visibility_off:")


def upload_series(uploaded, key: str) -> Volume:
    """Read an upload, with the series choice when it holds several (``series_choice``)."""
    return series_choice(lambda series: loaders.read_upload(uploaded, series), f"{key}_series_{uploaded.file_id}")


def series_choice(read: Callable[[str | None], Volume], state: str) -> Volume:
    """Read a scan (``read(series key or None)``); when it holds several CT series (a whole study), say which one is
    shown and why, and let the user switch (technical fields only: description, slices, thickness, kernel).
    Raises ``ImageReadError``."""
    with st.spinner("Reading scan…"):
        vol = read(st.session_state.get(state))
    choices = vol.meta.get("series_choices")
    if choices:
        labels = {SeriesOption(**c).label(): c["key"] for c in choices}
        shown = next(label for label, k in labels.items() if k == vol.meta["series_chosen"])
        picked = st.selectbox(f"Series ({len(labels)} CT series in this study)", list(labels),
                              index=list(labels).index(shown), key=f"{state}_label",
                              help="The reader opens the axial series a radiologist reads the lungs on: a lung or sharp "
                                   "kernel, the thinnest at most 3 mm, then the most slices. Localizers and dose "
                                   "reports are skipped.")
        if labels[picked] != vol.meta["series_chosen"]:  # switched: read that series (this run, not the next)
            st.session_state[state] = labels[picked]
            with st.spinner("Reading scan…"):
                vol = read(labels[picked])
        st.caption(f"Reading {picked.split(':')[0]}: {vol.meta['series_why']}.")
    return vol
