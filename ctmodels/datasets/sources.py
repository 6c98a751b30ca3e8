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


def builtin_sources() -> list[Source]:
    """Demo phantom layouts present in the workspace, then the real sample datasets if present."""
    out = [
        Source(f"demo-{k}", f"Demo phantoms (synthetic) · {PHANTOM_LAYOUT_TITLES[k]}", p, True)
        for k, p in phantom_layouts(demo_data_dir()).items()
    ]
    real = real_data_dir()
    if (real / "covid-ct-md").is_dir():
        out.append(Source("real-covid-ct-md", "COVID-CT-MD sample (real DICOM series)", real / "covid-ct-md", False))
    if (real / "infnet-semiseg").is_dir():
        out.append(Source("real-infnet", "Inf-Net COVID-SemiSeg slices (real JPEG)", real / "infnet-semiseg", False))
    if (real / "covid-ct-seg-slices").is_dir():
        out.append(Source("real-covid-ct-seg", "COVID-19-CT-Seg slices, 14 patients (real JPEG)",
                          real / "covid-ct-seg-slices", False))
    return out
