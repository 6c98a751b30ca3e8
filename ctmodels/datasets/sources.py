"""The datasets the app offers without typing a path: demo phantoms and the real sample data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..workspace import demo_data_dir, real_data_dir
from .layouts import phantom_layouts

PHANTOM_LAYOUT_TITLES = {
    "kaggle": "Kaggle-style NIfTI with lung + infection masks",
    "dicom": "DICOM series + labels CSV",
    "mosmed": "MosMed-style NIfTI (CT-0…CT-4)",
    "png": "PNG slices, folder per class",
}


@dataclass(frozen=True)
class Source:
    """A dataset the user can pick by name."""

    key: str
    title: str
    path: Path
    synthetic: bool


@dataclass(frozen=True)
class RealSample:
    """One dataset of the real sample data (``../shared/data/real``): the one registry of their keys and titles,
    which the app's dataset lists and the training sources (``training.data.prepare.NAMED_SOURCES``) share."""

    key: str
    title: str
    folder: str  # under the real data folder
    trainable: bool  # False: evaluation only, never trained on


REAL_SAMPLES = (
    RealSample("real-covid-ct-md", "COVID-CT-MD series (real DICOM in HU; evaluation only)", "covid-ct-md", False),
    RealSample("real-infnet", "Inf-Net COVID-SemiSeg slices (real JPEG, 50, doctor's masks)", "infnet-semiseg", True),
    RealSample("real-covid-ct-seg", "COVID-19-CT-Seg slices (real JPEG, 14 patients, model-made masks)",
               "covid-ct-seg-slices", True),
)


def builtin_sources() -> list[Source]:
    """Demo phantom layouts present in the workspace, then the real sample datasets if present."""
    out = [
        Source(f"demo-{k}", f"Demo phantoms (synthetic) · {PHANTOM_LAYOUT_TITLES[k]}", p, True)
        for k, p in phantom_layouts(demo_data_dir()).items()
    ]
    real = real_data_dir()
    return out + [Source(s.key, s.title, real / s.folder, False) for s in REAL_SAMPLES if (real / s.folder).is_dir()]
