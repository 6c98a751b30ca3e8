"""Data Browser: pick a dataset (demo phantoms, real sample, local folder) or upload a scan; browse it."""

from __future__ import annotations

import streamlit as st

from ctmodels.datasets import Dataset, DatasetError, builtin_sources
from ctmodels.imaging import ImageReadError
from ctmodels.verdict import DEFAULT_THRESHOLD_PCT
from ctmodels.work_slots import whole_scan_work
from ctmodels.workspace import PathNotAllowedError, data_roots, resolve_under_roots
from training.evaluation.on_dataset import NothingToCheckError, check_dataset, labelled
from ui import dataset_check_view, figures, loaders
from ui.models import cache_key, loaded
from ui.pacs_view import pacs_study
from ui.viewer import scan_viewer
from ui.widgets import show_read_error, synthetic_banner, upload_series

LOCAL = "Local folder on this server…"
UPLOAD = "Upload a scan (DICOM, zipped DICOM series, NIfTI, PNG/JPG)…"
PACS = "Open a study from a PACS (DICOMweb)…"

st.title("Data Browser")
sources = builtin_sources()
if not any(s.synthetic for s in sources):
    st.info("The demo phantoms are not built yet. `make run` builds them into the workspace "
            "(or run `python -m ctmodels.imaging.phantom --out workspace/data/demo`).", icon=":material/info:")
titles = [s.title for s in sources] + [LOCAL, UPLOAD, PACS]
choice = st.selectbox("Dataset", titles, key="db_source")

with st.expander("Label rule: mild vs severe", expanded=False):
    threshold = st.slider("Severe when lung involvement ≥ (%)", 5.0, 75.0, DEFAULT_THRESHOLD_PCT, 0.5, key="db_threshold",
                          help="25 % is the MosMed CT-1/CT-2 boundary.")
    band = None
    if st.checkbox("Exclude an uncertain band around the cut", key="db_band_on"):
        half = st.slider("Half-width of the excluded band (%)", 1.0, 15.0, 5.0, 0.5, key="db_band")
        band = (max(0.0, threshold - half), threshold + half)


def show_dataset(path: str, name: str | None) -> None:
    try:
        ds = loaders.dataset(path, threshold, band, loaders.stamp(path), name)
    except DatasetError as exc:
        st.error(f"**This folder is not a dataset we can read.** {exc}", icon=":material/error:")
        return
    st.subheader(ds.name)
    synthetic_banner(ds.synthetic)
    for note in ds.notes:
        st.caption(f"• {note}")
    counts = ds.label_counts()
    unit = "slices" if ds.slice_level else "patients"
    c = st.columns(4)
    c[0].metric(f"Cases ({unit})", len(ds))
    c[1].metric("Mild", counts["mild"])
    c[2].metric("Severe", counts["severe"])
    c[3].metric("Unlabelled", counts["unlabelled"])
    viewer_tab, table_tab, dist_tab, check_tab = st.tabs(["Viewer", "Cases", "Distribution", "Models on this data"])
    with check_tab:
        models_on_dataset(ds, path)
    table = ds.table()
    with table_tab:
        st.dataframe(table, hide_index=True, width="stretch")
        st.download_button("Download table (CSV)", table.to_csv(index=False).encode(), "cases.csv", "text/csv",
                           key="db_csv")
        slices = ds.slice_table()
        if len(slices):
            with st.expander(f"Slices ({len(slices)})"):
                st.dataframe(slices, hide_index=True, width="stretch")
    with dist_tab:
        a, b = st.columns(2)
        a.plotly_chart(figures.label_balance(counts, unit), key="db_balance")
        inv = table["involvement %"] if "involvement %" in table else []
        if len(inv) and inv.notna().any():
            b.plotly_chart(figures.involvement_histogram(inv, table["label"], threshold), key="db_hist")
        else:
            b.caption("No involvement values in this dataset (no masks).")
    with viewer_tab:
        def fmt(i: int) -> str:
            cse = ds.cases[i]
            inv_txt = f" · {cse.involvement_pct:.1f} %" if cse.involvement_pct is not None else ""
            return f"{cse.case_id} · {cse.label or 'unlabelled'}{inv_txt}"

        i = st.selectbox("Case", range(len(ds.cases)), format_func=fmt, key="db_case")
        case = ds.cases[i]
        st.caption(f"Label source: {case.label_source}")
        try:
            with st.spinner("Reading scan…"):
                vol = loaders.volume(str(case.image), loaders.stamp(case.image))
                masks = loaders.masks(str(case.image), str(case.lung_mask) if case.lung_mask else None,
                                      str(case.lesion_mask) if case.lesion_mask else None, loaders.stamp(case.image))
        except ImageReadError as exc:
            show_read_error(exc, f"Case {case.case_id}")
            return
        scan_viewer(
            vol, "db_view", masks=masks, slice_labels=case.slice_labels, slice_involvement=case.slice_involvement,
            slice_infection=case.slice_infection, threshold_pct=threshold,
            analyse=lambda: loaders.classical_lung(str(case.image), loaders.stamp(case.image)),
        )


def models_on_dataset(ds: Dataset, path: str) -> None:
    """Score every labelled case with a model set, as Compare would; keep what was scored if the run is cut off."""
    cases = labelled(ds)
    if not cases:
        st.info("Nothing here to check models against: no case has a label, masks or per-slice findings.",
                icon=":material/info:")
        return
    chosen = dataset_check_view.pick_models(ds, "dbc")
    if not chosen:
        return
    store = st.session_state.setdefault("dbc_store", {})
    key = (path, loaders.stamp(path), threshold, band, tuple(cache_key(c) for c in chosen))
    if store.get("key") != key:
        store.clear()
        store.update(key=key, done={}, result=None)
    done = store["done"]
    started = sum(c.case_id in done for c in cases)
    label = (f"Continue scoring ({started} of {len(cases)} cases done)" if 0 < started < len(cases)
             else f"Score the {len(cases)} labelled case(s) with {len(chosen)} model(s)")
    if store["result"] is None and st.button(label, key="dbc_run", type="primary"):
        bar = st.progress(0.0, text="Loading the models…")
        try:
            store["result"] = check_dataset(
                ds, [loaded(c) for c in chosen], done, around=whole_scan_work,
                progress=lambda k, n, case: bar.progress(k / n, text=f"Scoring case {k + 1} of {n} ({case})…"))
        except NothingToCheckError as exc:
            st.error(str(exc), icon=":material/error:")
        else:
            st.rerun()  # show the result without the button that started it
        finally:
            bar.empty()
    if store["result"] is not None:
        dataset_check_view.render(store["result"], [c.name for c in chosen], threshold, "dbc")


def show_upload() -> None:
    up = st.file_uploader("Scan file", key="db_upload",
                          help="A DICOM file, a .zip or .tar.gz of a DICOM series or study, a NIfTI volume (.nii/.nii.gz), or PNG/JPG/TIFF. "
                               "Uploads stay in memory for this session and are never saved.")
    if up is None:
        st.caption("Nothing uploaded yet.")
        return
    try:
        vol = upload_series(up, "db_upload")
    except ImageReadError as exc:
        show_read_error(exc, up.name)
        return
    st.success(f"Read **{up.name}**: {vol.describe()}.", icon=":material/check_circle:")
    if not vol.is_hu:
        st.info("8-bit image: values are display intensities, not Hounsfield units; lung involvement % "
                "and window presets are not available.", icon=":material/info:")
    scan_viewer(vol, "db_up_view", analyse=lambda: loaders.analyse_upload(vol, up), threshold_pct=threshold)


def show_pacs() -> None:
    try:
        opened = pacs_study("db")
    except ImageReadError as exc:
        show_read_error(exc, "The study")
        return
    if opened is not None:
        vol, study = opened
        st.success(f"Opened the study from the PACS: {vol.describe()}.", icon=":material/check_circle:")
        scan_viewer(vol, "db_pacs_view", analyse=lambda: loaders.analyse_scan(vol, study.token), threshold_pct=threshold)


if choice == UPLOAD:
    show_upload()
elif choice == PACS:
    show_pacs()
elif choice == LOCAL:
    typed = st.text_input("Folder path", key="db_folder",
                          help="Allowed under: " + ", ".join(str(r) for r in data_roots()))
    if typed:
        try:
            folder = resolve_under_roots(typed)
        except PathNotAllowedError as exc:
            st.error(str(exc), icon=":material/block:")
        else:
            show_dataset(str(folder), None)
else:
    src = sources[titles.index(choice)]
    show_dataset(str(src.path), src.title)
