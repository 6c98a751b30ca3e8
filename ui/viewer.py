"""The scan viewer shared by the Data Browser (dataset cases) and uploads."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import streamlit as st

from ctmodels.datasets import CaseMasks
from ctmodels.imaging import Volume
from ctmodels.verdict import DEFAULT_THRESHOLD_PCT

from . import figures, render
from .loaders import LungAnalysis
from .widgets import burned_in_warning, metadata_table, window_picker


def _most_involved(per_slice: Sequence[float | None] | None) -> int | None:
    if per_slice is None:
        return None
    arr = np.array([np.nan if v is None else v for v in per_slice], dtype=float)
    return None if np.all(np.isnan(arr)) else int(np.nanargmax(arr))


def scan_viewer(
    vol: Volume,
    key: str,
    *,
    masks: CaseMasks | None = None,
    slice_labels: Sequence[str | None] | None = None,
    slice_involvement: Sequence[float | None] | None = None,
    slice_infection: Sequence[int | None] | None = None,
    analyse: Callable[[], LungAnalysis] | None = None,
    threshold_pct: float = DEFAULT_THRESHOLD_PCT,
) -> None:
    """Slice viewer with window presets, slice slider, mask overlays and per-slice facts."""
    n = vol.n_slices
    burned_in_warning(vol.meta)
    img_col, ctl_col = st.columns([3, 2], gap="medium")
    with ctl_col:
        st.caption(vol.describe())
        window = window_picker(key, vol.is_hu)
        idx = 0
        if n > 1:
            start_key = f"{key}_slice"
            jump = _most_involved(slice_involvement)
            if jump is not None and st.button("Jump to most involved slice", key=f"{key}_jump"):
                st.session_state[start_key] = jump
            idx = st.slider("Slice (0 = most superior)", 0, n - 1, value=n // 2, key=start_key)
        show_lung = show_lesion = show_classical = False
        if masks is not None and masks.lung is not None:
            show_lung = st.checkbox("Lung mask (dataset)", value=True, key=f"{key}_lung")
        if masks is not None and masks.lesion is not None:
            show_lesion = st.checkbox("Lesion mask (dataset)", value=True, key=f"{key}_lesion")
        analysis: LungAnalysis | None = None
        if vol.is_hu and analyse is not None:
            show_classical = st.toggle(
                "Classical lung segmentation and involvement", value=False, key=f"{key}_classical",
                help="Non-learned cross-check: threshold, airway removal, hole filling; involvement = lung share "
                "in the -700…+100 HU band after removing thin structures.",
            )
            if show_classical:
                with st.spinner("Segmenting lungs…"):
                    analysis = analyse()
        _slice_facts(idx, slice_labels, slice_involvement, slice_infection, analysis)

    overlays: list = []
    outline: list[bool] = []
    if show_lung:
        overlays.append((masks.lung[idx], render.COLORS["lung"]))
        outline.append(True)
    if show_classical and analysis is not None:
        overlays.append((analysis.mask[idx], render.COLORS["classical"]))
        outline.append(True)
        overlays.append((analysis.result.lesion_slice(idx), render.COLORS["classical"]))
        outline.append(False)
    if show_lesion:
        overlays.append((masks.lesion[idx] == 1, render.COLORS["ggo"]))
        outline.append(False)
        overlays.append((masks.lesion[idx] >= 2, render.COLORS["consolidation"]))
        outline.append(False)
    rgb = render.slice_rgb(vol.slice(idx), window, overlays, outline_only=tuple(outline))
    with img_col:
        wlabel = window.label() if window else "as stored"
        st.image(render.fit_for_display(rgb), caption=f"Slice {idx + 1} of {n} · window {wlabel}", width="stretch")
        legend = []
        if show_lung:
            legend.append("blue outline: dataset lung mask")
        if show_lesion:
            legend.append("yellow: ground glass · red: consolidation (dataset)")
        if show_classical:
            legend.append("green: classical lung outline and lesion-band pixels")
        if legend:
            st.caption(" · ".join(legend))

    series: dict[str, Sequence[float | None]] = {}
    if slice_involvement is not None:
        series["dataset (masks)"] = slice_involvement
    if analysis is not None:
        series["classical measure"] = list(analysis.result.per_slice)
    if n > 1 and series:
        st.plotly_chart(figures.slice_curve(series, current=idx, threshold_pct=threshold_pct), key=f"{key}_curve")
    with st.expander("Technical metadata (safe fields only)"):
        metadata_table(vol.meta)


def _slice_facts(idx, labels, inv, infection, analysis: LungAnalysis | None) -> None:
    facts = []
    if labels is not None and idx < len(labels):
        facts.append(f"slice label: **{labels[idx] or 'none'}**")
    if inv is not None and idx < len(inv) and inv[idx] is not None:
        facts.append(f"involvement (masks): **{inv[idx]:.1f} %**")
    if infection is not None and idx < len(infection) and infection[idx] is not None:
        facts.append(f"radiologist: **{'infection' if infection[idx] else 'no infection'}** on this slice")
    if analysis is not None:
        ps = analysis.result.per_slice[idx]
        facts.append(
            f"classical: **{analysis.result.percent:.1f} %** of lung volume"
            + (f", **{ps:.1f} %** on this slice" if not np.isnan(ps) else ", no lung on this slice")
        )
    if facts:
        st.markdown("  \n".join(facts))
