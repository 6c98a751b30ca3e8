"""Pulmonary vessel trees: 3-D branching segments rasterised into the lung slices.

Vessels matter for realism and for the classical cross-check: they are the thin bright
structures inside the lung that a naive "fraction of lung above -700 HU" counts as disease.
"""

from __future__ import annotations

import numpy as np

from .anatomy import HU_BLOOD


def _branch_samples(
    start: np.ndarray, end: np.ndarray, r0: float, r1: float, step_mm: float
) -> np.ndarray:
    """Points (x, y, z, r) every ``step_mm`` along a segment, radius tapering r0 → r1."""
    length = float(np.linalg.norm(end - start))
    n = max(2, int(length / step_mm) + 1)
    f = np.linspace(0.0, 1.0, n)[:, None]
    pts = start[None, :] * (1 - f) + end[None, :] * f
    radii = r0 * (1 - f[:, 0]) + r1 * f[:, 0]
    return np.column_stack([pts, radii])


def vessel_tree_samples(
    rng: np.random.Generator,
    lung_label: np.ndarray,
    grid_mm: tuple[np.ndarray, np.ndarray],
    slice_mm: float,
    hila: dict[int, tuple[float, float, float]],
    primaries: int = 12,
    secondaries: int = 3,
) -> np.ndarray:
    """Sample points of both lungs' vessel trees as rows (x_mm, y_mm, z_mm, radius_mm).

    Branch targets are random lung voxels, so the tree always spreads through the lung it feeds.
    """
    xs, ys = grid_mm
    out = []
    for label, (hx, hy, hz) in hila.items():
        idx = np.argwhere(lung_label == label)
        if len(idx) < 50:
            continue
        hilum = np.array([hx, hy, hz])
        chosen = idx[rng.choice(len(idx), size=min(primaries, len(idx)), replace=False)]
        for s, r, c in chosen:
            target = np.array([xs[r, c], ys[r, c], (s + 0.5) * slice_mm])
            out.append(_branch_samples(hilum, target, 3.2, 1.6, 1.5))
            fork = hilum + 0.55 * (target - hilum)
            near = idx[rng.choice(len(idx), size=min(40, len(idx)), replace=False)]
            pts = np.column_stack([xs[near[:, 1], near[:, 2]], ys[near[:, 1], near[:, 2]], (near[:, 0] + 0.5) * slice_mm])
            order = np.argsort(np.linalg.norm(pts - fork, axis=1))
            for j in order[:secondaries]:
                out.append(_branch_samples(fork, pts[j], 1.9, 0.8, 1.5))
    return np.concatenate(out) if out else np.zeros((0, 4))


def draw_vessels(
    hu: np.ndarray,
    room: np.ndarray,
    samples: np.ndarray,
    pixel_mm: float,
    slice_mm: float,
    origin_mm: tuple[float, float],
) -> None:
    """Rasterise vessel samples (discs) into the volume ``hu`` (S, H, W) where ``room`` is True."""
    if len(samples) == 0:
        return
    n_s, h, w = hu.shape
    s_idx = np.floor(samples[:, 2] / slice_mm).astype(int)
    col = (samples[:, 0] - origin_mm[0]) / pixel_mm
    row = (samples[:, 1] - origin_mm[1]) / pixel_mm
    rad = samples[:, 3] / pixel_mm
    keep = (s_idx >= 0) & (s_idx < n_s)
    s_idx, col, row, rad = s_idx[keep], col[keep], row[keep], rad[keep]
    reach = int(np.ceil(rad.max())) + 1 if len(rad) else 0
    off = np.arange(-reach, reach + 1)
    dr, dc = np.meshgrid(off, off, indexing="ij")
    dr, dc = dr.ravel(), dc.ravel()
    rr = np.rint(row)[:, None].astype(int) + dr[None, :]
    cc = np.rint(col)[:, None].astype(int) + dc[None, :]
    inside = (rr - row[:, None]) ** 2 + (cc - col[:, None]) ** 2 <= rad[:, None] ** 2
    inside &= (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
    ss = np.broadcast_to(s_idx[:, None], rr.shape)
    ss, rr, cc = ss[inside], rr[inside], cc[inside]
    ok = room[ss, rr, cc]
    hu[ss[ok], rr[ok], cc[ok]] = HU_BLOOD
