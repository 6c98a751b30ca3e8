"""Which series of a study to read: a study holds localizers, dose reports, soft-tissue and lung reconstructions,
thick and thin. The reader's pick is the axial CT series a radiologist reads the lungs on (a lung or sharp
kernel, the thinnest at most 3 mm, then the most slices); the others stay offered, described by technical
fields only (never names, IDs or dates), so the user can switch.

Slices are grouped by SeriesInstanceUID *and* by who and which study they belong to (compared in memory,
never kept): an anonymiser that writes one constant series UID would otherwise merge two patients.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
from pydicom.dataset import Dataset

from ..dicom_privacy import safe_text
from .frames import _float, _floats, _number_of_frames

#: Who and which study a slice belongs to: part of a series' key, compared in memory only.
_IDENTITY_KEYWORDS = ("PatientID", "PatientName", "PatientBirthDate", "StudyInstanceUID")
#: Thickest reconstruction still read for the lungs (mm).
MAX_LUNG_THICKNESS_MM = 3.0
#: Kernels a reader uses for lung parenchyma: named so (GE LUNG/BONE/EDGE, Philips L/YA-YC/D, Canon FC5x/FC8x)
#: or a Siemens-style number of 50 and above (B60f, Br64, I70f).
_SHARP_KERNEL = re.compile(r"LUNG|BONE|SHARP|EDGE|DETAIL|HIGH|^(Y[A-D]|L|D|E)$|^FC[58]\d|^[A-Z]{1,2}[5-9]\d", re.I)
_DATE_LIKE = re.compile(r"\b\d{6,8}\b")


@dataclass(frozen=True)
class SeriesOption:
    """One series of an upload as the page lists it: technical fields only."""

    key: str  # opaque: which group of slices (not a UID)
    slices: int
    modality: str
    description: str
    thickness_mm: float | None
    kernel: str
    image_type: str
    axial: bool
    lung_kernel: bool

    def label(self) -> str:
        thick = f"{self.thickness_mm:g} mm" if self.thickness_mm else "thickness not stated"
        parts = [f"Series {self.key.lstrip('s')}: {self.description or '(no description)'}", f"{self.slices} slices",
                 thick]
        if self.kernel:
            parts.append(f"kernel {self.kernel}")
        if not self.axial:
            parts.append("not axial")
        return " · ".join(parts)

    def as_meta(self) -> dict:
        return asdict(self)


def group_series(kept: Sequence[tuple[int, Dataset]]) -> dict[str, list[tuple[int, Dataset]]]:
    """The kept CT images by series (UID and identity), in first-seen order; keys are opaque ("s1", "s2", …)."""
    groups: dict[tuple, list[tuple[int, Dataset]]] = {}
    for i, ds in kept:
        key = (str(ds.get("SeriesInstanceUID", "") or ""),
               tuple(str(ds.get(k, "") or "").strip() for k in _IDENTITY_KEYWORDS))
        groups.setdefault(key, []).append((i, ds))
    return {f"s{n + 1}": members for n, members in enumerate(groups.values())}


def describe(key: str, members: Sequence[tuple[int, Dataset]]) -> SeriesOption:
    ds = members[0][1]
    thickness = _float(ds.get("SliceThickness"))
    kernel = safe_text(_first(ds.get("ConvolutionKernel")), 24)
    description = _technical_description(ds)
    return SeriesOption(
        key=key,
        slices=sum(_number_of_frames(d) for _, d in members),
        modality=safe_text(ds.get("Modality", "") or "", 8),
        description=description,
        thickness_mm=round(thickness, 3) if thickness else None,
        kernel=kernel,
        image_type="\\".join(safe_text(v, 16) for v in (ds.get("ImageType") or [])[:3]),
        axial=_is_axial(ds),
        lung_kernel=bool(kernel and _SHARP_KERNEL.search(kernel)) or "LUNG" in description.upper(),
    )


def pick(options: Sequence[SeriesOption]) -> tuple[SeriesOption, str]:
    """The series a reader would open for the lungs, and why (in words for the page)."""
    def rank(o: SeriesOption) -> tuple:
        thin = o.thickness_mm is not None and o.thickness_mm <= MAX_LUNG_THICKNESS_MM
        return (o.axial, o.lung_kernel, thin, -(o.thickness_mm or 99.0), o.slices)

    best = max(options, key=rank)
    why = ["axial" if best.axial else "no axial series"]
    if best.lung_kernel:
        why.append(f"lung/sharp kernel ({best.kernel or best.description})")
    if best.thickness_mm is not None:
        thinnest = best.thickness_mm <= min((o.thickness_mm or 99.0) for o in options if o.axial == best.axial)
        why.append(f"{best.thickness_mm:g} mm{' (the thinnest)' if thinnest else ''}")
    why.append(f"{best.slices} slices")
    return best, ", ".join(why)


def _first(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return str(value[0]) if len(value) else ""  # type: ignore[index]
    return str(value)


def _technical_description(ds: Dataset) -> str:
    """SeriesDescription, cleaned and cut short, without anything that looks like a date or repeats the patient's
    name or ID (some sites write them there)."""
    text = _DATE_LIKE.sub("", safe_text(ds.get("SeriesDescription", "") or "", 48))
    for keyword in ("PatientName", "PatientID"):
        for token in re.split(r"[\^ ,]+", str(ds.get(keyword, "") or "")):
            if len(token) >= 2:
                text = re.sub(rf"\b{re.escape(token)}\b", "", text, flags=re.I)  # whole words: "Li" is not "Lung"
    return " ".join(text.split())


def _is_axial(ds: Dataset) -> bool:
    iop = _floats(ds.get("ImageOrientationPatient") or [], 6)
    if iop is None:  # enhanced files keep it in functional groups; without it, trust the ImageType
        return "AXIAL" in [str(v).upper() for v in (ds.get("ImageType") or [])] or _number_of_frames(ds) > 1
    normal = np.cross(iop[:3], iop[3:])
    return bool(abs(normal[2]) >= 0.9 * float(np.linalg.norm(normal) or 1.0))
