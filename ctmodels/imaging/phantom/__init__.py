"""Synthetic chest-CT phantoms: the embedded default dataset (everything here is synthetic)."""

from .dataset import build_dataset, read_manifest
from .generate import DEFAULT_THRESHOLD_PCT, PhantomConfig, PhantomPatient, generate_patient, sample_severities
from .writers import LAYOUTS, mosmed_category

__all__ = [
    "DEFAULT_THRESHOLD_PCT",
    "LAYOUTS",
    "PhantomConfig",
    "PhantomPatient",
    "build_dataset",
    "generate_patient",
    "mosmed_category",
    "read_manifest",
    "sample_severities",
]
