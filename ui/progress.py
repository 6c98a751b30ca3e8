"""One way to show a background job's progress record (``training.jobs.progress``): runs, cross-validations
and model-set builds all write the same record, and every page draws it with :func:`progress_bar`."""

from __future__ import annotations

from typing import Any

import streamlit as st


def fraction(p: dict[str, Any]) -> float:
    """How far the job is, 0–1: finished units plus the share of the current one."""
    within = p.get("batch", 0) / max(p.get("batches", 1), 1)
    return min(max(((p.get("epoch", 1) - 1) + within) / max(p.get("epochs", 1), 1), 0.0), 1.0)


def describe(p: dict[str, Any]) -> str:
    unit = p.get("unit", "epoch")
    parts = [f"{unit} {p.get('epoch', 0)}/{p.get('epochs', 0)}"]
    if unit == "epoch" and p.get("batches"):
        parts.append(f"batch {p.get('batch', 0)}/{p['batches']}")
    if p.get("images_per_s"):
        parts.append(f"{p['images_per_s']:.1f} img/s")
    if p.get("eta_s"):
        parts.append(f"ETA {p['eta_s'] / 60:.1f} min")
    return f"{p.get('stage', 'working')}: " + ", ".join(parts)


def progress_bar(p: dict[str, Any] | None, waiting: str, prefix: str = "") -> None:
    """The record as a progress bar with one line of text; ``waiting`` while there is no record yet."""
    if not p:
        st.progress(0.0, text=prefix + waiting)
        return
    st.progress(fraction(p), text=prefix + describe(p))
