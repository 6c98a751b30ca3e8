"""Pure numpy rendering of slices with mask overlays (no Streamlit, easy to test)."""

from __future__ import annotations

import numpy as np

from ctmodels.imaging.window import Window, to_uint8

COLORS = {
    "lung": (64, 160, 255),
    "lesion": (255, 140, 0),
    "ggo": (255, 200, 0),
    "consolidation": (255, 60, 60),
    "classical": (80, 220, 120),
}


def slice_rgb(
    values: np.ndarray,
    window: Window | None,
    overlays: list[tuple[np.ndarray, tuple[int, int, int]]] | None = None,
    alpha: float = 0.35,
    outline_only: tuple[bool, ...] | None = None,
) -> np.ndarray:
    """Windowed slice as uint8 RGB with translucent (or outlined) mask overlays.

    ``window=None`` means the values are already 8-bit display intensities.
    """
    gray = to_uint8(values, window)
    rgb = np.repeat(gray[..., None], 3, axis=2).astype(np.float32)
    for k, (mask, color) in enumerate(overlays or []):
        if mask is None or not mask.any():
            continue
        m = mask.astype(bool)
        if outline_only and outline_only[k]:
            m = m & ~erode(m)
            rgb[m] = np.asarray(color, dtype=np.float32)
        else:
            rgb[m] = (1 - alpha) * rgb[m] + alpha * np.asarray(color, dtype=np.float32)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def erode(m: np.ndarray) -> np.ndarray:
    """One-pixel binary erosion (outlines are a mask minus its erosion)."""
    out = m.copy()
    out[1:] &= m[:-1]
    out[:-1] &= m[1:]
    out[:, 1:] &= m[:, :-1]
    out[:, :-1] &= m[:, 1:]
    return out


def fit_for_display(rgb: np.ndarray, target: int = 512) -> np.ndarray:
    """Nearest-neighbour upscale of small images so a 256 px phantom is not a postage stamp."""
    h, w = rgb.shape[:2]
    k = max(1, int(target // max(h, w)))
    return rgb if k == 1 else np.repeat(np.repeat(rgb, k, axis=0), k, axis=1)
