"""What is in the workspace: datasets (with counts) and trained models, for the Home page."""

from __future__ import annotations

import json
from dataclasses import dataclass

import streamlit as st

from ctmodels.checkpoint import CARD_NAME, checkpoints_in
from ctmodels.datasets import builtin_sources, open_dataset
from ctmodels.datasets.model import DatasetError
from ctmodels.workspace import models_dir, real_models_dir

from .loaders import stamp


@dataclass(frozen=True)
class DataSummary:
    title: str
    cases: int
    mild: int
    severe: int
    synthetic: bool


def data_summaries() -> list[DataSummary]:
    """Datasets offered by name, with case and label counts (cached per location and mtime)."""
    key = tuple((str(s.path), stamp(s.path)) for s in builtin_sources())
    return _summaries(key)


@st.cache_data(show_spinner=False, ttl=60)
def _summaries(key: tuple) -> list[DataSummary]:
    out = []
    for s in builtin_sources():
        try:
            ds = open_dataset(s.path)
        except DatasetError:
            continue
        c = ds.label_counts()
        out.append(DataSummary(s.title, len(ds), c["mild"], c["severe"], s.synthetic))
    return out


def model_cards() -> list[dict]:
    """Cards of the published model sets (phantom, real CT), read as JSON only: nothing is loaded."""
    cards = []
    for model_set, root in (("phantom (synthetic)", models_dir()), ("real CT", real_models_dir())):
        for folder in checkpoints_in(root):
            card = folder / CARD_NAME
            try:
                data = json.loads(card.read_text())
            except (OSError, ValueError):
                continue
            data["_folder"] = card.parent.name
            data["_set"] = model_set
            data["_stamp"] = stamp(card)
            cards.append(data)
    return cards


def evaluated_on(card: dict) -> str:
    """Which split the card's metrics come from: a validation split also chose the epoch, so say it."""
    m = card.get("metrics") or {}
    if not m:
        return ""
    split = {"test": "test split", "val": "validation split"}.get(m.get("split"), str(m.get("split", "?")))
    return f"{split}, {m['n_patients']} patients" if m.get("n_patients") else split


def trained_on(card: dict) -> str:
    """What a card says its model learned from, in words."""
    t = card.get("trained_on") or {}
    if t.get("title"):
        extra = f" · {t['slices']} slices, {t['patients']} patients" if t.get("slices") else ""
        kind = "synthetic phantoms: " if t.get("synthetic") else ""
        return f"{kind}{t['title']} ({t.get('values', 'HU')}){extra}"
    source = ((card.get("training") or {}).get("data") or {}).get("source", "?")
    return "demo phantoms (synthetic, HU)" if source == "demo" else str(source)
