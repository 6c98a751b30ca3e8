"""Datasets: layouts on disk → cases with labels, provenance and masks."""

from .layouts import detect_layout, open_dataset, phantom_layouts
from .loading import CaseMasks, involvement_from_masks, load_case, load_masks
from .model import DEFAULT_THRESHOLD_PCT, LABELS, Case, Dataset, DatasetError, LabelRule, combine
from .sources import PHANTOM_LAYOUT_TITLES, REAL_SAMPLES, RealSample, Source, builtin_sources

__all__ = [
    "Case",
    "CaseMasks",
    "DEFAULT_THRESHOLD_PCT",
    "Dataset",
    "DatasetError",
    "LABELS",
    "LabelRule",
    "PHANTOM_LAYOUT_TITLES",
    "REAL_SAMPLES",
    "RealSample",
    "Source",
    "builtin_sources",
    "combine",
    "detect_layout",
    "involvement_from_masks",
    "load_case",
    "load_masks",
    "open_dataset",
    "phantom_layouts",
]
