"""Display windows for CT: map Hounsfield units to [0, 1] for viewing and for the networks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Window:
    """A CT display window: ``level`` (centre) and ``width`` in HU."""

    name: str
    level: float
    width: float

    @property
    def low(self) -> float:
        return self.level - self.width / 2.0

    @property
    def high(self) -> float:
        return self.level + self.width / 2.0

    def label(self) -> str:
        return f"{self.name} (W{self.width:g} / L{self.level:g})"


LUNG = Window("Lung", level=-600.0, width=1500.0)
MEDIASTINUM = Window("Mediastinum", level=40.0, width=350.0)
BONE = Window("Bone", level=500.0, width=2000.0)

PRESETS: dict[str, Window] = {w.name: w for w in (LUNG, MEDIASTINUM, BONE)}
DEFAULT_WINDOW = LUNG


def custom(level: float, width: float) -> Window:
    """A user-chosen window; width is clamped to at least 1 HU so the mapping stays defined."""
    return Window("Custom", level=float(level), width=max(float(width), 1.0))


def apply_window(values: np.ndarray, window: Window) -> np.ndarray:
    """HU → float32 in [0, 1]; values outside the window saturate."""
    out = (np.asarray(values, dtype=np.float32) - np.float32(window.low)) / np.float32(window.width)
    return np.clip(out, 0.0, 1.0, out=out)


def to_uint8(values: np.ndarray, window: Window | None) -> np.ndarray:
    """Display image as uint8. ``window=None`` for 8-bit intensity images (not HU): scaled as stored."""
    if window is None:
        arr = np.asarray(values, dtype=np.float32)
        return np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    return np.rint(apply_window(values, window) * 255.0).astype(np.uint8)
