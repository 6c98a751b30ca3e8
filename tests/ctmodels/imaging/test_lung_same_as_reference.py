"""The fast lung segmentation (OpenCV, cropped, threaded) gives the masks and involvement of the
scipy.ndimage version it replaced (``tests/reference/lung_scipy.py``): the contract is Dice ≥ 0.995 and
involvement within 0.2 percentage points; today they are equal voxel for voxel."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from ctmodels.imaging import read_any
from ctmodels.imaging.lung import dice, involvement, segment_lungs
from ctmodels.imaging.phantom import generate_patient
from tests.reference import lung_scipy as reference

COVID_CT_MD = "covid-ct-md/Sample data"


def _assert_same(vol) -> None:
    ours, theirs = segment_lungs(vol), reference.segment_lungs(vol)
    assert dice(ours, theirs) >= 0.995
    got, (pct, _, lesion) = involvement(vol, ours), reference.involvement(vol, theirs)
    assert abs(got.percent - pct) <= 0.2
    k = int(np.nanargmax(got.per_slice))
    assert dice(got.lesion_slice(k), lesion[k]) >= 0.995


@pytest.mark.parametrize("target,seed", [(0.0, 4), (15.0, 5), (55.0, 6)])
def test_phantoms(target, seed):
    _assert_same(generate_patient("PH", target, seed).to_volume())


def test_phantom_without_spacing_and_an_empty_volume():
    vol = generate_patient("PH", 20.0, 7).to_volume()
    _assert_same(replace(vol, spacing=None))
    air = replace(vol, array=np.full(vol.shape, -1000.0, np.float32))
    assert not segment_lungs(air).any() and not reference.segment_lungs(air).any()


@pytest.mark.parametrize("subject", ["COVID-19 subjects/P002",
                                     pytest.param("Normal subjects/normal001", marks=pytest.mark.slow)])
def test_real_series(real_data, subject):
    _assert_same(read_any(real_data / COVID_CT_MD / subject))
