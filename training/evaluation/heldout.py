"""A model's own data, for measuring it: its held-out test slices (accuracy, ONNX parity) and a
sample of its training slices (int8 calibration). The bench and the Efficiency page both reach it
here, so both calibrate and score the same way.
"""

from __future__ import annotations

import numpy as np
import torch

from ctmodels.inference import LoadedModel
from ctmodels.preprocess import normalize

from ..config import DataConfig
from ..data.prepare import Prepared, prepare


def held_out(lm: LoadedModel) -> Prepared:
    """The model's own dataset, label rule and split (from its card), preprocessed its way."""
    training = lm.card.training or {}
    d = training.get("data") or {}
    cfg = DataConfig(**{k: v for k, v in d.items() if k in DataConfig.__dataclass_fields__})
    return prepare(cfg, lm.pre, int(training.get("seed", 0)))


def normalised(data: Prepared, idx: np.ndarray, lm: LoadedModel) -> np.ndarray:
    """Slices ``idx`` as the network sees them: (N, 1, S, S) float32, normalised like training."""
    x = torch.from_numpy(data.images[idx]).float().div(255.0)[:, None]
    return normalize(x, lm.pre).numpy().astype(np.float32)


def calibration_slices(lm: LoadedModel, n: int = 64, data: Prepared | None = None) -> np.ndarray:
    """``n`` training slices of the model's own data (seeded, so re-quantising is reproducible)."""
    data = data or held_out(lm)
    train = data.subset(0)
    idx = np.random.default_rng(0).choice(train, size=min(n, len(train)), replace=False)
    return normalised(data, idx, lm)
