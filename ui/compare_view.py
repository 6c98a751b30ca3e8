"""Pieces of the Compare page: the scan picker, the demo-model builder, the result grid."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from ctmodels.assessment import SliceAssessment, SliceResult
from ctmodels.datasets import DatasetError, builtin_sources
from ctmodels.dicom_out import write_seg, write_sr
from ctmodels.efficiency import RUNTIME_TITLES
from ctmodels.explain import heatmap_overlay
from ctmodels.imaging import ImageReadError, Volume
from ctmodels.imaging.packed import PackedMask
from ctmodels.imaging.reader import source_images
from ctmodels.imaging.window import LUNG
from ctmodels.verdict import DEFAULT_THRESHOLD_PCT

from . import loaders, render
from .pacs_view import pacs_study, send_to_pacs
from .progress import progress_bar
from .widgets import show_read_error, upload_series

VERDICT_COLOR = {"mild": "blue", "severe": "red"}


@dataclass(frozen=True)
class PickedScan:
    """The scan on the Compare page and what goes with it."""

    volume: Volume
    key: str  # cache key of this scan (uploads: per file; sample cases: path + mtime)
    analysis: "loaders.LungAnalysis | None"  # classical HU lung analysis (None for 8-bit images)
    lung: PackedMask | None  # the lung field the models crop to: the HU segmentation, or the 8-bit estimate
    synthetic: bool
    #: the DICOM headers of the scan's series, slice for slice, read again on demand for DICOM SR/SEG (they hold
    #: the patient's identifiers: never kept in the session); None for scans that are not single-frame DICOM
    dicom_sources: Callable[[], list] | None = None
    pacs_url: str | None = None  # the PACS the study came from: results can be sent back to it


def _dicom_sources(vol: Volume, source, name: str | None) -> Callable[[], list] | None:
    if not vol.source_format.startswith("dicom") or vol.meta.get("number_of_frames"):
        return None
    series = vol.meta.get("series_chosen")
    return lambda: source_images(source() if callable(source) else source, name, series)


def _field(vol: Volume, key: str, analysis) -> PackedMask:
    if analysis is not None:
        return analysis.mask
    return loaders.estimated_field(vol, key)


def pick_scan(key: str) -> PickedScan | None:
    """A sample case or an upload, read, with its lung field (classical analysis for HU scans)."""
    mode = (st.segmented_control("Scan", ["Sample case", "Upload", "PACS"], default="Sample case", key=f"{key}_mode")
            or "Sample case")
    if mode == "PACS":
        try:
            opened = pacs_study(key)
        except ImageReadError as exc:
            show_read_error(exc, "The study")
            return None
        if opened is None:
            return None
        vol, study = opened
        analysis = None
        if vol.is_hu:
            with st.spinner("Segmenting lungs…"):
                analysis = loaders.analyse_scan(vol, study.token)
        scan_key = f"pacs:{study.token}:{vol.meta.get('series_chosen', '')}"
        return PickedScan(vol, scan_key, analysis, _field(vol, scan_key, analysis), False,
                          _dicom_sources(vol, study.members, None), study.url)
    if mode == "Upload":
        up = st.file_uploader("DICOM file, zipped DICOM series or study, NIfTI, PNG/JPG", key=f"{key}_upload",
                              help="Kept in memory for this session only; never saved.")
        if up is None:
            st.caption("Upload a scan, or switch to a sample case.")
            return None
        try:
            vol = upload_series(up, key)
        except ImageReadError as exc:
            show_read_error(exc, up.name)
            return None
        analysis = None
        if vol.is_hu:
            with st.spinner("Segmenting lungs…"):
                analysis = loaders.analyse_upload(vol, up)
        scan_key = f"upload:{up.file_id}:{vol.meta.get('series_chosen', '')}"
        return PickedScan(vol, scan_key, analysis, _field(vol, scan_key, analysis), False,
                          _dicom_sources(vol, up.getvalue, up.name))
    sources = [s for s in builtin_sources() if s.key != "demo-png"]
    if not sources:
        st.info("No sample data in the workspace yet (`make run` builds the demo phantoms).")
        return None
    c1, c2 = st.columns(2)
    src = c1.selectbox("Dataset", sources, format_func=lambda s: s.title, key=f"{key}_source")
    try:
        ds = loaders.dataset(str(src.path), DEFAULT_THRESHOLD_PCT, None, loaders.stamp(src.path), src.title)
    except DatasetError as exc:
        st.error(str(exc))
        return None
    case = c2.selectbox("Case", ds.cases, key=f"{key}_case",
                        format_func=lambda c: f"{c.case_id} · {c.label or 'no grade'}"
                        + (f" · {c.involvement_pct:.0f} % (truth)" if c.involvement_pct is not None else ""))
    try:
        with st.spinner("Reading scan…"):
            vol = loaders.volume(str(case.image), loaders.stamp(case.image))
    except ImageReadError as exc:
        show_read_error(exc, case.case_id)
        return None
    analysis = None
    if vol.is_hu:
        with st.spinner("Segmenting lungs…"):
            analysis = loaders.classical_lung(str(case.image), loaders.stamp(case.image))
    scan_key = f"case:{case.image}:{loaders.stamp(case.image)}"
    return PickedScan(vol, scan_key, analysis, _field(vol, scan_key, analysis), ds.synthetic,
                      _dicom_sources(vol, Path(case.image), None))


def set_builder(title: str, what: str, minutes: str, launch, status, key: str, start_label: str) -> None:
    """Offer to build a model set in the background and show its progress (demo and real-CT sets)."""
    job = status()
    if job and job.get("running"):
        progress_bar(job.get("progress"), "preparing…", prefix=f"Building the {title} · ")
        with st.expander("Build log"):
            st.code(job["tail"] or "starting…")
        if st.button("Refresh", key=f"{key}_refresh"):
            st.rerun()
        return
    st.info(f"{what} About {minutes} on a 2-core CPU, in the background — you can keep using the app.",
            icon=":material/model_training:")
    if job and not job.get("running") and not job.get("finished_ok"):
        st.error(f"The last build of the {title} stopped before finishing. Its log:")
        st.code(job["tail"])
    if st.button(start_label, type="primary", key=key):
        launch()
        time.sleep(0.5)
        st.rerun()


def demo_builder(launch, status) -> None:
    """Offer to build the demo models in the background and show its progress."""
    st.info("No trained models in the workspace yet.", icon=":material/info:")
    set_builder("demo model set", "Build the demo model set (baseline, ghost, pruned, kd, sparse, ghost_kd) on the "
                "demo phantoms.", "15 minutes", launch, status, "cmp_build_demo", "Build the demo model set")


def lesion_overlay(gray_rgb: np.ndarray, lesion: np.ndarray) -> np.ndarray:
    """The learned lesion map (as drawn: ``ctmodels.preprocess.drawn_map``) on the slice: orange where it marks
    lesion (≥ 0.5), fading in from 0.3, outlined."""
    alpha = (0.55 * np.clip((lesion - 0.3) / 0.2, 0, 1))[..., None]
    color = np.asarray(render.COLORS["lesion"], np.float32)
    out = gray_rgb.astype(np.float32) * (1 - alpha) + color * alpha
    edge = lesion >= 0.5
    edge = edge & ~render.erode(edge)
    out[edge] = color
    return np.clip(out, 0, 255).astype(np.uint8)


def _verdict(r: SliceResult, timed: bool) -> None:
    """A model's column head: its name, its verdict on the slice at its cut, P(severe) (and its time)."""
    st.markdown(f"**{r.model}**")
    st.badge(r.verdict.upper(), color=VERDICT_COLOR[r.verdict])
    st.markdown(f"P(severe) **{r.p_severe:.0%}** (cut {r.cut:.0%})" + (f" · {r.seconds * 1000:.0f} ms" if timed else ""))


def verdict_row(view: SliceAssessment) -> None:
    """One column per model: its verdict on the slice at its cut and P(severe); text only (what shows first)."""
    for col, r in zip(st.columns(1 + len(view.results))[1:], view.results):
        with col:
            _verdict(r, timed=False)


def result_grid(vol: Volume, view: SliceAssessment, lung: PackedMask | None,
                involvement_txt: str | None) -> dict[str, np.ndarray]:
    """Input slice + one column per model: verdict at its cut, P(severe), time, CAM overlay, and the learned
    lesion map with the slice's learned involvement for models that have one."""
    idx = view.index
    window = LUNG if vol.is_hu else None
    base = render.slice_rgb(vol.slice(idx), window,
                            [(lung[idx], render.COLORS["lung"])] if lung is not None else None, outline_only=(True,))
    cols = st.columns(1 + len(view.results))
    with cols[0]:
        st.markdown("**Input**")
        st.image(render.fit_for_display(base, 384), width="stretch",
                 caption=f"Slice {idx + 1}/{vol.n_slices} · {window.label() if window else '8-bit, as stored'}")
        if involvement_txt:
            st.markdown(involvement_txt)
    panels = {}
    gray = render.slice_rgb(vol.slice(idx), window)
    for col, r in zip(cols[1:], view.results):
        over = heatmap_overlay(gray, r.cam)
        panels[r.model] = over
        with col:
            _verdict(r, timed=True)
            st.image(render.fit_for_display(over, 384), width="stretch",
                     caption=f"Grad-CAM, {r.cam_layer}, explains '{r.explained}'")
            st.caption("CAM mass in lungs: " + (f"**{r.cam_in_lung:.0%}**" if r.cam_in_lung is not None else "n/a"))
            if r.lesion is not None:
                st.image(render.fit_for_display(lesion_overlay(gray, r.lesion), 384), width="stretch",
                         caption=f"Learned lesion map (orange: P(lesion) ≥ {100 * r.map_cut:.0f} %"
                                 + (", its validated cut)" if r.map_cut != 0.5 else ")"))
                st.caption(f"Learned involvement: **{r.involvement:.1f} %** of this slice's lung")
    return panels


def agreement_table(view: SliceAssessment) -> pd.DataFrame:
    rows = [{"models": f"{a} ↔ {b}", "Pearson r": None if r is None else round(r, 2),
             "top-20 % IoU": None if iou is None else round(iou, 2)} for (a, b), (r, iou) in view.agreement.items()]
    return pd.DataFrame(rows)


def runtimes_text(models: list) -> str:
    """Which runtime scores each model's slices, e.g. "ONNX Runtime int8 (baseline, kd), eager PyTorch (ghost)"."""
    groups: dict[str, list[str]] = {}
    for m in models:
        groups.setdefault(m.runtime, []).append(m.name)
    return ", ".join(f"{RUNTIME_TITLES.get(rt, 'eager PyTorch')} ({', '.join(names)})" for rt, names in groups.items())


def dicom_downloads(assessment, sources: Callable[[], list], pacs_url: str | None = None) -> None:
    """DICOM SR (every model's verdict, P(severe), involvement) and SEG (lung field, lesion) of the scan, made on
    click: they carry the study's identifiers to be filed under it, so they go to the user's download only."""
    st.caption("As DICOM, to file beside the study in a PACS or viewer: a structured report (TID 1500) of every "
               "model's verdict, P(severe) and involvement, and a segmentation of the lung field and the lesion. "
               "They carry the study's patient identifiers (copied from the scan's headers) so a PACS files them "
               "under it. Research software, not for diagnostic use.")
    c1, c2 = st.columns(2)
    c1.download_button("Download DICOM SR (measurement report)", lambda: write_sr(assessment, sources()),
                       "ctss_results_sr.dcm", "application/dicom", key="cmp_sr", icon=":material/description:")
    c2.download_button("Download DICOM SEG (lung field, lesion)", lambda: write_seg(assessment, sources()),
                       "ctss_results_seg.dcm", "application/dicom", key="cmp_seg", icon=":material/layers:")
    if pacs_url:
        send_to_pacs(pacs_url, lambda: [write_sr(assessment, sources()), write_seg(assessment, sources())],
                     "cmp_send_pacs")
