"""From a dataset folder to labelled, preprocessed slices with a patient-level split.

Every scan goes through ``ctmodels.preprocess.prepare_slice`` (the path inference uses too), with
the lung-ROI box taken from the classical lung segmentation, exactly as the app will do on an
uploaded scan. Prepared arrays are cached in the workspace keyed by a fingerprint of the files,
the preprocessing and the label rule, so several models trained on one dataset prepare it once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset as TorchDataset
from torchvision.transforms import v2

from ctmodels.datasets import Dataset, DatasetError, LabelRule, load_masks, open_dataset
from ctmodels.datasets.loading import involvement_from_masks
from ctmodels.imaging import ImageReadError, read_any
from ctmodels.imaging.lung import segment_lungs
from ctmodels.preprocess import PREPROCESS_VERSION, Preprocessing, normalize, prepare_slice
from ctmodels.workspace import demo_data_dir, real_data_dir, workspace_dir

from .config import AugmentConfig, DataConfig

log = logging.getLogger(__name__)
CLASS_NAMES = ["mild", "severe"]
LUNG_SLICE_FRACTION = 0.05
Progress = Callable[[str, int, int], None]


class DataError(ValueError):
    """The data cannot support this run (missing, one class, empty split, ...), explained."""


def resolve_source(source: str) -> Path:
    """'demo' → the demo phantoms (Kaggle layout, with masks); 'real-infnet' → the Inf-Net slices."""
    if source == "demo":
        return demo_data_dir() / "kaggle"
    if source == "real-infnet":
        return real_data_dir() / "infnet-semiseg"
    if source == "real-covid-ct-md":
        return real_data_dir() / "covid-ct-md"
    return Path(source).expanduser().resolve()


@dataclass
class Prepared:
    """All usable slices of a dataset, preprocessed, with labels and a patient-level split."""

    images: np.ndarray  # uint8 (N, S, S), the [0, 1] network input before normalisation, quantised
    labels: np.ndarray  # int64 (N,): 0 mild, 1 severe
    patients: np.ndarray  # str (N,)
    cases: np.ndarray  # str (N,)
    slice_index: np.ndarray  # int (N,)
    lung_area: np.ndarray  # float (N,): lung pixels in the slice (patient-level weighting)
    split: np.ndarray  # int8 (N,): 0 train, 1 val, 2 test
    case_labels: dict[str, int]  # patient-level label of each case
    fingerprint: str
    dataset_name: str
    synthetic: bool
    label_sources: list[str]

    def subset(self, part: int) -> np.ndarray:
        return np.nonzero(self.split == part)[0]

    def summary(self) -> dict:
        out = {"dataset": self.dataset_name, "synthetic": self.synthetic, "fingerprint": self.fingerprint,
               "label_sources": self.label_sources}
        for part, name in enumerate(("train", "val", "test")):
            idx = self.subset(part)
            out[name] = {
                "slices": int(len(idx)),
                "patients": int(len(set(self.patients[idx]))),
                "severe_slices": int(self.labels[idx].sum()),
            }
        return out


def _files_signature(ds: Dataset) -> list:
    sig = []
    for c in ds.cases:
        for p in (c.image, c.lung_mask, c.lesion_mask):
            if p is None:
                continue
            try:
                st = os.stat(p)
                sig.append([str(p), st.st_size, int(st.st_mtime)])
            except OSError:
                sig.append([str(p), 0, 0])
    return sig


def fingerprint(ds: Dataset, pre: Preprocessing, cfg: DataConfig) -> str:
    payload = {
        "root": str(ds.root), "layout": ds.layout, "files": _files_signature(ds), "pre": pre.to_dict(),
        "rule": [cfg.threshold_pct, cfg.excluded_band, cfg.label_level, cfg.lung_slices_only,
                 cfg.max_slices_per_case], "v": 2, "pre_version": PREPROCESS_VERSION,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _slice_labels(case, vol, rule: LabelRule, cfg: DataConfig) -> list[int]:
    """Per-slice integer labels (-1: none) following the config's label level."""
    n = vol.n_slices
    case_label = CLASS_NAMES.index(case.label) if case.label in CLASS_NAMES else -1
    if cfg.label_level == "slice" and n > 1:
        if case.slice_labels is not None and len(case.slice_labels) == n:
            return [CLASS_NAMES.index(v) if v in CLASS_NAMES else -1 for v in case.slice_labels]
        if case.lung_mask is not None and case.lesion_mask is not None:
            got = involvement_from_masks(load_masks(case, vol))
            if got is not None:
                return [CLASS_NAMES.index(lab) if (lab := rule.label(None if np.isnan(v) else float(v))) else -1
                        for v in got[1]]
    return [case_label] * n


def _prepare_arrays(ds: Dataset, pre: Preprocessing, cfg: DataConfig, progress: Progress | None) -> dict:
    rule = ds.rule
    images, labels, patients, cases, slices, areas, case_labels = [], [], [], [], [], [], {}
    for k, case in enumerate(ds.cases):
        if progress:
            progress("preparing slices", k, len(ds.cases))
        try:
            vol = read_any(case.image)
        except ImageReadError as exc:
            log.warning("skipping case %s: %s", case.case_id, exc)
            continue
        lung = segment_lungs(vol) if vol.is_hu else None
        area = lung.sum(axis=(1, 2)).astype(float) if lung is not None else np.full(vol.n_slices, float(vol.shape[1] * vol.shape[2]))
        chosen = list(range(vol.n_slices))
        if cfg.lung_slices_only and lung is not None and area.max() > 0:
            chosen = [i for i in chosen if area[i] >= LUNG_SLICE_FRACTION * area.max()]
        if cfg.max_slices_per_case and len(chosen) > cfg.max_slices_per_case:
            pick = np.linspace(0, len(chosen) - 1, cfg.max_slices_per_case).round().astype(int)
            chosen = [chosen[i] for i in pick]
        lab = _slice_labels(case, vol, rule, cfg)
        case_labels[case.case_id] = CLASS_NAMES.index(case.label) if case.label in CLASS_NAMES else -1
        for i in chosen:
            img, _ = prepare_slice(vol.array[i], vol.is_hu, pre, None if lung is None else lung[i])
            images.append(np.rint(img * 255).astype(np.uint8))
            labels.append(lab[i])
            patients.append(case.patient_id)
            cases.append(case.case_id)
            slices.append(i)
            areas.append(area[i])
    if progress:
        progress("preparing slices", len(ds.cases), len(ds.cases))
    if not images:
        raise DataError(f"no readable slices in {ds.name}")
    return {
        "images": np.stack(images), "labels": np.array(labels, dtype=np.int64), "patients": np.array(patients),
        "cases": np.array(cases), "slice_index": np.array(slices), "lung_area": np.array(areas),
        "case_ids": np.array(list(case_labels)), "case_label_values": np.array(list(case_labels.values())),
    }


def _cache_path(fp: str) -> Path:
    return workspace_dir() / "cache" / "prepared" / f"{fp}.npz"


def _load_or_prepare(ds: Dataset, pre: Preprocessing, cfg: DataConfig, progress: Progress | None) -> tuple[dict, str]:
    fp = fingerprint(ds, pre, cfg)
    path = _cache_path(fp)
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}, fp
        except (OSError, ValueError):
            log.warning("prepared-data cache %s unreadable; rebuilding", path)
    arrays = _prepare_arrays(ds, pre, cfg, progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
    os.close(fd)
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return arrays, fp


def split_patients(patient_label: dict[str, int], fractions: list[float], seed: int) -> dict[str, int]:
    """Stratified patient-level split: every patient's slices land in exactly one part."""
    rng = np.random.default_rng(seed)
    out: dict[str, int] = {}
    for lab in sorted(set(patient_label.values())):
        group = sorted(p for p, v in patient_label.items() if v == lab)
        rng.shuffle(group)
        n = len(group)
        n_val = int(round(fractions[1] * n))
        n_test = int(round(fractions[2] * n))
        if n - n_val - n_test < 1:
            n_test = max(0, n - n_val - 1)
        for i, p in enumerate(group):
            out[p] = 2 if i < n_test else (1 if i < n_test + n_val else 0)
    return out


def load_dataset(cfg: DataConfig) -> Dataset:
    root = resolve_source(cfg.source)
    if not root.is_dir():
        hint = " Build the demo phantoms with `make demo-data`." if cfg.source == "demo" else ""
        raise DataError(f"dataset {cfg.source!r} not found at {root}.{hint}")
    band = tuple(cfg.excluded_band) if cfg.excluded_band else None
    try:
        return open_dataset(root, LabelRule(cfg.threshold_pct, band))
    except DatasetError as exc:
        raise DataError(str(exc)) from exc


def prepare(cfg: DataConfig, pre: Preprocessing, seed: int, progress: Progress | None = None) -> Prepared:
    """Load, preprocess (cached), label and split a dataset; refuse data that cannot train a model."""
    ds = load_dataset(cfg)
    arrays, fp = _load_or_prepare(ds, pre, cfg, progress)
    labelled = arrays["labels"] >= 0
    if not labelled.any():
        raise DataError(f"{ds.name} has no labelled slices (labels: {', '.join(sorted({c.label_source for c in ds.cases}))})")
    present = set(arrays["labels"][labelled].tolist())
    if present != {0, 1}:
        only = CLASS_NAMES[present.pop()]
        raise DataError(f"{ds.name} has only one class ({only}) among its labelled slices; need mild and severe")
    case_label = dict(zip(arrays["case_ids"].tolist(), arrays["case_label_values"].tolist()))
    patient_label: dict[str, int] = {}
    for p, c, lab in zip(arrays["patients"][labelled], arrays["cases"][labelled], arrays["labels"][labelled]):
        v = case_label.get(c, -1)
        patient_label.setdefault(str(p), int(v if v >= 0 else lab))
    parts = split_patients(patient_label, cfg.split, seed)
    split = np.array([parts.get(str(p), -1) for p in arrays["patients"]], dtype=np.int8)
    split[~labelled] = -1
    for part, name in enumerate(("train", "val", "test")):
        if cfg.split[part] > 0 and not (split == part).any():
            raise DataError(
                f"the {name} split is empty: {len(patient_label)} labelled patients cannot be split "
                f"{cfg.split}; use more data or change the split"
            )
    return Prepared(
        images=arrays["images"], labels=arrays["labels"], patients=arrays["patients"], cases=arrays["cases"],
        slice_index=arrays["slice_index"], lung_area=arrays["lung_area"], split=split, case_labels=case_label,
        fingerprint=fp, dataset_name=ds.name, synthetic=ds.synthetic,
        label_sources=sorted({c.label_source for c in ds.cases}),
    )


class SliceDataset(TorchDataset):
    """Prepared slices as normalised tensors; augmentation (train split only) with transforms v2."""

    def __init__(self, data: Prepared, indices: np.ndarray, pre: Preprocessing, augment: AugmentConfig | None):
        self.images = data.images
        self.labels = data.labels
        self.indices = np.asarray(indices)
        self.pre = pre
        self.transform = _augmentation(augment) if augment and augment.enabled else None

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        j = self.indices[i]
        x = torch.from_numpy(self.images[j]).float().div_(255.0)[None]
        if self.transform is not None:
            x = self.transform(x).clamp_(0, 1)
        return normalize(x, self.pre), int(self.labels[j])


def _augmentation(a: AugmentConfig) -> v2.Compose:
    ops: list = [
        v2.RandomAffine(degrees=a.rotation_deg, translate=(a.translate, a.translate), scale=(1 - a.zoom, 1 + a.zoom)),
    ]
    if a.hflip:
        ops.append(v2.RandomHorizontalFlip())
    if a.vflip:
        ops.append(v2.RandomVerticalFlip())
    if a.brightness or a.contrast:
        ops.append(v2.ColorJitter(brightness=a.brightness, contrast=a.contrast))
    return v2.Compose(ops)


def class_weights(labels: np.ndarray) -> np.ndarray:
    """Per-sample weights for class-balanced sampling."""
    counts = np.bincount(labels, minlength=2).astype(float)
    counts[counts == 0] = 1.0
    return (1.0 / counts)[labels]
