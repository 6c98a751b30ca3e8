"""Trained models for the pages: discovered in the workspace, loaded once per process.

Two published sets: the phantom (demo) set in ``workspace/models/<key>`` and the real-CT set in
``workspace/models/real/<key>``, plus checkpoints a user adds from the Training page. The Compare
page serves the set that matches the scan: real scans (8-bit or HU) get the real-CT set when it
exists, phantoms the phantom set.

``st.cache_resource`` keyed by checkpoint folder + card mtime: every browser session shares one
copy of each model (the per-model lock in ``LoadedModel`` keeps CAM hooks from crossing sessions).
"""

from __future__ import annotations

import copy
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import streamlit as st
from streamlit.runtime.scriptrunner import add_script_run_ctx, get_script_run_ctx

from ctmodels.checkpoint import CARD_NAME, checkpoints_in, outdated_inputs, read_card
from ctmodels.inference import LoadedModel, load_model
from ctmodels.nets import MODEL_INFO, compare_defaults
from ctmodels.serving import SERVED_CARD, served_dir
from ctmodels.workspace import models_dir, real_models_dir

from .loaders import stamp

log = logging.getLogger(__name__)

EXTRA_KEY = "extra_checkpoints"  # folders added from the Training page ("use on Compare")
PHANTOM, REAL, RUNS = "phantom", "real", "runs"
SET_TITLES = {PHANTOM: "Phantom set (synthetic)", REAL: "Real-CT set", RUNS: "Added from Training"}
REAL_SUFFIX = " (real CT)"


@dataclass(frozen=True)
class ModelChoice:
    name: str
    folder: str
    key: str
    title: str
    trained_on: str  # the training data, in words
    synthetic: bool  # learned from synthetic phantoms
    eight_bit: bool  # learned from 8-bit (pre-windowed) slices rather than HU
    set: str  # PHANTOM, REAL or RUNS
    outdated: str = ""  # why it would now see other inputs than it learned from (``outdated_inputs``), or ""


def _choice(folder: Path, name: str, model_set: str) -> ModelChoice | None:
    try:
        card = read_card(folder)
    except Exception:  # an unreadable card is simply not offered
        return None
    data = (card.training or {}).get("data") or {}
    source = str(data.get("source", "?"))
    info = MODEL_INFO.get(card.model_key)
    trained = card.trained_on or {}
    words = trained.get("title") or source
    if trained.get("slices"):
        words += f" · {trained['slices']} slices, {trained['patients']} patients"
    return ModelChoice(name, str(folder), card.model_key, info.title if info else card.model_key, words,
                       bool(trained.get("synthetic", source == "demo")),
                       str(trained.get("values", "HU")).startswith("8-bit"), model_set, outdated_inputs(card))


def _published(root: Path, model_set: str, suffix: str = "") -> list[ModelChoice]:
    return [c for f in checkpoints_in(root) if (c := _choice(f, f.name + suffix, model_set))]


def available_models() -> list[ModelChoice]:
    """The phantom set, the real-CT set, then checkpoints added this session."""
    out = _published(models_dir(), PHANTOM) + _published(real_models_dir(), REAL, REAL_SUFFIX)
    for name, folder in st.session_state.get(EXTRA_KEY, {}).items():
        c = _choice(Path(folder), name, RUNS)
        if c and all(o.folder != c.folder for o in out):
            out.append(c)
    return out


def sets_present(choices: list[ModelChoice]) -> list[str]:
    return [s for s in (PHANTOM, REAL, RUNS) if any(c.set == s for c in choices)]


def set_for_scan(choices: list[ModelChoice], synthetic_scan: bool) -> str:
    """The set that matches a scan: phantoms → phantom set; real scans → real-CT set when it exists."""
    present = sets_present(choices)
    if not synthetic_scan and REAL in present:
        return REAL
    return PHANTOM if PHANTOM in present else (present[0] if present else PHANTOM)


def default_selection(choices: list[ModelChoice], model_set: str | None = None) -> list[str]:
    """The ghost, pruned, kd and baseline models of one set (the phantom set unless said otherwise)."""
    pool = [c for c in choices if c.set == (model_set or set_for_scan(choices, True))] or choices
    by_key = {c.key: c.name for c in pool}
    picked = [by_key[k] for k in compare_defaults() if k in by_key]
    return picked or [c.name for c in pool[:4]]


@st.cache_resource(show_spinner=False, max_entries=24)
def _load(folder: str, _stamp: tuple[float, float]) -> LoadedModel:
    return load_model(folder, Path(folder).name)


def cache_key(choice: ModelChoice) -> tuple[str, tuple[float, float]]:
    """The model as the shared cache knows it: its folder and when its card and served runtime last changed."""
    folder = Path(choice.folder)  # a new served runtime (served.json) is picked up like new weights
    return choice.folder, (stamp(folder / CARD_NAME), stamp(served_dir(folder) / SERVED_CARD))


def loaded(choice: ModelChoice) -> LoadedModel:
    """The shared model under this session's display name (a shallow copy: the cached object is never renamed)."""
    lm = copy.copy(_load(*cache_key(choice)))
    lm.name = choice.name
    return lm


_warmed: set[tuple] = set()
_warmed_lock = threading.Lock()


def _load_quietly(keys: list[tuple]) -> None:
    for key in keys:
        try:
            _load(*key)
        except Exception as exc:  # noqa: BLE001 - the page loads it again and says what is wrong
            log.warning("could not load %s ahead of the upload (%s)", key[0], exc)


def warm(choices: list[ModelChoice]) -> None:
    """Load the set a real upload gets (the real-CT set's default models, else the phantom set's) into the shared
    cache in the background while the radiologist picks a scan: after a server start the first upload waited
    for them, and every session uploading behind it too (four real-CT models and their ONNX sessions: 1-3 s on
    2 cores). Once per model and weights; the page never waits for it."""
    model_set = set_for_scan(choices, synthetic_scan=False)
    names = default_selection(choices, model_set)
    with _warmed_lock:
        todo = [k for c in choices if c.name in names and (k := cache_key(c)) not in _warmed]
        _warmed.update(todo)
    if todo:
        thread = threading.Thread(target=_load_quietly, args=(todo,), name="warm-models", daemon=True)
        add_script_run_ctx(thread, get_script_run_ctx())  # the cache is the server's, not this run's
        thread.start()
