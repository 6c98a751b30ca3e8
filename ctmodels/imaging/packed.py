"""A 3-D boolean mask kept as bits: what a browser session holds of a scan's lung field.

A bool volume spends a byte per voxel: 33 MB for a 133-slice 512² series, held by every session that has
opened one. As bits it is 4 MB. The consumers of a lung field read it a slice at a time (``mask[i]``), by
slice area (``mask.sum(axis=(1, 2))``, kept from packing) or whole (``np.asarray(mask)``), so the packed
form answers those and nothing else: an operation it does not offer fails loudly instead of unpacking
silently.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class PackedMask:
    """A (slices, rows, cols) bool mask stored with ``np.packbits`` along the columns."""

    def __init__(self, mask: np.ndarray) -> None:
        mask = np.asarray(mask, bool)
        if mask.ndim != 3:
            raise ValueError(f"a packed mask is 3-D (slices, rows, cols), got {mask.shape}")
        self.shape: tuple[int, int, int] = tuple(int(s) for s in mask.shape)  # type: ignore[assignment]
        self._bits = np.packbits(mask, axis=-1)
        self._areas = mask.sum(axis=(1, 2))

    ndim = 3
    dtype = np.dtype(bool)

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def nbytes(self) -> int:
        return int(self._bits.nbytes + self._areas.nbytes)

    def __getitem__(self, index: Any) -> np.ndarray:
        """Slices as bool arrays: ``mask[i]`` (rows, cols), ``mask[a:b]`` or ``mask[[i, j]]`` (n, rows, cols)."""
        return np.unpackbits(self._bits[index], axis=-1, count=self.shape[2]).astype(bool)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        whole = self[:]
        return whole if dtype is None else whole.astype(dtype)

    def sum(self, axis: Any = None) -> Any:
        """Voxel count (``axis=None``) or per-slice areas (``axis=(1, 2)``), without unpacking."""
        if axis is None:
            return int(self._areas.sum())
        if axis in ((1, 2), (-2, -1)):
            return self._areas.copy()
        raise NotImplementedError(f"a packed mask sums over everything or per slice, not over axis {axis}")

    def any(self) -> bool:
        return bool(self._areas.any())
