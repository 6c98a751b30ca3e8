"""What a dataset is to the app: cases (one scan or one slice each) with labels and provenance."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..verdict import DEFAULT_THRESHOLD_PCT

LABELS = ("mild", "severe")


class DatasetError(ValueError):
    """A folder that is not a dataset we can read, with a message saying what was expected."""


@dataclass(frozen=True)
class LabelRule:
    """mild vs severe by % of lung involved; cases inside ``excluded_band`` get no label."""

    threshold_pct: float = DEFAULT_THRESHOLD_PCT
    excluded_band: tuple[float, float] | None = None

    def label(self, involvement_pct: float | None) -> str | None:
        if involvement_pct is None:
            return None
        if self.excluded_band and self.excluded_band[0] <= involvement_pct < self.excluded_band[1]:
            return None
        return "severe" if involvement_pct >= self.threshold_pct else "mild"


@dataclass(frozen=True)
class Case:
    """One scan (a volume or a single slice) of a dataset.

    ``label_source`` says where the label comes from ("phantom ground truth", "derived from
    masks", "folder name", "labels CSV", ...): the UI shows it so nobody mistakes a derived
    label for a radiologist's grade.
    """

    case_id: str
    patient_id: str
    image: Path
    label: str | None = None
    label_source: str = "none"
    involvement_pct: float | None = None
    lung_mask: Path | None = None
    lesion_mask: Path | None = None
    lesion_mask_model_made: bool = False  # drawn by a model (pseudo-labels), not a doctor: may carry artefacts
    n_slices: int | None = None
    slice_labels: tuple[str | None, ...] | None = None
    slice_involvement: tuple[float | None, ...] | None = None
    slice_infection: tuple[int | None, ...] | None = None
    lung_slices: tuple[int, ...] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def has_masks(self) -> bool:
        return self.lung_mask is not None or self.lesion_mask is not None


@dataclass
class Dataset:
    """A set of cases read from one folder in one layout."""

    name: str
    root: Path
    layout: str
    cases: list[Case]
    synthetic: bool = False
    rule: LabelRule = field(default_factory=LabelRule)
    notes: list[str] = field(default_factory=list)
    slice_level: bool = False  # True when each case is a single 2-D slice

    def __len__(self) -> int:
        return len(self.cases)

    def case(self, case_id: str) -> Case:
        for c in self.cases:
            if c.case_id == case_id:
                return c
        raise KeyError(case_id)

    def table(self) -> pd.DataFrame:
        """One row per case: what the Data Browser lists."""
        rows = []
        for c in self.cases:
            rows.append(
                {
                    "case": c.case_id,
                    "patient": c.patient_id,
                    "label": c.label or "—",
                    "label source": c.label_source,
                    "involvement %": None if c.involvement_pct is None else round(c.involvement_pct, 1),
                    "slices": c.n_slices,
                    "masks": "yes" if c.has_masks else "no",
                    **{k: v for k, v in c.extra.items() if isinstance(v, (str, int, float))},
                }
            )
        return pd.DataFrame(rows)

    def label_counts(self) -> dict[str, int]:
        out = {"mild": 0, "severe": 0, "unlabelled": 0}
        for c in self.cases:
            out[c.label if c.label in LABELS else "unlabelled"] += 1
        return out

    def slice_table(self) -> pd.DataFrame:
        """One row per slice where slice-level information exists (labels, involvement, findings)."""
        rows = []
        for c in self.cases:
            n = c.n_slices or 0
            for i in range(n):
                rows.append(
                    {
                        "case": c.case_id,
                        "patient": c.patient_id,
                        "slice": i,
                        "label": (c.slice_labels[i] if c.slice_labels else c.label) or "—",
                        "involvement %": c.slice_involvement[i] if c.slice_involvement else None,
                        "infection (radiologist)": c.slice_infection[i] if c.slice_infection else None,
                        "lung slice": (i in c.lung_slices) if c.lung_slices is not None else None,
                    }
                )
        return pd.DataFrame(rows)


def combine(name: str, root: Path, parts: list[Dataset], notes: list[str] | None = None) -> Dataset:
    """One dataset made of several (e.g. every real 8-bit slice we have); case ids stay unique."""
    if not parts:
        raise DatasetError(f"{name}: none of its parts is present")
    ids: set[str] = set()
    cases: list[Case] = []
    for ds in parts:
        for c in ds.cases:
            if c.case_id in ids:
                c = Case(**{**c.__dict__, "case_id": f"{ds.root.name}/{c.case_id}"})
            ids.add(c.case_id)
            cases.append(c)
    return Dataset(
        name=name, root=root, layout="+".join(sorted({d.layout for d in parts})), cases=cases,
        synthetic=all(d.synthetic for d in parts), rule=parts[0].rule,
        notes=(notes or []) + [n for d in parts for n in d.notes], slice_level=all(d.slice_level for d in parts),
    )
