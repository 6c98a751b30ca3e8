"""The classical reference a learned model must beat: linear models on intensity features of the lung field.

Features (21 per slice), on the slice after the lung window and the intensity landmarks of
``ctmodels.preprocess`` (so 8-bit slices with different windows and HU slices are comparable):
a 16-bin histogram of the lung field, its mean and standard deviation, the share of the image
that is lung field, and the shares of the field that are dense (> +100 HU equivalent) and in the
ground-glass/consolidation band (-700…+100 HU equivalent). Two models, fitted on the training part
of each fold: a logistic regression on the mild/severe label, and a ridge regression on the
involvement whose prediction is the score (predicting *how much* lung is involved transfers across
patients better than the label; ../shared/data/real/README.md).
"""

from __future__ import annotations

import numpy as np

from ctmodels.preprocess import LANDMARK_LUNG, Preprocessing, normalise_landmarks, to_unit

N_FEATURES = 21
_WINDOW = Preprocessing()  # the lung window W1500/L-600
DENSE = (100.0 + 1350.0) / 1500.0  # +100 HU in the lung window
BAND_LOW = (-700.0 + 1350.0) / 1500.0  # -700 HU


def lung_features(values: np.ndarray, is_hu: bool, field: np.ndarray | None) -> np.ndarray:
    """The 21 features of one slice (zeros but the lung share when no lung field was found)."""
    img = normalise_landmarks(to_unit(values, is_hu, _WINDOW), field)
    if field is None or field.sum() < 16:
        out = np.zeros(N_FEATURES, np.float32)
        out[16] = LANDMARK_LUNG
        return out
    v = img[field]
    hist = np.histogram(v, bins=16, range=(0.0, 1.0))[0] / v.size
    return np.r_[hist, v.mean(), v.std(), field.mean(), (v > DENSE).mean(),
                 ((v >= BAND_LOW) & (v <= DENSE)).mean()].astype(np.float32)


def reference_scores(features: np.ndarray, labels: np.ndarray, involvement: np.ndarray,
                     train: np.ndarray, test: np.ndarray) -> dict[str, np.ndarray]:
    """Scores of the test slices from both classical models fitted on the training slices."""
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    out: dict[str, np.ndarray] = {}
    ytr = labels[train]
    if len(set(ytr.tolist())) == 2:
        logistic = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(features[train], ytr)
        out["logistic (label)"] = logistic.decision_function(features[test])
    known = train[~np.isnan(involvement[train])]
    if len(known) >= 4:
        ridge = make_pipeline(StandardScaler(), Ridge(alpha=1.0)).fit(features[known], involvement[known])
        out["ridge (involvement)"] = ridge.predict(features[test])
    return out
