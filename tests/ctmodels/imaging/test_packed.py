"""The lung field as bits (what a session keeps): every read a consumer makes equals the bool mask's and it
takes an eighth of the memory (the assessment on it: ``tests/ctmodels/test_inference_explain.py``)."""

from __future__ import annotations

import numpy as np
import pytest

from ctmodels.imaging.packed import PackedMask


def _mask() -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.random((5, 13, 37)) > 0.6  # 37 columns: not a multiple of 8


def test_reads_equal_the_bool_mask():
    mask = _mask()
    packed = PackedMask(mask)
    assert packed.shape == mask.shape and len(packed) == 5
    for i in range(5):
        assert packed[i].dtype == bool and np.array_equal(packed[i], mask[i])
    assert np.array_equal(packed[[4, 1]], mask[[4, 1]]) and np.array_equal(packed[1:3], mask[1:3])
    assert np.array_equal(np.asarray(packed), mask) and np.array_equal(np.asarray(packed, np.uint8), mask.astype(np.uint8))
    assert np.array_equal(packed.sum(axis=(1, 2)), mask.sum(axis=(1, 2))) and packed.sum() == mask.sum()
    assert packed.any() and not PackedMask(np.zeros((2, 4, 4), bool)).any()


def test_an_eighth_of_the_memory_and_loud_on_what_it_does_not_offer():
    mask = np.ones((10, 512, 512), bool)
    assert PackedMask(mask).nbytes < mask.nbytes / 7.9
    with pytest.raises(NotImplementedError):
        PackedMask(mask).sum(axis=0)
    with pytest.raises(ValueError):
        PackedMask(mask[0])

