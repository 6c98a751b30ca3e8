"""Trained models for the pages: discovered in the workspace, loaded once per process.

``st.cache_resource`` keyed by checkpoint folder + card mtime: every browser session shares one
copy of each model (the per-model lock in ``LoadedModel`` keeps CAM hooks from crossing sessions).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from ctmodels.checkpoint import read_card
from ctmodels.inference import LoadedModel, load_model
from ctmodels.nets import MODEL_INFO
from ctmodels.workspace import models_dir

from .loaders import stamp

DEFAULT_ORDER = ("ghost", "pruned", "kd", "baseline")
EXTRA_KEY = "extra_checkpoints"  # folders added from the Training page ("use on Compare")


@dataclass(frozen=True)
class ModelChoice:
    name: str
    folder: str
    key: str
    title: str
    trained_on: str
    synthetic: bool


def _choice(folder: Path, name: str) -> ModelChoice | None:
    try:
        card = read_card(folder)
    except Exception:  # an unreadable card is simply not offered
        return None
    source = (card.training.get("data") or {}).get("source", "?") if card.training else "?"
    info = MODEL_INFO.get(card.model_key)
    return ModelChoice(name, str(folder), card.model_key, info.title if info else card.model_key, str(source),
                       source == "demo")


def available_models() -> list[ModelChoice]:
    """Published models (``workspace/models/<key>``) first, then checkpoints added this session."""
    out: list[ModelChoice] = []
    root = models_dir()
    if root.is_dir():
        for f in sorted(p for p in root.iterdir() if (p / "card.json").is_file() and not p.name.startswith(".")):
            c = _choice(f, f.name)
            if c:
                out.append(c)
    for name, folder in st.session_state.get(EXTRA_KEY, {}).items():
        c = _choice(Path(folder), name)
        if c and all(o.folder != c.folder for o in out):
            out.append(c)
    return out


def default_selection(choices: list[ModelChoice]) -> list[str]:
    names = [c.name for c in choices]
    picked = [n for n in DEFAULT_ORDER if n in names]
    return picked or names[:4]


@st.cache_resource(show_spinner=False, max_entries=16)
def _load(folder: str, _stamp: float) -> LoadedModel:
    return load_model(folder, Path(folder).name)


def loaded(choice: ModelChoice) -> LoadedModel:
    lm = _load(choice.folder, stamp(Path(choice.folder) / "card.json"))
    lm.name = choice.name
    return lm
