"""Cached loaders. Volumes and models live in ``st.cache_resource`` (shared, never copied),
keyed by path + modification time so an edited file is re-read; small tables in ``st.cache_data``.
Uploaded scans are kept in the session only (never written to disk, never shared)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from ctmodels.datasets import Dataset, LabelRule, load_masks, open_dataset
from ctmodels.datasets.model import Case
from ctmodels.imaging import ImageReadError, Volume, read_any
from ctmodels.imaging.lung import Involvement, involvement, segment_lungs
from ctmodels.imaging.lung_field import lung_field
from ctmodels.imaging.packed import PackedMask
from ctmodels.imaging.reader import read_study_files
from ctmodels.work_slots import whole_scan_work


def stamp(path: Path | str) -> float:
    """Modification time used in cache keys (0 when the path vanished)."""
    try:
        return os.stat(path).st_mtime
    except OSError:
        return 0.0


@st.cache_data(show_spinner=False, max_entries=32)
def dataset(path: str, threshold_pct: float, band: tuple[float, float] | None, _stamp: float, name: str | None = None) -> Dataset:
    return open_dataset(path, LabelRule(threshold_pct, band), name=name)


@st.cache_resource(show_spinner=False, max_entries=6)
def volume(path: str, _stamp: float) -> Volume:
    return read_any(path)


@st.cache_resource(show_spinner=False, max_entries=6)
def masks(image: str, lung: str | None, lesion: str | None, _stamp: float):
    case = Case(case_id="", patient_id="", image=Path(image), lung_mask=Path(lung) if lung else None,
                lesion_mask=Path(lesion) if lesion else None)
    return load_masks(case, volume(image, stamp(image)))


@dataclass(frozen=True)
class LungAnalysis:
    mask: PackedMask  # the lung field as bits: every session holding a scan holds one (``ctmodels.imaging.packed``)
    result: Involvement


@st.cache_resource(show_spinner=False, max_entries=4)
def classical_lung(path: str, _stamp: float) -> LungAnalysis:
    return analyse_volume(volume(path, stamp(path)))


def analyse_volume(vol: Volume) -> LungAnalysis:
    """Uncached classical analysis (for uploads, which stay in the session)."""
    mask = segment_lungs(vol)
    return LungAnalysis(mask=PackedMask(mask), result=involvement(vol, mask))


def estimated_field(vol: Volume, key: str) -> PackedMask:
    """The 8-bit lung-field estimate of a volume, memoised in this session (uploads never leave it)."""
    cache = st.session_state.setdefault("field_cache", {})
    if key not in cache:
        cache.clear()
        cache[key] = PackedMask(lung_field(vol))
    return cache[key]


UPLOAD_KEY = "upload_cache"


def read_upload(uploaded, series: str | None = None) -> Volume:
    """Read an ``UploadedFile`` once per session (``series``: which DICOM series of a study, default the
    reader's pick); raises ``ImageReadError`` for bad input.

    The result is kept in this browser session only, so two users never see each other's scans.
    """
    # a new upload of the same file gets a new id (and is read again)
    return _read_once((uploaded.file_id, series), lambda: read_any(uploaded.getvalue(), name=uploaded.name,
                                                                   series=series))


def read_pacs_study(token: str, members: list[tuple[str, bytes]], series: str | None = None) -> Volume:
    """A study retrieved from the PACS (``token``: which retrieval), read once per session like an upload."""
    return _read_once((token, series), lambda: read_study_files(members, series))


def _read_once(key: tuple, read) -> Volume:
    cache = st.session_state.setdefault(UPLOAD_KEY, {})
    if key in cache:
        hit = cache[key]
        if isinstance(hit, ImageReadError):
            raise hit
        return hit
    cache.clear()
    try:
        with whole_scan_work():  # the scan's bytes are decoded only here, one scan at a time
            vol = read().compact()  # kept: whole HU as int16
    except ImageReadError as exc:
        cache[key] = exc
        raise
    cache[key] = vol
    return vol


def analyse_upload(vol: Volume, uploaded) -> LungAnalysis:
    """Classical analysis of an uploaded scan, memoised in this session only."""
    return analyse_scan(vol, uploaded.file_id)


def analyse_scan(vol: Volume, token: str) -> LungAnalysis:
    """Classical analysis of a session's scan (an upload, a PACS study: ``token``), memoised in this session only."""
    key = ("lung", token, vol.meta.get("series_chosen"))
    cache = st.session_state.setdefault("upload_analysis", {})
    if key not in cache:
        cache.clear()
        with whole_scan_work():
            cache[key] = analyse_volume(vol)
    return cache[key]
