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
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset as TorchDataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from ctmodels.atomic import atomic_file
from ctmodels.datasets import (
    REAL_SAMPLES,
    Dataset,
    DatasetError,
    LabelRule,
    combine,
    load_masks,
    open_dataset,
)
from ctmodels.datasets.loading import involvement_from_masks
from ctmodels.imaging import ImageReadError, read_any
from ctmodels.imaging.lung_field import lung_field
from ctmodels.preprocess import (
    PREPROCESS_VERSION,
    Preprocessing,
    lung_slices,
    normalize,
    pixel_areas,
    prepare_slice,
    to_network,
)
from ctmodels.workspace import demo_data_dir, real_data_dir, workspace_dir

from ..config import AugmentConfig, DataConfig
from .classical import lung_features

log = logging.getLogger(__name__)
CLASS_NAMES = ["mild", "severe"]
OnPrepared = Callable[[str, int, int], None]  # (stage, done, total) while slices are prepared


class DataError(ValueError):
    """The data cannot support this run (missing, one class, empty split, ...), explained."""


@dataclass(frozen=True)
class NamedSource:
    """A dataset picked by name on the CLI and the Training page."""

    key: str
    title: str
    folders: tuple[str, ...]  # under the real data folder (or the demo folder for 'demo')
    train: bool = True  # False: for evaluation only (never trained on)


NAMED_SOURCES: dict[str, NamedSource] = {s.key: s for s in (
    NamedSource("demo", "Demo phantoms (synthetic, HU, with masks)", ("kaggle",)),
    NamedSource("real", "All real 8-bit slices: Inf-Net COVID-SemiSeg + COVID-19-CT-Seg (14 patients)",
                ("infnet-semiseg", "covid-ct-seg-slices")),
    # each real sample dataset by its own key and title (ctmodels.datasets.REAL_SAMPLES), trainable ones first
    *(NamedSource(r.key, r.title, (r.folder,), r.trainable) for r in sorted(REAL_SAMPLES, key=lambda r: not r.trainable)),
)}


def named_sources(trainable: bool = True) -> list[NamedSource]:
    """The named sources whose data is present on this machine."""
    return [s for s in NAMED_SOURCES.values() if (s.train or not trainable) and all(p.is_dir() for p in _folders(s))]


def _folders(s: NamedSource) -> list[Path]:
    base = demo_data_dir() if s.key == "demo" else real_data_dir()
    return [base / f for f in s.folders]


def resolve_source(source: str) -> Path:
    """The folder of a named source ('real' → the real data folder that holds its parts) or a path."""
    if source in NAMED_SOURCES:
        folders = _folders(NAMED_SOURCES[source])
        return folders[0] if len(folders) == 1 else real_data_dir()
    return Path(source).expanduser().resolve()


@dataclass
class Prepared:
    """All usable slices of a dataset, preprocessed, with labels and a patient-level split."""

    images: np.ndarray  # uint8 (N, S, S), the [0, 1] network input before normalisation, quantised
    labels: np.ndarray  # int64 (N,): 0 mild, 1 severe
    involvement: np.ndarray  # float32 (N,): % of the slice's lung involved (NaN where unknown)
    features: np.ndarray  # float32 (N, F): intensity features of the lung field (classical reference)
    targets: np.ndarray  # float32 (N,): the P(severe) each slice is trained towards (see severe_targets)
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
    hu: bool = True  # the slices held CT values (HU); False: 8-bit intensities
    # The same slices masked with a lung field that includes their lesions (the estimate plus the
    # infection mask, which only training has): what a HU input looks like to a model that masks HU
    # inputs only. None unless the preprocessing asks for it (``lung_mask_input`` without ``mask_8bit``).
    images_masked: np.ndarray | None = None
    # In the network's frame (``ctmodels.preprocess.to_network``), uint8 shares × 255: the infection mask
    # (what a lesion head learns; zeros where ``has_lesion`` is False) and the lung field the app would
    # use; float16 slice pixels per network pixel (``pixel_areas``), so involvement is measured in slice area.
    lesions: np.ndarray | None = None
    has_lesion: np.ndarray | None = None  # bool (N,)
    fields: np.ndarray | None = None
    areas: np.ndarray | None = None

    def subset(self, part: int) -> np.ndarray:
        return np.nonzero(self.split == part)[0]

    def provenance(self, source: str) -> dict:
        """What a model trained on this data learned from (written into its card)."""
        labelled = self.labels >= 0
        return {"source": source, "title": self.dataset_name, "synthetic": self.synthetic,
                "values": "HU" if self.hu else "8-bit intensities (pre-windowed)",
                "slices": int(labelled.sum()), "patients": int(len(set(self.patients[labelled].tolist()))),
                "label_sources": self.label_sources}

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
        "root": str(ds.root), "layout": ds.layout, "files": _files_signature(ds),
        "pre": {k: v for k, v in pre.to_dict().items() if k != "flip_average"},  # scoring only, not the arrays
        "rule": [cfg.threshold_pct, cfg.excluded_band, cfg.label_level, cfg.lung_slices_only,
                 cfg.max_slices_per_case], "v": 4, "pre_version": PREPROCESS_VERSION,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _slice_truth(case, vol, rule: LabelRule, cfg: DataConfig) -> tuple[list[int], np.ndarray]:
    """Per-slice integer labels (-1: none) following the config's label level, and per-slice involvement %."""
    n = vol.n_slices
    case_label = CLASS_NAMES.index(case.label) if case.label in CLASS_NAMES else -1
    inv = np.full(n, np.nan, np.float32)
    if n == 1 and case.involvement_pct is not None:
        inv[0] = case.involvement_pct
    if n > 1 and case.slice_involvement is not None and len(case.slice_involvement) == n:
        inv = np.array([np.nan if v is None else v for v in case.slice_involvement], np.float32)
    elif n > 1 and case.lung_mask is not None and case.lesion_mask is not None:
        got = involvement_from_masks(load_masks(case, vol))
        if got is not None:
            inv = got[1].astype(np.float32)
    if cfg.label_level == "slice" and n > 1:
        if case.slice_labels is not None and len(case.slice_labels) == n:
            return [CLASS_NAMES.index(v) if v in CLASS_NAMES else -1 for v in case.slice_labels], inv
        if not np.isnan(inv).all():
            return [CLASS_NAMES.index(lab) if (lab := rule.label(None if np.isnan(v) else float(v))) else -1
                    for v in inv], inv
    return [case_label] * n, inv


def _prepare_arrays(ds: Dataset, pre: Preprocessing, cfg: DataConfig, progress: OnPrepared | None) -> dict:
    rule = ds.rule
    images, labels, invs, feats, patients, cases, slices, areas, case_labels = [], [], [], [], [], [], [], [], {}
    hu, images_masked, lesions, has_lesion, fields, pix = [], [], [], [], [], []
    both_looks = pre.lung_mask_input and not pre.mask_8bit
    for k, case in enumerate(ds.cases):
        if progress:
            progress("preparing slices", k, len(ds.cases))
        try:
            vol = read_any(case.image)
        except ImageReadError as exc:
            log.warning("skipping case %s: %s", case.case_id, exc)
            continue
        lung = lung_field(vol)  # HU segmentation, or the 8-bit estimate: the field the app uses too
        area = lung.sum(axis=(1, 2)).astype(float)
        chosen = list(range(vol.n_slices))
        if cfg.lung_slices_only and area.max() > 0:
            chosen = lung_slices(lung, pre.min_lung_share)
        if cfg.max_slices_per_case and len(chosen) > cfg.max_slices_per_case:
            pick = np.linspace(0, len(chosen) - 1, cfg.max_slices_per_case).round().astype(int)
            chosen = [chosen[i] for i in pick]
        lab, inv = _slice_truth(case, vol, rule, cfg)
        hu.append(vol.is_hu)
        case_labels[case.case_id] = CLASS_NAMES.index(case.label) if case.label in CLASS_NAMES else -1
        lesion = _lesions(case, vol)
        for i in chosen:
            img, tiles = prepare_slice(vol.slice(i), vol.is_hu, pre, lung[i])
            images.append(np.rint(img * 255).astype(np.uint8))
            has_lesion.append(lesion is not None)
            lesions.append(_to_uint8(to_network(lesion[i], tiles, pre.size) if lesion is not None else None, pre.size))
            fields.append(_to_uint8(to_network(lung[i], tiles, pre.size), pre.size))
            pix.append(pixel_areas(tiles, pre.size, lung[i].shape).astype(np.float16))
            if both_looks:
                field = lung[i] if lesion is None or vol.is_hu else lung[i] | lesion[i]
                masked, _ = prepare_slice(vol.slice(i), vol.is_hu, pre, field, mask=True)
                images_masked.append(np.rint(masked * 255).astype(np.uint8))
            labels.append(lab[i])
            invs.append(inv[i])
            feats.append(lung_features(vol.slice(i), vol.is_hu, lung[i]))
            patients.append(case.patient_id)
            cases.append(case.case_id)
            slices.append(i)
            areas.append(area[i] if area[i] > 0 else float(vol.shape[1] * vol.shape[2]))
    if progress:
        progress("preparing slices", len(ds.cases), len(ds.cases))
    if not images:
        raise DataError(f"no readable slices in {ds.name}")
    return {
        "images": np.stack(images), "labels": np.array(labels, dtype=np.int64),
        "involvement": np.array(invs, dtype=np.float32), "features": np.stack(feats).astype(np.float32),
        "patients": np.array(patients), "cases": np.array(cases), "slice_index": np.array(slices),
        "lung_area": np.array(areas), "case_ids": np.array(list(case_labels)),
        "case_label_values": np.array(list(case_labels.values())), "hu": np.array(all(hu)),
        "lesions": np.stack(lesions), "has_lesion": np.array(has_lesion, bool), "fields": np.stack(fields),
        "areas": np.stack(pix),
        **({"images_masked": np.stack(images_masked)} if both_looks else {}),
    }


def _to_uint8(share: np.ndarray | None, size: int) -> np.ndarray:
    return np.zeros((size, size), np.uint8) if share is None else np.rint(share * 255).astype(np.uint8)


def _lesions(case, vol) -> np.ndarray | None:
    """The case's infection mask (bool, like the volume), when it has one of the right shape."""
    if case.lesion_mask is None:
        return None
    try:
        les = load_masks(case, vol).lesion
    except ImageReadError:
        return None
    return None if les is None else les > 0


def _cache_path(fp: str) -> Path:
    return workspace_dir() / "cache" / "prepared" / f"{fp}.npz"


def _load_or_prepare(ds: Dataset, pre: Preprocessing, cfg: DataConfig, progress: OnPrepared | None) -> tuple[dict, str]:
    fp = fingerprint(ds, pre, cfg)
    path = _cache_path(fp)
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}, fp
        except (OSError, ValueError):
            log.warning("prepared-data cache %s unreadable; rebuilding", path)
    arrays = _prepare_arrays(ds, pre, cfg, progress)
    with atomic_file(path) as tmp, open(tmp, "wb") as fh:  # a file handle: np.savez would add ".npz" to a name
        np.savez(fh, **arrays)
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


def cv_test_patients(patient_label: dict[str, int], folds: int, fold: int, seed: int) -> set[str]:
    """The patients of fold ``fold`` in a patient-grouped, label-stratified ``folds``-fold partition."""
    from sklearn.model_selection import StratifiedKFold

    ids = sorted(patient_label)
    y = np.array([patient_label[p] for p in ids])
    n_splits = min(folds, len(ids))
    if n_splits < 2:
        raise DataError(f"{len(ids)} labelled patient(s) cannot be cross-validated")
    # Stratify only when every class can reach every fold; otherwise plain shuffled folds.
    strat = y if np.bincount(y, minlength=2).min() >= n_splits else np.zeros_like(y)
    parts = list(StratifiedKFold(n_splits, shuffle=True, random_state=seed).split(ids, strat))
    if fold >= len(parts):
        raise DataError(f"fold {fold} does not exist: only {len(parts)} folds for {len(ids)} patients")
    return {ids[i] for i in parts[fold][1]}


#: The sources of the real 8-bit slices, by patient id (leave-one-source-out splits): COVID-19-CT-Seg holds
#: coronacases.org and radiopaedia.org series; the Inf-Net COVID-SemiSeg slices come from MedSeg's collection.
SOURCES = {"coronacases": "coronacases.org (COVID-19-CT-Seg)", "radiopaedia": "radiopaedia.org (COVID-19-CT-Seg)",
           "medseg": "MedSeg (Inf-Net COVID-SemiSeg, doctor's masks)"}


def source_of(patient: str) -> str:
    """Which source a patient's images come from (``SOURCES``), or 'other'."""
    p = str(patient).lower()
    if p.startswith("coronacases"):
        return "coronacases"
    if p.startswith("radiopaedia"):
        return "radiopaedia"
    return "medseg" if p.startswith("slice-") else "other"


def source_patients(patient_label: dict[str, int], source: str) -> set[str]:
    """The patients of one source: the test split of a leave-one-source-out run."""
    if source not in SOURCES:
        raise DataError(f"unknown source {source!r}; choose from {', '.join(SOURCES)}")
    out = {p for p in patient_label if source_of(p) == source}
    if not out or len(out) == len(patient_label):
        raise DataError(f"leaving out {source} leaves nothing to {'test' if not out else 'train'} on")
    return out


def load_dataset(cfg: DataConfig) -> Dataset:
    root = resolve_source(cfg.source)
    named = NAMED_SOURCES.get(cfg.source)
    folders = _folders(named) if named else [root]
    missing = [f for f in folders if not f.is_dir()]
    if missing:
        hint = (" Build the demo phantoms with `make demo-data`." if cfg.source == "demo" else
                " The real sample data lives in ../shared/data/real (see README, 'Real CT')." if named else "")
        raise DataError(f"dataset {cfg.source!r} not found at {missing[0]}.{hint}")
    band = tuple(cfg.excluded_band) if cfg.excluded_band else None
    rule = LabelRule(cfg.threshold_pct, band)
    try:
        if len(folders) > 1:
            ds = combine(named.title, root, [open_dataset(f, rule) for f in folders])
        else:
            ds = open_dataset(folders[0], rule)
    except DatasetError as exc:
        raise DataError(str(exc)) from exc
    if cfg.max_cases and len(ds.cases) > cfg.max_cases:
        pick = np.unique(np.linspace(0, len(ds.cases) - 1, cfg.max_cases).round().astype(int))
        ds.cases = [ds.cases[i] for i in pick]
    return ds


def severe_targets(labels: np.ndarray, involvement: np.ndarray, cfg: DataConfig) -> np.ndarray:
    """The P(severe) each slice is trained towards.

    'label': the hard label. 'involvement': the slice's involvement as odds against the threshold's,
    P = r(1-t) / (r(1-t) + t(1-r)) (r the involved share, clipped to 0.2–99.8 %; t the threshold), i.e.
    logit P = logit r - logit t. A slice at the threshold gets 0.5; at 5 % 0.14, at 1 % 0.03, at 60 %
    0.82: a slice at 5 % and one at 24 % are both mild, but not equally far from severe, and learning
    that transfers across patients far better than the label alone (with one severe patient in 14,
    most folds hold no severe slice like the ones trained on). The log-odds scale also keeps small
    involvements apart (COVID-CT-MD's infected slices mostly hold a few per cent). Slices without a
    known involvement keep their hard label.
    """
    t = labels.astype(np.float32).clip(0, 1)
    if cfg.target == "involvement":
        known = ~np.isnan(involvement)
        r = np.clip(involvement[known] / 100.0, 0.002, 0.998)
        cut = cfg.threshold_pct / 100.0
        t[known] = 1.0 / (1.0 + np.exp(-(np.log(r / (1 - r)) - np.log(cut / (1 - cut)))))
    return t


def _patient_labels(arrays: dict, labelled: np.ndarray, case_label: dict[str, int]) -> dict[str, int]:
    """One label per patient for stratified splits: its case label (volumes) or its worst slice (2-D slices)."""
    counts: dict[str, int] = {}
    for c in arrays["cases"]:
        counts[str(c)] = counts.get(str(c), 0) + 1
    out: dict[str, int] = {}
    for p, c, lab in zip(arrays["patients"][labelled], arrays["cases"][labelled], arrays["labels"][labelled]):
        p, v = str(p), case_label.get(c, -1)
        if counts[str(c)] == 1 and v == lab:  # a single 2-D slice: the patient is as severe as its worst slice
            out[p] = max(out.get(p, 0), int(lab))
        else:
            out.setdefault(p, int(v if v >= 0 else lab))
    return out


def prepare(cfg: DataConfig, pre: Preprocessing, seed: int, progress: OnPrepared | None = None) -> Prepared:
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
    patient_label = _patient_labels(arrays, labelled, case_label)
    if cfg.cv_folds or cfg.holdout_source:
        test = (source_patients(patient_label, cfg.holdout_source) if cfg.holdout_source
                else cv_test_patients(patient_label, cfg.cv_folds, cfg.cv_fold, cfg.cv_seed))
        rest = {p: v for p, v in patient_label.items() if p not in test}
        kept = cfg.split[0] + cfg.split[1]
        parts = split_patients(rest, [cfg.split[0] / kept, cfg.split[1] / kept, 0.0], seed)
        parts.update({p: 2 for p in test})
    else:
        parts = split_patients(patient_label, cfg.split, seed)
    split = np.array([parts.get(str(p), -1) for p in arrays["patients"]], dtype=np.int8)
    split[~labelled] = -1
    for part, name in enumerate(("train", "val", "test")):
        wanted = cfg.split[part] > 0 or (part == 2 and (cfg.cv_folds or cfg.holdout_source))
        if wanted and not (split == part).any():
            raise DataError(
                f"the {name} split is empty: {len(patient_label)} labelled patients cannot be split "
                f"{cfg.split}; use more data or change the split"
            )
    return Prepared(
        images=arrays["images"], labels=arrays["labels"], involvement=arrays["involvement"],
        features=arrays["features"], targets=severe_targets(arrays["labels"], arrays["involvement"], cfg),
        patients=arrays["patients"], cases=arrays["cases"],
        slice_index=arrays["slice_index"], lung_area=arrays["lung_area"], split=split, case_labels=case_label,
        fingerprint=fp, dataset_name=ds.name, synthetic=ds.synthetic,
        label_sources=sorted({c.label_source for c in ds.cases}), hu=bool(arrays["hu"]),
        images_masked=arrays.get("images_masked"), lesions=arrays["lesions"], has_lesion=arrays["has_lesion"],
        fields=arrays["fields"], areas=arrays["areas"],
    )


class SliceDataset(TorchDataset):
    """Prepared slices as (normalised tensor, label, target P(severe), lesion share map (1, S, S), has a lesion
    mask); augmentation with transforms v2 moves the image and its lesion map together."""

    def __init__(self, data: Prepared, indices: np.ndarray, pre: Preprocessing, augment: AugmentConfig | None):
        self.images = data.images
        self.labels = data.labels
        self.targets = data.targets
        self.lesions, self.has_lesion = data.lesions, data.has_lesion
        self.indices = np.asarray(indices)
        self.pre = pre
        self.augment = augment if augment and augment.enabled else None
        self.transform = _augmentation(augment) if self.augment else None
        # training only: show a slice masked (the look HU inputs have) with this probability
        self.masked = data.images_masked if self.transform is not None and augment.mask_prob > 0 else None
        self.mask_prob = augment.mask_prob if self.masked is not None else 0.0

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, float, torch.Tensor, bool]:
        j = self.indices[i]
        source = self.masked if self.masked is not None and torch.rand(()) < self.mask_prob else self.images
        x = torch.from_numpy(source[j]).float().div_(255.0)[None]
        known = self.lesions is not None and bool(self.has_lesion[j])
        lesion = torch.from_numpy(self.lesions[j]).float().div_(255.0)[None] if known else torch.zeros_like(x)
        if self.transform is not None:
            x, lesion = self.transform(tv_tensors.Image(x), tv_tensors.Mask(lesion))
            x = _source_look(x.as_subclass(torch.Tensor), self.augment).clamp_(0, 1)
            lesion = lesion.as_subclass(torch.Tensor)
        return normalize(x, self.pre), int(self.labels[j]), float(self.targets[j]), lesion, known


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


def _uniform(lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand(()))


def _source_look(x: torch.Tensor, a: AugmentConfig) -> torch.Tensor:
    """What differs between sources besides window and level (``brightness``/``contrast``): the grey-level
    curve (gamma), resolution (down- and up-sampled), sharpness (blur) and noise. Each is off at 0 and
    draws no random numbers then, so recipes without them train exactly as before."""
    if a.gamma:
        x = x.clamp(0, 1) ** math.exp(_uniform(-math.log1p(a.gamma), math.log1p(a.gamma)))
    if a.lowres and float(torch.rand(())) < a.lowres:
        h, w = x.shape[-2:]
        f = _uniform(1.3, 2.5)
        small = F.interpolate(x[None], size=(max(8, int(h / f)), max(8, int(w / f))), mode="area")
        x = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)[0]
    if a.blur and float(torch.rand(())) < a.blur:
        x = v2.functional.gaussian_blur(x, kernel_size=5, sigma=_uniform(0.3, 1.2))
    if a.noise:
        x = x + torch.randn_like(x) * _uniform(0.0, a.noise)
    return x


def class_weights(labels: np.ndarray) -> np.ndarray:
    """Per-sample weights for class-balanced sampling."""
    counts = np.bincount(labels, minlength=2).astype(float)
    counts[counts == 0] = 1.0
    return (1.0 / counts)[labels]


INVOLVEMENT_BINS = (5.0, 10.0, 15.0, 20.0, 25.0, 35.0)


def sample_weights(data: Prepared, indices: np.ndarray, target: str, source_balance: float = 0.0) -> np.ndarray:
    """Weights for balanced sampling: by class for label targets; for involvement targets, by involvement
    band with 1/√count, so the few heavily involved slices are seen more often without being repeated
    a dozen times per epoch (a label-balanced sampler would, with 5 % severe slices). ``source_balance``
    > 0 also divides by the slice's source size to that power (``SOURCES``; 'other' is one source)."""
    inv = data.involvement[indices]
    if target != "involvement" or np.isnan(inv).all():
        w = class_weights(data.labels[indices])
    else:
        bins = np.digitize(np.nan_to_num(inv, nan=-1.0), INVOLVEMENT_BINS)
        counts = np.bincount(bins, minlength=len(INVOLVEMENT_BINS) + 1).astype(float)
        w = 1.0 / np.sqrt(np.maximum(counts[bins], 1.0))
    if source_balance:
        src = np.array([source_of(p) for p in data.patients[indices]])
        _, inverse, n = np.unique(src, return_inverse=True, return_counts=True)
        w = w / n[inverse].astype(float) ** source_balance
    return w
