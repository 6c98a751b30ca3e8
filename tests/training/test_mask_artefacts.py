"""Edge artefacts of model-made masks: blobs on the image border outside the lung are found, lesions are not."""

import numpy as np
import pytest

from training.data.mask_artefacts import artefact_free, artefact_shares, edge_artefacts


def _field() -> np.ndarray:
    """Two lungs, the second reaching the image's right border (a tight crop)."""
    yy, xx = np.mgrid[:100, :120]
    left = ((yy - 50) / 35.0) ** 2 + ((xx - 35) / 20.0) ** 2 <= 1
    right = ((yy - 50) / 35.0) ** 2 + ((xx - 100) / 22.0) ** 2 <= 1
    return left | right


def test_edge_blob_outside_the_lung_is_an_artefact_lesions_are_not():
    field = _field()
    mask = np.zeros_like(field)
    mask[45:55, 30:40] = True  # a lesion inside the left lung
    mask[0:6, 55:70] = True  # a blob on the top border, between the lungs' tops: chest wall
    mask[45:60, 112:120] = True  # a lesion of the right lung where it meets the border
    art = edge_artefacts(mask, field)
    assert art[0:6, 55:70].all()
    assert not art[45:55, 30:40].any() and not art[45:60, 112:120].any()
    assert not edge_artefacts(mask, np.zeros_like(field)).any()  # no lung field: nothing can be told
    assert not edge_artefacts(np.zeros_like(field), field).any()


def test_artefact_free_involvement():
    assert artefact_free(20.0, 0.0) == pytest.approx(20.0)
    assert artefact_free(20.0, 1.0) == pytest.approx(0.0)
    # half of a 20 % mask dropped from both the lesion and the lung estimate that holds it: 10 / 90
    assert artefact_free(20.0, 0.5) == pytest.approx(100 * 0.1 / 0.9)


def test_only_model_made_masks_are_checked(real_data):
    from ctmodels.datasets.layouts import open_dataset

    doctor = open_dataset(real_data / "infnet-semiseg").cases[:3]
    wanted = {"Data-1_radiopaedia_org_covid-19-pneumonia-10_85902_3-dcm_142": "blob", "Data-1_coronacases_org_003_20": "lesion"}
    model_made = [c for c in open_dataset(real_data / "covid-ct-seg-slices").cases if c.case_id in wanted]
    assert len(model_made) == 2
    shares = artefact_shares(doctor + model_made)
    assert set(shares) == set(wanted)  # the doctors' masks are left as they are
    for case_id, what in wanted.items():  # a blob on the chest wall / the consolidation of the severe patient
        assert (shares[case_id] > 0.9) if what == "blob" else (shares[case_id] == 0.0)
