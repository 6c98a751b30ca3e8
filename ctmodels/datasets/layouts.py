"""Readers for every dataset layout: detect the layout of a folder and list its cases.

Layouts: phantom sub-layouts (``dicom``, ``kaggle``, ``mosmed``, ``png`` under a folder with our
``manifest.json``), Kaggle covid19-ct-scans, MosMedData, DICOM series + labels CSV,
folder-per-class images, Inf-Net COVID-SemiSeg, COVID-CT-MD, and a plain folder of scans.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

from ..verdict import DEFAULT_THRESHOLD_PCT
from .model import Case, Dataset, DatasetError, LabelRule

IMAGE_EXT = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"}
NIFTI_SUFFIXES = (".nii", ".nii.gz")
CLASS_DIRS = {"mild": "mild", "severe": "severe"}
_SLICE_NAME = re.compile(r"^(?P<patient>.+?)_s(?P<slice>\d+)$")


def _is_nifti(p: Path) -> bool:
    return p.name.lower().endswith(NIFTI_SUFFIXES)


def _stem(p: Path) -> str:
    name = p.name
    for suf in (".nii.gz", ".nii"):
        if name.lower().endswith(suf):
            return name[: -len(suf)]
    return p.stem


def _natural_key(s: str) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", s)]


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        return list(csv.DictReader(fh))


def _phantom_manifest(folder: Path) -> dict | None:
    for cand in (folder / "manifest.json", folder.parent / "manifest.json"):
        if cand.is_file():
            try:
                data = json.loads(cand.read_text())
            except (OSError, ValueError):
                return None
            if data.get("generator") == "ctmodels.imaging.phantom":
                return data
    return None


def _phantom_patients(manifest: dict | None) -> dict[str, dict]:
    return {p["patient_id"]: p for p in manifest["patients"]} if manifest else {}


def _slice_fields(info: dict | None, rule: LabelRule) -> dict:
    """Per-slice involvement and labels of a phantom patient (ground truth from its masks)."""
    if not info:
        return {}
    inv = tuple(info["slice_involvement"])
    return {
        "slice_involvement": inv,
        "slice_labels": tuple(rule.label(v) for v in inv),
        "lung_slices": tuple(info["lung_slices"]),
        "n_slices": info["n_slices"],
    }


# ---------------------------------------------------------------- Kaggle covid19-ct-scans
def _kaggle(root: Path, rule: LabelRule) -> Dataset:
    manifest = _phantom_manifest(root)
    info = _phantom_patients(manifest)
    meta = root / "metadata.csv"
    rows = _read_csv(meta) if meta.is_file() else []
    if not rows:
        rows = [{"ct_scan": str(p)} for p in sorted((root / "ct_scans").iterdir()) if _is_nifti(p)]
    cases = []
    for row in rows:
        ct = root / "ct_scans" / Path(row["ct_scan"]).name
        if not ct.is_file():
            continue
        lung = root / "lung_mask" / Path(row.get("lung_mask") or "").name if row.get("lung_mask") else None
        inf = root / "infection_mask" / Path(row.get("infection_mask") or "").name if row.get("infection_mask") else None
        lung = lung if lung and lung.is_file() else None
        inf = inf if inf and inf.is_file() else None
        pid = _stem(ct).replace("_org_", "_").replace("phantom_", "")
        p = info.get(pid)
        inv = p["involvement_pct"] if p else None
        source = "phantom ground truth (from masks)" if p else ("derived from masks" if lung and inf else "none")
        cases.append(
            Case(
                case_id=pid,
                patient_id=pid,
                image=ct,
                label=rule.label(inv),
                label_source=source,
                involvement_pct=inv,
                lung_mask=lung,
                lesion_mask=inf,
                **_slice_fields(p, rule),
            )
        )
    notes = []
    if not info and any(c.lung_mask and c.lesion_mask for c in cases):
        notes.append("Labels are derived from the lung and infection masks when a case is opened.")
    return Dataset(
        name="Kaggle covid19-ct-scans layout", root=root, layout="kaggle", cases=cases,
        synthetic=manifest is not None, rule=rule, notes=notes,
    )


# ---------------------------------------------------------------- MosMedData
_GRADE = re.compile(r"^CT-(\d)$", re.IGNORECASE)


def _mosmed(root: Path, rule: LabelRule) -> Dataset:
    manifest = _phantom_manifest(root)
    by_study = {p.get("mosmed_study"): p for p in manifest["patients"]} if manifest else {}
    studies = root / "studies" if (root / "studies").is_dir() else root
    masks = root / "masks"
    cases = []
    for grade_dir in sorted(d for d in studies.iterdir() if d.is_dir() and _GRADE.match(d.name)):
        grade = int(_GRADE.match(grade_dir.name).group(1))
        for f in sorted((p for p in grade_dir.iterdir() if _is_nifti(p)), key=lambda p: _natural_key(p.name)):
            study = _stem(f)
            mask = next((m for m in (masks / f"{study}_mask.nii.gz", masks / f"{study}_mask.nii") if m.is_file()), None)
            p = by_study.get(study)
            if p:
                inv, label, source = p["involvement_pct"], rule.label(p["involvement_pct"]), "phantom ground truth (from masks)"
            else:
                inv = None
                label = "severe" if grade >= 2 else "mild"
                source = f"MosMed grade {grade_dir.name.upper()}"
            cases.append(
                Case(
                    case_id=study, patient_id=p["patient_id"] if p else study, image=f, label=label,
                    label_source=source, involvement_pct=inv, lesion_mask=mask,
                    extra={"grade": grade_dir.name.upper()}, **_slice_fields(p, rule),
                )
            )
    notes = []
    if not manifest and rule.threshold_pct != DEFAULT_THRESHOLD_PCT:
        notes.append("MosMed grades bin involvement at 25/50/75 %; labels use the 25 % grade boundary.")
    return Dataset(
        name="MosMedData layout", root=root, layout="mosmed", cases=cases,
        synthetic=manifest is not None, rule=rule, notes=notes,
    )


# ---------------------------------------------------------------- DICOM series + labels CSV
def _dicom_labels(root: Path, rule: LabelRule) -> Dataset:
    manifest = _phantom_manifest(root)
    info = _phantom_patients(manifest)
    cases = []
    for row in _read_csv(root / "labels.csv"):
        pid = row.get("patient_id") or row.get("patient") or ""
        folder = root / (row.get("series_folder") or row.get("folder") or pid)
        if not folder.is_dir():
            continue
        inv_txt = row.get("involvement_pct") or ""
        inv = float(inv_txt) if inv_txt.strip() else None
        label = (row.get("label") or "").strip().lower() or None
        if inv is not None and label is None:
            label = rule.label(inv)
        p = info.get(pid)
        if p:
            label, inv = rule.label(p["involvement_pct"]), p["involvement_pct"]
        cases.append(
            Case(
                case_id=pid, patient_id=pid, image=folder, label=label if label in ("mild", "severe") else None,
                label_source="phantom ground truth" if p else "labels CSV", involvement_pct=inv,
                **_slice_fields(p, rule),
            )
        )
    return Dataset(
        name="DICOM series with labels CSV", root=root, layout="dicom", cases=cases,
        synthetic=manifest is not None, rule=rule,
    )


# ---------------------------------------------------------------- folder per class
def _folder_per_class(root: Path, rule: LabelRule) -> Dataset:
    manifest = _phantom_manifest(root)
    info = _phantom_patients(manifest)
    cases = []
    for d in sorted(p for p in root.iterdir() if p.is_dir() and p.name.lower() in CLASS_DIRS):
        label = CLASS_DIRS[d.name.lower()]
        for f in sorted((p for p in d.iterdir() if p.suffix.lower() in IMAGE_EXT), key=lambda p: _natural_key(p.name)):
            m = _SLICE_NAME.match(f.stem)
            pid = m.group("patient") if m else f.stem
            extra = {"slice": int(m.group("slice"))} if m else {}
            inv = None
            if m and pid in info:
                inv = info[pid]["slice_involvement"][int(m.group("slice"))]
            cases.append(
                Case(
                    case_id=f"{d.name}/{f.stem}", patient_id=pid, image=f, label=label,
                    label_source="folder name", involvement_pct=inv, n_slices=1, extra=extra,
                )
            )
    notes = ["8-bit images hold display intensities, not Hounsfield units: HU-only features are off."]
    return Dataset(
        name="Folder per class (images)", root=root, layout="png", cases=cases,
        synthetic=manifest is not None, rule=rule, notes=notes, slice_level=True,
    )


# ---------------------------------------------------------------- Inf-Net-style 2-D slices (real)
def _infnet(root: Path, rule: LabelRule) -> Dataset:
    """Inf-Net ``Imgs/`` + ``GT/`` folders: the doctor-labelled COVID-SemiSeg slices, or the COVID-19-CT-Seg
    slices with model-made masks, whose ``derived_severity.csv`` names each slice's patient and series."""
    rows = _read_csv(root / "derived_severity.csv") if (root / "derived_severity.csv").is_file() else []
    derived = {Path(r["file"]).name: r for r in rows}
    with_patients = bool(rows) and all((r.get("patient") or "").strip() for r in rows)
    pseudo = any("pseudo" in (r.get("label_basis") or "").lower() for r in rows)
    source = ("derived from a model-made infection mask (heuristic lung estimate)" if pseudo
              else "derived from masks (heuristic lung estimate)")
    cases = []
    for f in sorted((p for p in (root / "Imgs").iterdir() if p.suffix.lower() in IMAGE_EXT), key=lambda p: _natural_key(p.name)):
        gt = root / "GT" / f"{f.stem}.png"
        r = derived.get(f.name)
        inv = float(r["infection_lung_ratio_est"]) * 100.0 if r and r.get("infection_lung_ratio_est") else None
        extra: dict = {"width": int(r["width"]), "height": int(r["height"])} if r else {}
        if r and with_patients:
            extra.update({"series": r.get("series") or r["patient"], "slice": int(r["slice"]) if r.get("slice") else None})
        cases.append(
            Case(
                case_id=f.stem, patient_id=r["patient"] if r and with_patients else f"slice-{f.stem}", image=f,
                label=rule.label(inv), label_source=source if inv is not None else "none",
                involvement_pct=inv, lesion_mask=gt if gt.is_file() else None, lesion_mask_model_made=pseudo,
                n_slices=1, extra=extra,
            )
        )
    if with_patients:
        n_patients = len({c.patient_id for c in cases})
        name = "COVID-19-CT-Seg slices (real)"
        notes = [
            f"Real data (COVID-19-CT-Seg via Inf-Net), {n_patients} patients: 8-bit JPEG slices already windowed "
            "and rotated 90°, not HU.",
            "Infection masks were made by a model (Semi-Inf-Net), not a doctor; labels are DERIVED from them and "
            "an estimated lung area, not a radiologist's grade.",
            "Patient IDs are known: splits are by patient.",
        ]
    else:
        name = "Inf-Net COVID-SemiSeg slices (real)"
        notes = [
            "Real data (Inf-Net / MedSeg), 8-bit JPEG slices already windowed and rotated 90°: not HU.",
            "Labels are DERIVED from the infection mask and an estimated lung area, not a radiologist's grade.",
            "No patient IDs: several slices may come from one patient, so each slice is its own group in splits.",
        ]
    return Dataset(name=name, root=root, layout="infnet", cases=cases, rule=rule, notes=notes, slice_level=True)


# ---------------------------------------------------------------- COVID-CT-MD (real)
def _covid_ct_md(root: Path, rule: LabelRule) -> Dataset:
    rows = _read_csv(root / "slice_labels.csv")
    by_subject: dict[str, list[dict]] = {}
    for r in rows:
        by_subject.setdefault(r["subject"], []).append(r)
    cases = []
    for subject, rs in by_subject.items():
        rs.sort(key=lambda r: int(r["slice_index"]))
        folder = (root / rs[0]["file"]).parent
        if not folder.is_dir():
            continue
        infection = tuple(int(r["infection"]) if r["infection"].strip() else None for r in rs)
        labelled = [v for v in infection if v is not None]
        extra = {"diagnosis": rs[0]["diagnosis"]}
        if labelled:
            extra["infected slices"] = f"{sum(labelled)}/{len(labelled)}"
        cases.append(
            Case(
                case_id=subject, patient_id=subject, image=folder, label=None,
                label_source=f"no severity grade (diagnosis: {rs[0]['diagnosis']})", n_slices=len(rs),
                slice_infection=infection if labelled else None, extra=extra,
            )
        )
    notes = [
        "Real data (COVID-CT-MD sample), JPEG-Lossless DICOM in HU.",
        "Radiologists marked which slices show infection; there is no mild/severe grade.",
    ]
    return Dataset(name="COVID-CT-MD sample series (real)", root=root, layout="covid-ct-md", cases=cases, rule=rule, notes=notes)


# ---------------------------------------------------------------- plain folder of scans
def _plain(root: Path, rule: LabelRule) -> Dataset:
    cases = []
    for p in sorted(root.iterdir(), key=lambda p: _natural_key(p.name)):
        if p.name.startswith("."):
            continue
        if p.is_dir() and any(c.suffix.lower() in {".dcm", ".dicom", ""} and c.is_file() for c in p.iterdir()):
            cases.append(Case(case_id=p.name, patient_id=p.name, image=p))
        elif p.is_file() and (_is_nifti(p) or p.suffix.lower() in IMAGE_EXT | {".dcm", ".zip"}):
            cases.append(Case(case_id=_stem(p), patient_id=_stem(p), image=p))
    if not cases:
        raise DatasetError(
            f"No scans found in {root.name}: expected DICOM series folders, NIfTI files, images, "
            "or one of the dataset layouts (Kaggle metadata.csv, MosMed CT-0…CT-4, labels.csv, mild/severe folders)."
        )
    return Dataset(name=f"Folder {root.name}", root=root, layout="folder", cases=cases, rule=rule,
                   notes=["No labels found: scans are listed unlabelled."])


def detect_layout(root: Path) -> str:
    """Name of the layout of ``root`` (see module docstring), or 'folder'."""
    if (root / "slice_labels.csv").is_file() and (root / "Index.csv").is_file():
        return "covid-ct-md"
    if (root / "Imgs").is_dir() and (root / "GT").is_dir():
        return "infnet"
    if (root / "ct_scans").is_dir():
        return "kaggle"
    studies = root / "studies" if (root / "studies").is_dir() else root
    if any(d.is_dir() and _GRADE.match(d.name) for d in studies.iterdir()):
        return "mosmed"
    if (root / "labels.csv").is_file():
        return "dicom"
    if any(d.is_dir() and d.name.lower() in CLASS_DIRS for d in root.iterdir()):
        return "png"
    return "folder"


_READERS = {
    "covid-ct-md": _covid_ct_md,
    "infnet": _infnet,
    "kaggle": _kaggle,
    "mosmed": _mosmed,
    "dicom": _dicom_labels,
    "png": _folder_per_class,
    "folder": _plain,
}


def open_dataset(root: Path | str, rule: LabelRule = LabelRule(), name: str | None = None) -> Dataset:
    """Read the dataset in ``root`` whatever its layout; ``DatasetError`` with a readable message if none."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root} is not a folder.")
    try:
        ds = _READERS[detect_layout(root)](root, rule)
    except (OSError, KeyError, ValueError) as exc:
        if isinstance(exc, DatasetError):
            raise
        raise DatasetError(f"Could not read the dataset in {root.name}: {exc}") from exc
    if name:
        ds.name = name
    if not ds.cases:
        raise DatasetError(f"The {ds.name} in {root.name} lists no readable cases.")
    return ds


def phantom_layouts(root: Path) -> dict[str, Path]:
    """Sub-layout folders of a phantom dataset root (empty when ``root`` is not one)."""
    if _phantom_manifest(root) is None or not (root / "manifest.json").is_file():
        return {}
    return {name: root / name for name in ("kaggle", "dicom", "mosmed", "png") if (root / name).is_dir()}
