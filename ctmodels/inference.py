"""Inference from a checkpoint card: the card's preprocessing, calibrated probabilities, and a
patient-level verdict for volumes.

Patient-level verdict: the lung-area-weighted mean of calibrated P(severe) over the slices the model
scores (lung section ≥ its card's ``min_lung_share`` of the largest: 5 % by default, 30 % for the
real-CT set, which learned from mid-chest slices only), severe when ≥ 0.5; the same aggregation
``training.evaluate`` reports, so the app's verdict is the one the model was evaluated with.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .checkpoint import ModelCard, checkpoint_id, load
from .imaging import Volume
from .preprocess import Preprocessing, lung_slices, network_logits, normalize, prepare_slice


@dataclass
class LoadedModel:
    """A model ready for inference with everything its card says about inputs and outputs."""

    name: str
    folder: Path
    model: torch.nn.Module
    card: ModelCard
    pre: Preprocessing
    ckpt_id: str
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)  # CAM hooks are per model

    @property
    def key(self) -> str:
        return self.card.model_key

    @property
    def severe_index(self) -> int:
        return list(self.card.class_names).index("severe")


def load_model(folder: str | Path, name: str | None = None) -> LoadedModel:
    folder = Path(folder)
    model, card = load(folder)
    # Inference only: frozen weights mean a CAM's backward pass computes activation gradients, not
    # weight gradients it would throw away (about half the work).
    model.eval().requires_grad_(False)
    return LoadedModel(name or folder.name, folder, model, card, Preprocessing.from_card(card), checkpoint_id(folder))


@dataclass
class PreparedInput:
    """Network input for some slices of a volume, and where each came from (for CAM overlays)."""

    tensor: torch.Tensor  # (n, 1, S, S), normalised
    unit: np.ndarray  # (n, S, S) in [0, 1], what the network saw before normalisation
    boxes: list  # per slice: the tiles it was cut from (see preprocess.lung_tiles), or None
    slices: list[int]


def prepare_input(lm: LoadedModel, vol: Volume, slices: list[int], lung_mask: np.ndarray | None) -> PreparedInput:
    units, boxes = [], []
    for i in slices:
        img, box = prepare_slice(vol.slice(i), vol.is_hu, lm.pre, None if lung_mask is None else lung_mask[i])
        units.append(img)
        boxes.append(box)
    unit = np.stack(units)
    t = normalize(torch.from_numpy(unit)[:, None], lm.pre)
    return PreparedInput(t, unit, boxes, list(slices))


def calibrated(lm: LoadedModel, logits: torch.Tensor) -> np.ndarray:
    """P(severe) from raw logits, temperature-scaled as the card says."""
    scaled = logits.detach().float() / float(lm.card.temperature or 1.0)
    return torch.softmax(scaled, dim=1)[:, lm.severe_index].numpy()


@torch.no_grad()
def probabilities(lm: LoadedModel, x: torch.Tensor, batch: int = 64) -> np.ndarray:
    """Calibrated P(severe) for a prepared batch (temperature scaling from the card)."""
    out = [calibrated(lm, network_logits(lm.model, x[k : k + batch], lm.pre)) for k in range(0, len(x), batch)]
    return np.concatenate(out) if out else np.zeros(0)


@dataclass
class VolumePrediction:
    """Per-slice evidence and the patient-level verdict of one model on one scan."""

    model: str
    slices: list[int]
    p_severe: np.ndarray  # per evaluated slice
    patient_p: float
    verdict: str
    seconds: float
    aggregation: str = field(
        default="lung-area-weighted mean of calibrated P(severe) over lung slices; severe if ≥ 0.5"
    )

    def curve(self, n_slices: int) -> list[float | None]:
        out: list[float | None] = [None] * n_slices
        for i, p in zip(self.slices, self.p_severe):
            out[i] = float(p)
        return out


def in_scope(lm: LoadedModel, lung_mask: np.ndarray | None, index: int) -> bool:
    """Whether slice ``index`` is one this model learned to read (see ``Preprocessing.min_lung_share``)."""
    return lung_mask is None or index in lung_slices(lung_mask, lm.pre.min_lung_share)


def patient_score(p_severe: np.ndarray, lung_area: np.ndarray | None) -> float:
    """The patient-level P(severe): slices weighted by their lung area (module docstring); plain mean without."""
    p = np.asarray(p_severe, dtype=float)
    w = None if lung_area is None else np.asarray(lung_area, dtype=float)
    return float(np.average(p, weights=w)) if w is not None and w.sum() > 0 else float(p.mean())


def predict_volume(lm: LoadedModel, vol: Volume, lung_mask: np.ndarray | None) -> VolumePrediction:
    """Every slice in the model's scope scored; the patient verdict aggregates them (module docstring)."""
    t0 = time.perf_counter()
    slices = lung_slices(lung_mask, lm.pre.min_lung_share) or list(range(vol.n_slices))
    p = probabilities(lm, prepare_input(lm, vol, slices, lung_mask).tensor)
    patient = patient_score(p, None if lung_mask is None else lung_mask[slices].sum(axis=(1, 2)))
    return VolumePrediction(lm.name, slices, p, patient, "severe" if patient >= 0.5 else "mild",
                            time.perf_counter() - t0)
